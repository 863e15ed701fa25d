// Chat templates, tokenization with loss masks, JSONL errors and SFT batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "strata/tokenizer.h"
#include "test_util.h"
#include "train/sft_data.h"

namespace strata {
namespace {

using test::error_of;

// A small BPE tokenizer (vocab 300: bos 1, eos 2) trained once per test binary.
const Tokenizer& tok() {
  static std::unique_ptr<Tokenizer> t = [] {
    const std::string dir = test::make_temp_dir("sfttok");
    std::string corpus;
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "see", "big", "red"};
    uint64_t x = 1;
    for (int i = 0; i < 2000; ++i) {
      for (int w = 0; w < 8; ++w) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        corpus += std::string(w ? " " : "") + words[(x >> 33) % 13];
      }
      corpus += ".\n";
    }
    test::write_file(dir + "/corpus.txt", corpus);
    TokenizerTrainOptions o;
    o.inputs = {dir + "/corpus.txt"};
    o.vocab_size = 300;
    o.threads = 2;
    train_tokenizer(o, dir + "/tok.model");
    return Tokenizer::load(dir + "/tok.model");
  }();
  return *t;
}

std::vector<int32_t> enc(const std::string& s) { return tok().encode(s, false); }

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> v;
  for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
  return v;
}

// The ids whose mask is 1.
std::vector<int32_t> trained(const SftExample& ex) {
  std::vector<int32_t> v;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.mask[i]) v.push_back(ex.ids[i]);
  return v;
}

const std::vector<ChatMessage> kSysUserAsst = {
    {"system", "the big cat"}, {"user", "see the dog"}, {"assistant", "a red mat"}};

TEST(ChatTemplate, ZephyrGoldenStrings) {
  // Spec §1.5, re-rendered with jinja2 from the alignment-handbook template.
  EXPECT_EQ(render_chat(ChatFormat::kZephyr, {{"system", "S"}, {"user", "U"}}, true),
            "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\n");
  EXPECT_EQ(render_chat(ChatFormat::kZephyr, {{"user", "U"}, {"assistant", "A"}}, false),
            "<|user|>\nU</s>\n<|assistant|>\nA</s>\n");
  EXPECT_EQ(render_chat(ChatFormat::kZephyr, {{"user", "Name the capital of France."}}, true),
            "<|user|>\nName the capital of France.</s>\n<|assistant|>\n");
  EXPECT_EQ(render_chat(ChatFormat::kZephyr, kSysUserAsst, false),
            "<|system|>\nthe big cat</s>\n<|user|>\nsee the dog</s>\n<|assistant|>\na red mat</s>\n");
}

TEST(ChatTemplate, ZephyrTokensAndMask) {
  const Tokenizer& t = tok();
  const SftExample ex = tokenize_chat(t, ChatFormat::kZephyr, kSysUserAsst);
  ASSERT_EQ(ex.ids.size(), ex.mask.size());
  // "</s>" is the EOS id, text between EOS tokens is encoded as one string.
  const auto head = enc("\n<|assistant|>\n"), run = enc("\n<|assistant|>\na red mat");
  ASSERT_TRUE(std::equal(head.begin(), head.end(), run.begin()));  // "\n" is a byte token: the cut is exact
  const std::vector<int32_t> expect = concat({{t.bos_id()}, enc("<|system|>\nthe big cat"), {t.eos_id()},
                                              enc("\n<|user|>\nsee the dog"), {t.eos_id()}, run, {t.eos_id()},
                                              enc("\n")});
  EXPECT_EQ(ex.ids, expect);
  // Only the assistant's tokens and its EOS are trained.
  const std::vector<int32_t> answer(run.begin() + head.size(), run.end());
  EXPECT_EQ(trained(ex), concat({answer, {t.eos_id()}}));
  EXPECT_EQ(t.decode(answer), "a red mat");
  EXPECT_EQ(ex.mask[0], 0);
  EXPECT_EQ(ex.mask.back(), 0);  // the newline after the assistant's EOS
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), t.eos_id()), 3);
  EXPECT_TRUE(ex.trainable());
}

TEST(ChatTemplate, ChatML) {
  EXPECT_EQ(render_chat(ChatFormat::kChatML, kSysUserAsst, false),
            "<|im_start|>system\nthe big cat<|im_end|>\n<|im_start|>user\nsee the dog<|im_end|>\n"
            "<|im_start|>assistant\na red mat<|im_end|>\n");
  EXPECT_EQ(render_chat(ChatFormat::kChatML, {{"user", "U"}}, true),
            "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  const Tokenizer& t = tok();
  const SftExample ex = tokenize_chat(t, ChatFormat::kChatML, kSysUserAsst);
  EXPECT_EQ(ex.ids[0], t.bos_id());
  const std::string rendered = render_chat(ChatFormat::kChatML, kSysUserAsst, false);
  EXPECT_EQ(std::vector<int32_t>(ex.ids.begin() + 1, ex.ids.end()), enc(rendered));
  EXPECT_EQ(t.decode(trained(ex)), "a red mat<|im_end|>");
}

TEST(ChatTemplate, Llama2) {
  const std::vector<ChatMessage> two = {{"system", "S"}, {"user", "U"},  {"assistant", " A "},
                                        {"user", "U2"},  {"assistant", "A2"}};
  EXPECT_EQ(render_chat(ChatFormat::kLlama2, two, false),
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U2 [/INST] A2 </s>");
  EXPECT_EQ(render_chat(ChatFormat::kLlama2, {{"user", "U"}}, true), "<s>[INST] U [/INST]");
  const Tokenizer& t = tok();
  const std::vector<ChatMessage> conv = {{"user", "see the dog"}, {"assistant", "a red mat"},
                                         {"user", "the cat"},     {"assistant", "ran"}};
  const SftExample ex = tokenize_chat(t, ChatFormat::kLlama2, conv);
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), t.bos_id()), 2);
  EXPECT_EQ(ex.ids[0], t.bos_id());
  // Each exchange is BOS + encode("[INST] u [/INST] a ") + EOS, the mask starting at " a ".
  const auto x1 = enc("[INST] see the dog [/INST] a red mat "), x2 = enc("[INST] the cat [/INST] ran ");
  EXPECT_EQ(ex.ids, concat({{t.bos_id()}, x1, {t.eos_id()}, {t.bos_id()}, x2, {t.eos_id()}}));
  std::vector<int32_t> ones = trained(ex);
  ASSERT_EQ(std::count(ones.begin(), ones.end(), t.eos_id()), 2);
  EXPECT_EQ(ones.back(), t.eos_id());
  const auto split = std::find(ones.begin(), ones.end(), t.eos_id());
  // The trained span is " a red mat " (decode drops the leading space, keeps the trailing one).
  EXPECT_EQ(t.decode(std::vector<int32_t>(ones.begin(), split)), "a red mat ");
  EXPECT_EQ(t.decode(std::vector<int32_t>(split + 1, ones.end() - 1)), "ran ");
  // Meta's format needs alternating user/assistant turns after an optional system message.
  auto order_error = [](std::vector<ChatMessage> m) {
    return error_of([&] { render_chat(ChatFormat::kLlama2, m, false); });
  };
  EXPECT_NE(order_error({{"assistant", "A"}}).find("messages[0]"), std::string::npos);
  EXPECT_NE(order_error({{"user", "U"}, {"user", "V"}}).find("messages[1]"), std::string::npos);
  EXPECT_NE(order_error({{"user", "U"}, {"assistant", "A"}, {"system", "S"}}).find("messages[2]"), std::string::npos);
}

TEST(ChatTemplate, NamesAndRoles) {
  EXPECT_EQ(parse_chat_format("zephyr"), ChatFormat::kZephyr);
  EXPECT_EQ(parse_chat_format("chatml"), ChatFormat::kChatML);
  EXPECT_EQ(parse_chat_format("llama-2"), ChatFormat::kLlama2);
  EXPECT_NE(error_of([] { parse_chat_format("vicuna"); }).find("vicuna"), std::string::npos);
  EXPECT_NE(error_of([] { render_chat(ChatFormat::kZephyr, {{"bot", "x"}}, false); }).find("bot"), std::string::npos);
  EXPECT_NE(error_of([] { render_chat(ChatFormat::kZephyr, {}, false); }), "<no error>");
}

TEST(Sft, JsonlErrorsNameFileAndLine) {
  const std::string dir = test::make_temp_dir("sftjsonl");
  const std::string good =
      R"({"messages":[{"role":"user","content":"the cat"},{"role":"assistant","content":"a dog"}]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"messages\": [", "invalid JSON"},
      {"[1, 2]", "object"},
      {R"({"text": "x"})", "\"messages\" or \"prompt\""},
      {R"({"messages": []})", "empty"},
      {R"({"messages": {"role": "user"}})", "array"},
      {R"({"messages": [{"role": "user"}]})", "\"content\""},
      {R"({"messages": [{"content": "x"}]})", "\"role\""},
      {R"({"messages": [{"role": "user", "content": 5}]})", "string"},
      {R"({"messages": ["hi"]})", "object"},
      {R"({"messages": [{"role": "bot", "content": "x"}]})", "unknown role 'bot'"},
      {R"({"prompt": "x"})", "\"completion\""},
      {R"({"prompt": "x", "completion": null})", "string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string file = dir + "/case" + std::to_string(i) + ".jsonl";
    test::write_file(file, good + "\n\n" + cases[i].first + "\n" + good + "\n");  // the bad record is on line 3
    const std::string e = error_of([&] { load_sft_jsonl({file}, tok(), ChatFormat::kZephyr, 0); });
    EXPECT_NE(e.find(file + ":3:"), std::string::npos) << cases[i].first << " -> " << e;
    EXPECT_NE(e.find(cases[i].second), std::string::npos) << cases[i].first << " -> " << e;
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 0) << e;
  }
  EXPECT_NE(error_of([&] { load_sft_jsonl({dir + "/none.jsonl"}, tok(), ChatFormat::kZephyr, 0); }).find("none.jsonl"),
            std::string::npos);
  // A template-level error (llama-2 order) is located too.
  const std::string f = dir + "/order.jsonl";
  test::write_file(f, R"({"messages":[{"role":"assistant","content":"a"}]})" "\n");
  EXPECT_NE(error_of([&] { load_sft_jsonl({f}, tok(), ChatFormat::kLlama2, 0); }).find(f + ":1:"), std::string::npos);
}

TEST(Sft, PromptCompletionIsUserPlusAssistant) {
  const std::string dir = test::make_temp_dir("sftpc");
  test::write_file(dir + "/a.jsonl", R"({"prompt":"the cat","completion":"a dog"})" "\n"
                                     R"({"messages":[{"role":"user","content":"the cat"},)"
                                     R"({"role":"assistant","content":"a dog"}]})" "\n");
  SftLoadReport rep;
  const auto ex = load_sft_jsonl({dir + "/a.jsonl"}, tok(), ChatFormat::kZephyr, 0, &rep);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].ids, ex[1].ids);
  EXPECT_EQ(ex[0].mask, ex[1].mask);
  EXPECT_EQ(ex[1].source, dir + "/a.jsonl:2");
  EXPECT_EQ(rep.samples, 2);
  EXPECT_EQ(rep.tokens, static_cast<int64_t>(2 * ex[0].ids.size()));
}

TEST(Sft, AllZeroMaskSampleIsReportedAndSkipped) {
  const std::string dir = test::make_temp_dir("sftzero");
  const std::string f = dir + "/z.jsonl";
  test::write_file(f, R"({"prompt":"the cat","completion":"a dog"})" "\n"
                      R"({"messages":[{"role":"user","content":"the cat"}]})" "\n"
                      R"({"prompt":"see","completion":"red"})" "\n"
                      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]})" "\n");
  SftLoadReport rep;
  testing::internal::CaptureStderr();
  const auto ex = load_sft_jsonl({f}, tok(), ChatFormat::kZephyr, 0, &rep);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[1].source, f + ":3");
  EXPECT_EQ(rep.skipped_no_loss, 2);
  EXPECT_EQ(rep.first_skipped, f + ":2");
  EXPECT_NE(err.find("warning"), std::string::npos) << err;
  EXPECT_NE(err.find("2 sample"), std::string::npos) << err;
  EXPECT_NE(err.find(f + ":2"), std::string::npos) << err;
  for (const auto& e : ex) EXPECT_TRUE(e.trainable());
}

TEST(Sft, TooLongSampleIsAnError) {
  const std::string dir = test::make_temp_dir("sftlong");
  const std::string f = dir + "/l.jsonl";
  test::write_file(f, R"({"prompt":"a","completion":"b"})" "\n"
                      R"({"prompt":"the cat sat on the mat and the dog ran",)"
                      R"("completion":"to see the big red sun"})" "\n");
  const auto ok = load_sft_jsonl({f}, tok(), ChatFormat::kZephyr, 0);
  ASSERT_EQ(ok.size(), 2u);
  const int64_t n = static_cast<int64_t>(ok[1].ids.size());
  EXPECT_EQ(load_sft_jsonl({f}, tok(), ChatFormat::kZephyr, n).size(), 2u);
  const std::string e = error_of([&] { load_sft_jsonl({f}, tok(), ChatFormat::kZephyr, n - 1); });
  EXPECT_NE(e.find(f + ":2:"), std::string::npos) << e;
  EXPECT_NE(e.find(std::to_string(n) + " tokens"), std::string::npos) << e;
  // The batcher refuses samples longer than T+1 as well.
  EXPECT_NE(error_of([&] { SftBatcher b(ok, 1, n - 2, false, 0); }).find(f + ":2"), std::string::npos);
}

SftExample make_example(std::vector<int32_t> ids, std::vector<uint8_t> mask, const std::string& src) {
  SftExample e;
  e.ids = std::move(ids);
  e.mask = std::move(mask);
  e.source = src;
  return e;
}

TEST(Sft, BatcherPadsAndMasksTargets) {
  std::vector<SftExample> ex = {make_example({1, 10, 11, 12, 2}, {0, 0, 1, 1, 1}, "a"),
                                make_example({1, 20, 21}, {0, 0, 1}, "b")};
  SftBatcher b(ex, 2, 6, false, 0, false, 99);
  EXPECT_EQ(b.rows_per_epoch(), 2);
  std::vector<int32_t> in(12), tg(12), pos(12);
  b.micro_batch(0, in.data(), tg.data(), pos.data());
  EXPECT_EQ(in, (std::vector<int32_t>{1, 10, 11, 12, 2, 99, 1, 20, 21, 99, 99, 99}));
  EXPECT_EQ(tg, (std::vector<int32_t>{-1, 11, 12, 2, -1, -1, -1, 21, -1, -1, -1, -1}));
  EXPECT_EQ(pos, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}));
  // Packed: both in one row; the first token of the second example is never a target.
  std::vector<SftExample> ex2 = ex;
  ex2[1].mask = {1, 1, 1};
  SftBatcher p(ex2, 1, 7, false, 0, true, 0);
  ASSERT_EQ(p.rows_per_epoch(), 1);
  std::vector<int32_t> in1(7), tg1(7), pos1(7);
  p.micro_batch(0, in1.data(), tg1.data(), pos1.data());
  EXPECT_EQ(in1, (std::vector<int32_t>{1, 10, 11, 12, 2, 1, 20}));
  EXPECT_EQ(tg1, (std::vector<int32_t>{-1, 11, 12, 2, -1, 20, 21}));
  EXPECT_EQ(pos1, (std::vector<int32_t>{0, 1, 2, 3, 4, 0, 1}));
}

TEST(Sft, BatcherShuffleIsDeterministicPermutationPerEpoch) {
  std::vector<SftExample> ex;
  for (int i = 0; i < 11; ++i) ex.push_back(make_example({1, 100 + i, 2}, {0, 1, 1}, std::to_string(i)));
  for (bool pack : {false, true}) {
    const int64_t T = 6;  // packed: two 3-token examples per row of T+1 tokens
    SftBatcher a(ex, 3, T, true, 5, pack), b(ex, 3, T, true, 5, pack), c(ex, 3, T, true, 6, pack);
    const int64_t rows = a.rows_per_epoch();
    EXPECT_EQ(rows, pack ? 6 : 11);
    std::vector<int32_t> in(3 * T), tg(3 * T), in2(3 * T), tg2(3 * T);
    // Epoch by epoch, every example is seen exactly once (rows of an epoch: g in [e*rows, (e+1)*rows)).
    std::vector<std::multiset<int32_t>> seen(3);
    bool differs = false;
    for (int64_t m = 0; m < rows; ++m) {
      a.micro_batch(m, in.data(), tg.data());
      b.micro_batch(40 - m, in2.data(), tg2.data());  // other calls in between must not matter
      b.micro_batch(m, in2.data(), tg2.data());
      EXPECT_EQ(in, in2);
      EXPECT_EQ(tg, tg2);
      c.micro_batch(m, in2.data(), tg2.data());
      differs |= in != in2;
      for (int64_t r = 0; r < 3; ++r) {
        const int64_t g = m * 3 + r;
        if (g >= 3 * rows) break;
        for (int64_t t = 0; t < T; ++t)
          if (in[r * T + t] >= 100) seen[g / rows].insert(in[r * T + t]);
      }
    }
    for (const auto& s : seen) {
      ASSERT_EQ(s.size(), 11u);
      for (int i = 0; i < 11; ++i) EXPECT_EQ(s.count(100 + i), 1u);
    }
    EXPECT_TRUE(differs);
  }
}

}  // namespace
}  // namespace strata
