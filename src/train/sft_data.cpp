#include "train/sft_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <fstream>

#include <nlohmann/json.hpp>

#include "strata/error.h"

namespace strata {

namespace {

bool known_role(const std::string& r) { return r == "system" || r == "user" || r == "assistant"; }

void check_roles(const std::vector<ChatMessage>& msgs) {
  if (msgs.empty()) fail("empty conversation (no messages)");
  for (size_t i = 0; i < msgs.size(); ++i)
    if (!known_role(msgs[i].role))
      fail("messages[", i, "]: unknown role '", msgs[i].role, "' (system, user or assistant)");
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

void text(std::vector<ChatPiece>& out, std::string t, bool train) {
  out.push_back({ChatPiece::kText, std::move(t), train});
}

// Zephyr (alignment-handbook, spec §1.5): "<|role|>\n" + content + eos + "\n" per message.
std::vector<ChatPiece> zephyr(const std::vector<ChatMessage>& msgs, bool gen) {
  std::vector<ChatPiece> p;
  for (const auto& m : msgs) {
    const bool a = m.role == "assistant";
    text(p, cat("<|", m.role, "|>\n"), false);
    text(p, m.content, a);
    p.push_back({ChatPiece::kEos, "", a});
    text(p, "\n", false);
  }
  if (gen) text(p, "<|assistant|>\n", false);
  return p;
}

// ChatML: "<|im_start|>role\ncontent<|im_end|>\n"; the assistant's "<|im_end|>" is trained.
std::vector<ChatPiece> chatml(const std::vector<ChatMessage>& msgs, bool gen) {
  std::vector<ChatPiece> p;
  for (const auto& m : msgs) {
    const bool a = m.role == "assistant";
    text(p, cat("<|im_start|>", m.role, "\n"), false);
    text(p, cat(m.content, "<|im_end|>"), a);
    text(p, "\n", false);
  }
  if (gen) text(p, "<|im_start|>assistant\n", false);
  return p;
}

// Llama-2 (Meta's chat_completion): an optional system message is folded into the
// first user turn as "<<SYS>>\n{sys}\n<</SYS>>\n\n{user}"; then per exchange
// BOS "[INST] {user} [/INST] {assistant} " EOS with user and assistant stripped;
// a final user turn without answer is BOS "[INST] {user} [/INST]" (the generation prompt).
std::vector<ChatPiece> llama2(const std::vector<ChatMessage>& msgs) {
  size_t i = 0;
  std::string sys;
  bool has_sys = false;
  if (msgs[0].role == "system") {
    sys = msgs[0].content;
    has_sys = true;
    i = 1;
  }
  if (i == msgs.size()) fail("llama-2: a conversation needs a user message after the system message");
  std::vector<ChatPiece> p;
  for (size_t k = i; k < msgs.size(); k += 2) {
    if (msgs[k].role != "user")
      fail("llama-2: messages[", k, "] is '", msgs[k].role, "', expected 'user' (user and assistant must alternate",
           has_sys ? " after the system message" : "", ")");
    std::string user = strip(msgs[k].content);
    if (k == i && has_sys) user = cat("<<SYS>>\n", sys, "\n<</SYS>>\n\n", user);
    p.push_back({ChatPiece::kBos, "", false});
    text(p, cat("[INST] ", user, " [/INST]"), false);
    if (k + 1 < msgs.size()) {
      if (msgs[k + 1].role != "assistant")
        fail("llama-2: messages[", k + 1, "] is '", msgs[k + 1].role, "', expected 'assistant'");
      text(p, cat(" ", strip(msgs[k + 1].content), " "), true);
      p.push_back({ChatPiece::kEos, "", true});
    }
  }
  return p;
}

// None: the messages' texts back to back, no markers (plain text, e.g.
// passkey tuning data); assistant text trained, then a trained EOS.
std::vector<ChatPiece> plain(const std::vector<ChatMessage>& msgs, bool gen) {
  std::vector<ChatPiece> p;
  for (const auto& m : msgs) text(p, m.content, m.role == "assistant");
  if (!gen && msgs.back().role == "assistant") p.push_back({ChatPiece::kEos, "", true});
  return p;
}

void push(SftExample& ex, const std::vector<int32_t>& ids, bool train) {
  ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
  ex.mask.insert(ex.mask.end(), ids.size(), train ? 1 : 0);
}

// Encodes one run of text pieces (no BOS/EOS inside) with exact mask boundaries.
void encode_run(const Tokenizer& tok, const std::vector<std::pair<std::string, bool>>& parts, SftExample& ex) {
  std::string whole;
  for (const auto& [t, m] : parts) whole += t;
  if (whole.empty()) return;
  const std::vector<int32_t> full = tok.encode(whole, false);
  std::vector<size_t> cuts;  // token index where each part after the first starts
  std::string prefix;
  bool ok = true;
  for (size_t i = 0; i + 1 < parts.size() && ok; ++i) {
    prefix += parts[i].first;
    const std::vector<int32_t> p = tok.encode(prefix, false);
    ok = p.size() <= full.size() && std::equal(p.begin(), p.end(), full.begin()) &&
         (cuts.empty() || p.size() >= cuts.back());
    cuts.push_back(p.size());
  }
  if (!ok) {  // a token straddles a mask boundary: encode the parts on their own
    for (const auto& [t, m] : parts)
      if (!t.empty()) push(ex, tok.encode(t, false), m);
    return;
  }
  size_t begin = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const size_t end = i + 1 < parts.size() ? cuts[i] : full.size();
    push(ex, std::vector<int32_t>(full.begin() + begin, full.begin() + end), parts[i].second);
    begin = end;
  }
}

}  // namespace

ChatFormat parse_chat_format(const std::string& name) {
  if (name == "zephyr") return ChatFormat::kZephyr;
  if (name == "chatml") return ChatFormat::kChatML;
  if (name == "llama-2" || name == "llama2") return ChatFormat::kLlama2;
  if (name == "none") return ChatFormat::kNone;
  fail("unknown chat template '", name, "' (zephyr, chatml, llama-2 or none)");
}

std::vector<ChatPiece> chat_pieces(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt) {
  check_roles(msgs);
  switch (f) {
    case ChatFormat::kZephyr: return zephyr(msgs, add_generation_prompt);
    case ChatFormat::kChatML: return chatml(msgs, add_generation_prompt);
    case ChatFormat::kLlama2: return llama2(msgs);
    case ChatFormat::kNone: return plain(msgs, add_generation_prompt);
  }
  fail("unknown chat format");
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt) {
  std::string s;
  for (const auto& p : chat_pieces(f, msgs, add_generation_prompt))
    s += p.kind == ChatPiece::kBos ? "<s>" : p.kind == ChatPiece::kEos ? "</s>" : p.text;
  return s;
}

bool SftExample::trainable() const {
  return std::find(mask.begin() + (mask.empty() ? 0 : 1), mask.end(), 1) != mask.end();
}

SftExample tokenize_chat(const Tokenizer& tok, ChatFormat f, const std::vector<ChatMessage>& msgs,
                         bool add_generation_prompt) {
  const std::vector<ChatPiece> pieces = chat_pieces(f, msgs, add_generation_prompt);
  SftExample ex;
  if ((pieces.empty() || pieces[0].kind != ChatPiece::kBos) && tok.bos_id() >= 0) push(ex, {tok.bos_id()}, false);
  std::vector<std::pair<std::string, bool>> run;  // text between special tokens, merged by mask
  auto flush = [&] {
    encode_run(tok, run, ex);
    run.clear();
  };
  for (const auto& p : pieces) {
    if (p.kind == ChatPiece::kText) {
      if (p.text.empty()) continue;
      if (!run.empty() && run.back().second == p.train) run.back().first += p.text;
      else run.push_back({p.text, p.train});
      continue;
    }
    flush();
    const int32_t id = p.kind == ChatPiece::kBos ? tok.bos_id() : tok.eos_id();
    if (id < 0) fail(tok.path(), ": the chat template needs a ", p.kind == ChatPiece::kBos ? "BOS" : "EOS", " token");
    push(ex, {id}, p.train);
  }
  flush();
  return ex;
}

std::vector<ChatMessage> parse_sft_record(const std::string& line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail("invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail("expected a JSON object, got ", j.type_name());
  auto str = [](const nlohmann::json& o, const char* key, const std::string& where) {
    if (!o.contains(key)) fail(where, "lacks \"", key, "\"");
    if (!o[key].is_string()) fail(where, "\"", key, "\" must be a string, got ", o[key].type_name());
    return o[key].get<std::string>();
  };
  std::vector<ChatMessage> msgs;
  if (j.contains("messages")) {
    const auto& a = j["messages"];
    if (!a.is_array()) fail("\"messages\" must be an array, got ", a.type_name());
    if (a.empty()) fail("\"messages\" is empty");
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string where = cat("messages[", i, "] ");
      if (!a[i].is_object()) fail(where, "must be an object, got ", a[i].type_name());
      ChatMessage m{str(a[i], "role", where), str(a[i], "content", where)};
      if (!known_role(m.role)) fail(where, "has unknown role '", m.role, "' (system, user or assistant)");
      msgs.push_back(std::move(m));
    }
  } else if (j.contains("prompt") || j.contains("completion")) {
    msgs.push_back({"user", str(j, "prompt", "record ")});
    msgs.push_back({"assistant", str(j, "completion", "record ")});
  } else {
    fail("expected \"messages\" or \"prompt\" and \"completion\"");
  }
  return msgs;
}

std::vector<SftExample> load_sft_jsonl(const std::vector<std::string>& files, const Tokenizer& tok, ChatFormat f,
                                       int64_t max_len, SftLoadReport* report, const std::string& max_len_why) {
  SftLoadReport rep;
  std::vector<SftExample> out;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(file, ": cannot open");
    std::string line;
    for (int64_t ln = 1; std::getline(in, line); ++ln) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = cat(file, ":", ln);
      SftExample ex;
      try {
        ex = tokenize_chat(tok, f, parse_sft_record(line));
      } catch (const Error& e) {
        fail(where, ": ", e.what());
      }
      ex.source = where;
      const int64_t n = static_cast<int64_t>(ex.ids.size());
      if (max_len > 0 && n > max_len)
        fail(where, ": sample is ", n, " tokens, longer than ",
             max_len_why.empty() ? cat("the maximum of ", max_len, " tokens") : cat(max_len_why, " = ", max_len, " tokens"));
      if (!ex.trainable()) {
        if (rep.skipped_no_loss++ == 0) rep.first_skipped = where;
        continue;
      }
      rep.tokens += n;
      rep.loss_tokens += std::count(ex.mask.begin() + 1, ex.mask.end(), 1);
      out.push_back(std::move(ex));
    }
    if (in.bad()) fail(file, ": read error");
  }
  rep.samples = static_cast<int64_t>(out.size());
  if (rep.skipped_no_loss > 0)
    std::fprintf(stderr, "strata: warning: skipped %lld sample(s) with no assistant tokens to train on (first: %s)\n",
                 (long long)rep.skipped_no_loss, rep.first_skipped.c_str());
  if (report) *report = rep;
  return out;
}

std::vector<SftExample> split_off_validation(std::vector<SftExample>& examples, double fraction) {
  if (!(fraction >= 0.0 && fraction < 1.0)) fail("--val-fraction must be in [0, 1), got ", fraction);
  if (fraction == 0.0) return {};
  const int64_t n = static_cast<int64_t>(examples.size());
  const int64_t n_val = std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n)));
  if (n_val >= n) fail("--val-fraction ", fraction, " of ", n, " examples leaves none for training");
  std::vector<SftExample> val(std::make_move_iterator(examples.end() - n_val), std::make_move_iterator(examples.end()));
  examples.resize(static_cast<size_t>(n - n_val));
  return val;
}

// ---------------------------------------------------------------------------------------------
// Batches

std::vector<std::vector<uint32_t>> SftBatcher::make_rows(const std::vector<SftExample>& ex, int64_t T, bool pack,
                                                         bool shuffle, uint64_t seed) {
  if (ex.empty()) fail("sft: no samples to train on");
  if (T <= 0) fail("sft: sequence length must be positive, got ", T);
  for (const auto& e : ex) {
    if (e.ids.size() != e.mask.size()) fail(e.source, ": ids and mask differ in length");
    if (static_cast<int64_t>(e.ids.size()) > T + 1)
      fail(e.source, ": sample is ", e.ids.size(), " tokens, more than the sequence length + 1 (", T + 1, ")");
  }
  std::vector<std::vector<uint32_t>> rows;
  if (!pack) {
    for (size_t i = 0; i < ex.size(); ++i) rows.push_back({static_cast<uint32_t>(i)});
    return rows;
  }
  // The packing order is drawn once (epoch UINT64_MAX is reserved for it), so rows stay fixed across epochs.
  std::vector<uint32_t> order(ex.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  if (shuffle) order = epoch_permutation(static_cast<int64_t>(ex.size()), seed, UINT64_MAX);
  int64_t len = 0;
  for (uint32_t i : order) {
    const int64_t n = static_cast<int64_t>(ex[i].ids.size());
    if (rows.empty() || len + n > T + 1) {
      rows.emplace_back();
      len = 0;
    }
    rows.back().push_back(i);
    len += n;
  }
  return rows;
}

SftBatcher::SftBatcher(std::vector<SftExample> examples, int64_t B, int64_t T, bool shuffle, uint64_t seed, bool pack,
                       int32_t pad_id)
    : examples_(std::move(examples)),
      B_(B),
      T_(T),
      pad_id_(pad_id),
      rows_(make_rows(examples_, T, pack, shuffle, seed)),
      order_(static_cast<int64_t>(rows_.size()), shuffle, seed) {
  if (B <= 0) fail("sft: batch size must be positive, got ", B);
}

void SftBatcher::micro_batch(int64_t m, int32_t* inputs, int32_t* targets, int32_t* positions) const {
  if (m < 0) fail("sft: negative micro-batch index ", m);
  std::vector<int32_t> x;
  std::vector<uint8_t> keep;
  std::vector<int32_t> p;
  for (int64_t r = 0; r < B_; ++r) {
    x.clear();
    keep.clear();
    p.clear();
    for (uint32_t e : rows_[static_cast<size_t>(order_.item(m * B_ + r))]) {
      const SftExample& ex = examples_[e];
      for (size_t t = 0; t < ex.ids.size(); ++t) {
        x.push_back(ex.ids[t]);
        keep.push_back(t > 0 && ex.mask[t]);  // an example's first token is never a target
        p.push_back(static_cast<int32_t>(t));
      }
    }
    const int64_t L = static_cast<int64_t>(x.size());
    int32_t* in = inputs + r * T_;
    int32_t* tg = targets + r * T_;
    for (int64_t t = 0; t < T_; ++t) {
      const bool real = t + 1 < L;
      in[t] = t < L ? x[t] : pad_id_;
      tg[t] = real && keep[t + 1] ? x[t + 1] : -1;
      if (positions) positions[r * T_ + t] = t < L ? p[t] : p[L - 1] + static_cast<int32_t>(t - L + 1);
    }
  }
}

}  // namespace strata
