// tokenizer.json files strata must refuse: each error names the file and the field, none crashes.
#include <gtest/gtest.h>

#include <filesystem>

#include "strata/error.h"
#include "strata/tokenizer.h"
#include "test_util.h"
#include "text/bpe_test_util.h"

namespace strata {
namespace {

using json = nlohmann::json;
using test::sym;

// Loads `text` as a tokenizer.json and returns the error message ("<no error>" if it loaded).
std::string load_error(const std::string& text) {
  const std::string path = test::make_temp_dir("bpe-err") + "/tokenizer.json";
  test::write_file(path, text);
  const std::string msg = test::error_of([&] { Tokenizer::load(path); });
  if (msg != "<no error>") {
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "the message must start with the file: " << msg;
  }
  return msg;
}

// Edits the standard file with `edit` and expects an error containing every needle.
void expect_refused(const std::function<void(json&)>& edit, std::initializer_list<std::string> needles) {
  json j = test::test_tokenizer_json();
  edit(j);
  const std::string msg = load_error(j.dump());
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
}

json added(int id, const std::string& content, bool special = true) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

TEST(BpeTokenizerErrors, StandardFileLoads) {
  EXPECT_EQ(load_error(test::test_tokenizer_json().dump()), "<no error>");  // so each edit below is the cause
}

TEST(BpeTokenizerErrors, MalformedJson) {
  EXPECT_NE(load_error("{\"model\": ").find("invalid JSON"), std::string::npos);
  EXPECT_NE(load_error("").find("invalid JSON"), std::string::npos);
  EXPECT_NE(load_error("[1, 2]").find("expected a JSON object"), std::string::npos);
  const std::string missing = test::make_temp_dir("bpe-err") + "/nothing/tokenizer.json";
  EXPECT_NE(
      test::error_of([&] { Tokenizer::load(missing); }).find(missing + ": cannot load tokenizer.json: file not found"),
      std::string::npos);
}

TEST(BpeTokenizerErrors, MissingOrMistypedFields) {
  expect_refused([](json& j) { j.erase("model"); }, {"field 'model': missing"});
  expect_refused([](json& j) { j["model"].erase("merges"); }, {"field 'model.merges': missing"});
  expect_refused([](json& j) { j["model"]["vocab"] = json::array(); }, {"field 'model.vocab': expected an object"});
  expect_refused([](json& j) { j["model"]["vocab"]["h"] = "seven"; }, {"model.vocab", "'h' is not an integer"});
  expect_refused([](json& j) { j["model"]["merges"] = 3; }, {"field 'model.merges': expected an array"});
  expect_refused([](json& j) { j["added_tokens"][0].erase("id"); }, {"field 'added_tokens[0].id'"});
  expect_refused([](json& j) { j["added_tokens"][0]["special"] = "yes"; },
                 {"added_tokens[0].special", "true or false"});
  expect_refused([](json& j) { j["colour"] = "blue"; }, {"field 'colour': not supported (unknown field)"});
  expect_refused([](json& j) { j["model"]["shiny"] = true; }, {"field 'model.shiny': not supported"});
}

TEST(BpeTokenizerErrors, BadMerges) {
  expect_refused([](json& j) { j["model"]["merges"][3] = "hell zz"; },
                 {"field 'model.merges[3]'", "'zz' is not in model.vocab"});
  expect_refused([](json& j) { j["model"]["merges"].push_back("x y"); },
                 {"field 'model.merges[23]'", "the merged token 'xy' is not in model.vocab"});
  expect_refused([](json& j) { j["model"]["merges"][0] = "hello"; },
                 {"model.merges[0]", "two tokens separated by one space"});
  expect_refused([](json& j) { j["model"]["merges"][0] = "h e l"; }, {"model.merges[0]"});
  expect_refused([](json& j) { j["model"]["merges"][0] = json::array({"h"}); },
                 {"model.merges[0]", "expected \"a b\""});
  expect_refused([](json& j) { j["model"]["merges"].push_back(sym("l") + " " + sym("l")); },
                 {"model.merges[23]", "merged twice (first at rank 1)"});
}

TEST(BpeTokenizerErrors, BadIds) {
  expect_refused([](json& j) { j["model"]["vocab"]["zz"] = 5; },
                 {"field 'model.vocab'", "id 5 is given to both", "'zz'"});
  expect_refused([](json& j) { j["model"]["vocab"]["zz"] = -2; }, {"model.vocab", "'zz'", "out of range"});
  expect_refused([](json& j) { j["model"]["vocab"]["zz"] = 5000000000LL; }, {"model.vocab", "'zz'", "out of range"});
  expect_refused([](json& j) { j["model"]["vocab"]["zz"] = 281; }, {"model.vocab", "281", "'zz'", "ids 0..280"});
  expect_refused([](json& j) { j["added_tokens"].push_back(added(300, "<pad>")); },
                 {"field 'added_tokens'", "300", "<pad>", "out of range"});
  expect_refused([](json& j) { j["added_tokens"].push_back(added(5, "<pad>")); },
                 {"field 'added_tokens[1].id'", "id 5 is '<pad>' here but"});
  expect_refused([](json& j) { j["added_tokens"].push_back(added(280, "<|endoftext|>")); },
                 {"added_tokens[1].id", "has id 280 here but 279 in model.vocab"});
  expect_refused([](json& j) { j["added_tokens"][0]["content"] = ""; }, {"added_tokens[0].content", "empty"});
  // A missing byte symbol: text with that byte could not be encoded.
  expect_refused([](json& j) { j["model"]["vocab"].erase(sym("\n")); },
                 {"field 'model.vocab'", "no token for byte 0x0A", "no unk_token"});
}

TEST(BpeTokenizerErrors, UnsupportedParts) {
  expect_refused([](json& j) { j["model"]["type"] = "WordPiece"; },
                 {"field 'model.type'", "'WordPiece' is not supported"});
  expect_refused([](json& j) { j["model"]["byte_fallback"] = true; }, {"field 'model.byte_fallback'", "not supported"});
  expect_refused([](json& j) { j["model"]["dropout"] = 0.1; }, {"field 'model.dropout'", "must be null"});
  expect_refused([](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, {"model.continuing_subword_prefix"});
  expect_refused([](json& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, {"model.end_of_word_suffix"});
  expect_refused(
      [](json& j) {
        j["normalizer"] = {{"type", "NFKC"}};
      },
      {"field 'normalizer.type'", "'NFKC' is not supported"});
  expect_refused(
      [](json& j) {
        j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}};
      },
      {"normalizer.normalizers[0].type", "'Lowercase'"});
  expect_refused([](json& j) { j["pre_tokenizer"] = nullptr; }, {"field 'pre_tokenizer'", "ByteLevel"});
  expect_refused(
      [](json& j) {
        j["pre_tokenizer"] = {{"type", "Whitespace"}};
      },
      {"pre_tokenizer.type", "'Whitespace'"});
  expect_refused([](json& j) { j["pre_tokenizer"]["use_regex"] = "maybe"; }, {"pre_tokenizer.use_regex"});
  expect_refused(
      [](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array()}};
      },
      {"field 'pre_tokenizer'", "without ByteLevel"});
  const json split = {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_refused(
      [&](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {j["pre_tokenizer"], split}}};
      },
      {"pre_tokenizer.pretokenizers[1]", "nothing may follow the ByteLevel"});
  json s2 = split;
  s2["behavior"] = "MergedWithPrevious";
  expect_refused(
      [&](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {s2, j["pre_tokenizer"]}}};
      },
      {"pre_tokenizer.pretokenizers[0].behavior", "'MergedWithPrevious'"});
  s2 = split;
  s2["invert"] = true;
  expect_refused(
      [&](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {s2, j["pre_tokenizer"]}}};
      },
      {"pre_tokenizer.pretokenizers[0].invert"});
  s2 = split;
  s2["pattern"] = {{"Regex", "(unclosed"}};
  expect_refused(
      [&](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {s2, j["pre_tokenizer"]}}};
      },
      {"field 'pre_tokenizer.pretokenizers[0].pattern.Regex'", "offset"});
  expect_refused([](json& j) { j["decoder"] = nullptr; }, {"field 'decoder'", "ByteLevel"});
  expect_refused([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, {"field 'decoder.type'", "'WordPiece'"});
  expect_refused(
      [](json& j) {
        j["post_processor"] = {{"type", "RobertaProcessing"}};
      },
      {"field 'post_processor.type'", "'RobertaProcessing'"});
  expect_refused(
      [](json& j) {
        j["post_processor"] = {
            {"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", json::object()}};
      },
      {"post_processor.single[0]", "'<s>' is not in post_processor.special_tokens"});
  expect_refused([](json& j) { j["added_tokens"][0]["lstrip"] = true; },
                 {"field 'added_tokens[0].lstrip'", "not supported"});
  expect_refused([](json& j) { j["added_tokens"][0]["single_word"] = true; }, {"added_tokens[0].single_word"});
  expect_refused([](json& j) { j["truncation"] = {{"max_length", 512}}; }, {"field 'truncation'", "must be null"});
  expect_refused([](json& j) { j["model"]["unk_token"] = "<unk>"; },
                 {"field 'model.unk_token'", "'<unk>' is not in model.vocab"});
}

// A directory with both kinds loads the SentencePiece model, as the model loaders prefer it.
TEST(BpeTokenizerErrors, DirectoryPrefersSentencePiece) {
  const std::string dir = test::make_temp_dir("bpe-dir");
  test::write_file(dir + "/tokenizer.json", test::test_tokenizer_json().dump());
  EXPECT_EQ(Tokenizer::find_in_dir(dir), dir + "/tokenizer.json");
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->path(), dir + "/tokenizer.json");
  EXPECT_EQ(tok->kind(), TokenizerKind::kByteLevelBpe);
  test::write_file(dir + "/tokenizer.model", "not a sentencepiece model");
  EXPECT_EQ(Tokenizer::find_in_dir(dir), dir + "/tokenizer.model");
  EXPECT_NE(
      test::error_of([&] { Tokenizer::load(dir); }).find(dir + "/tokenizer.model: cannot load SentencePiece model"),
      std::string::npos);
  const std::string empty = test::make_temp_dir("bpe-dir-empty");
  EXPECT_NE(test::error_of([&] { Tokenizer::load(empty); }).find("no tokenizer.model or tokenizer.json"),
            std::string::npos);
  // A tokenizer.json under another name (as copied into checkpoints) is still recognised by its content.
  test::write_file(empty + "/tok.model", "  \n" + test::test_tokenizer_json().dump());
  EXPECT_EQ(Tokenizer::load(empty + "/tok.model")->kind(), TokenizerKind::kByteLevelBpe);
}

// The model directory loader finds a tokenizer.json as it finds tokenizer.model, and the CLI runs with it.
TEST(BpeTokenizerCli, ModelDirectoryWithTokenizerJson) {
  const std::string dir = test::make_temp_dir("bpe-cli");
  test::write_file(dir + "/tokenizer.json", test::test_tokenizer_json().dump());
  const std::string model = dir + "/model";
  auto r = test::run_cli("init --preset tiny -o '" + model + "' --tokenizer '" + dir + "/tokenizer.json' --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::filesystem::remove(model + "/tokenizer.model");
  r = test::run_cli("generate -m '" + model + "' -p 'hello world' -n 4 --temp 0");
  EXPECT_NE(r.exit_code, 0);  // no tokenizer at all now
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
  std::filesystem::copy_file(dir + "/tokenizer.json", model + "/tokenizer.json");
  r = test::run_cli("generate -m '" + model + "' -p 'hello world' -n 4 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("hello world", 0), 0u) << r.out;
  r = test::run_cli("logits -m '" + model + "' -p 'hello world' --top 3 --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace strata
