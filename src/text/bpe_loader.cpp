// tokenizer.json -> BpeTokenizer. Everything the file says is either honoured or refused with the
// field's path: a tokenizer that silently tokenizes differently from its model's training is worse
// than none.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "strata/error.h"
#include "text/bpe_tokenizer.h"
#include "text/unicode_nfc.h"

namespace strata::text {

using json = nlohmann::json;
namespace fs = std::filesystem;

// obj[key], or null when absent (nlohmann's value() returns copies, which references must not bind to).
const json& member(const json& obj, const char* key) {
  static const json null_value;
  const auto it = obj.find(key);
  return it == obj.end() ? null_value : *it;
}

class BpeLoader {
 public:
  explicit BpeLoader(std::string path) : path_(std::move(path)) {}
  std::unique_ptr<BpeTokenizer> run();

 private:
  template <class... Args>
  [[noreturn]] void bad(const std::string& field, const Args&... args) const {
    fail(path_, ": field '", field, "': ", args...);
  }
  void only_keys(const json& obj, const std::string& field, std::initializer_list<const char*> allowed) const;
  const json& need_object(const json& j, const std::string& field) const;
  const json& need_array(const json& j, const std::string& field) const;
  const std::string& need_string(const json& j, const std::string& field) const;
  bool flag(const json& obj, const char* key, const std::string& field, bool dflt) const;
  std::string type_of(const json& obj, const std::string& field) const;
  void must_be_false(const json& obj, const char* key, const std::string& field, const char* why) const;

  void read_model(const json& m, size_t n_added);
  void check_ids_dense();
  void read_added(const json& a);
  void read_normalizer(const json& n, const std::string& field);
  void read_pre_tokenizer(const json& p, const std::string& field);
  void read_post_processor(const json& p, const std::string& field);
  void read_decoder(const json& d, const std::string& field);
  void read_tokenizer_config();
  int32_t id_of(const std::string& token, const std::string& field) const;

  std::string path_;
  std::unique_ptr<BpeTokenizer> t_{new BpeTokenizer()};
  std::unordered_map<std::string, int32_t> all_ids_;  // vocab and added tokens
  std::vector<int32_t> suffix_ids_;                   // TemplateProcessing's tokens after the text
  bool byte_level_pre_ = false, byte_level_decoder_ = false;
};

void BpeLoader::only_keys(const json& obj, const std::string& field, std::initializer_list<const char*> allowed) const {
  for (const auto& item : obj.items()) {
    const std::string& key = item.key();
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* k) { return key == k; }))
      bad(field.empty() ? key : field + "." + key, "not supported (unknown field)");
  }
}

const json& BpeLoader::need_object(const json& j, const std::string& field) const {
  if (!j.is_object()) bad(field, "expected an object, got ", j.type_name());
  return j;
}

const json& BpeLoader::need_array(const json& j, const std::string& field) const {
  if (!j.is_array()) bad(field, "expected an array, got ", j.type_name());
  return j;
}

const std::string& BpeLoader::need_string(const json& j, const std::string& field) const {
  if (!j.is_string()) bad(field, "expected a string, got ", j.type_name());
  return j.get_ref<const std::string&>();
}

bool BpeLoader::flag(const json& obj, const char* key, const std::string& field, bool dflt) const {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) bad(field + "." + key, "expected true or false, got ", it->type_name());
  return it->get<bool>();
}

std::string BpeLoader::type_of(const json& obj, const std::string& field) const {
  need_object(obj, field);
  const auto it = obj.find("type");
  if (it == obj.end()) bad(field + ".type", "missing");
  return need_string(*it, field + ".type");
}

void BpeLoader::must_be_false(const json& obj, const char* key, const std::string& field, const char* why) const {
  if (flag(obj, key, field, false)) bad(field + "." + key, "true is not supported (", why, ")");
}

std::unique_ptr<BpeTokenizer> BpeLoader::run() {
  t_->path_ = path_;
  std::error_code ec;
  if (!fs::exists(path_, ec)) fail(path_, ": cannot load tokenizer.json: file not found");
  if (!fs::is_regular_file(path_, ec)) fail(path_, ": cannot load tokenizer.json: not a regular file");
  std::ifstream in(path_, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) fail(path_, ": cannot read the file");
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::exception& e) {
    fail(path_, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path_, ": expected a JSON object at the top level, got ", j.type_name());
  only_keys(j, "",
            {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor",
             "decoder", "model"});
  // Truncation and padding change what HF's encode returns; strata never cuts or pads.
  for (const char* key : {"truncation", "padding"})
    if (j.contains(key) && !j[key].is_null()) bad(key, "must be null (strata does not truncate or pad)");
  if (!j.contains("model")) bad("model", "missing");
  const json& added = j.contains("added_tokens") ? j["added_tokens"] : json::array();
  read_model(need_object(j["model"], "model"), added.is_array() ? added.size() : 0);
  read_added(added);
  read_normalizer(member(j, "normalizer"), "normalizer");
  if (t_->nfc_) {  // normalised added tokens are matched against normalised text
    for (auto& bucket : t_->norm_added_.by_first) {
      for (auto& tok : bucket) tok.first = nfc(tok.first);
    }
    std::array<std::vector<std::pair<std::string, int32_t>>, 256> rebucketed;
    for (auto& bucket : t_->norm_added_.by_first)
      for (auto& tok : bucket) rebucketed[static_cast<unsigned char>(tok.first[0])].push_back(tok);
    t_->norm_added_.by_first = std::move(rebucketed);
  }
  for (auto* set : {&t_->raw_added_, &t_->norm_added_}) {
    for (auto& bucket : set->by_first)
      std::stable_sort(bucket.begin(), bucket.end(),
                       [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  read_pre_tokenizer(member(j, "pre_tokenizer"), "pre_tokenizer");
  read_post_processor(member(j, "post_processor"), "post_processor");
  read_decoder(member(j, "decoder"), "decoder");
  read_tokenizer_config();
  return std::move(t_);
}

void BpeLoader::read_model(const json& m, size_t n_added) {
  if (m.contains("type") && type_of(m, "model") != "BPE")
    bad("model.type", "'", type_of(m, "model"), "' is not supported (only BPE)");
  only_keys(m, "model",
            {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
             "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (m.contains("dropout") && !m["dropout"].is_null())
    bad("model.dropout", "must be null (BPE dropout samples merges at random; strata encodes deterministically)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && !m[key].is_null() && !(m[key].is_string() && m[key].get<std::string>().empty()))
      bad(std::string("model.") + key, "not supported (byte-level BPE has no word affixes)");
  }
  must_be_false(m, "byte_fallback", "model", "byte-level BPE never needs <0xNN> fallback pieces");
  t_->fuse_unk_ = flag(m, "fuse_unk", "model", false);
  t_->ignore_merges_ = flag(m, "ignore_merges", "model", false);

  if (!m.contains("vocab")) bad("model.vocab", "missing");
  const json& vocab = need_object(m["vocab"], "model.vocab");
  // Ids must be exactly 0..N-1 (the model's embedding rows), N counting the added tokens too.
  const int64_t limit = static_cast<int64_t>(vocab.size() + n_added);
  int64_t max_id = -1;
  for (const auto& [token, idj] : vocab.items()) {
    if (token.empty()) bad("model.vocab", "an empty token");
    if (!idj.is_number_integer()) bad("model.vocab", "the id of '", token, "' is not an integer");
    const int64_t id = idj.get<int64_t>();
    if (id < 0 || id >= limit)
      bad("model.vocab", "the id ", id, " of '", token, "' is out of range: ", limit,
          " tokens (with added_tokens) must have the ids 0..", limit - 1);
    max_id = std::max(max_id, id);
    t_->vocab_[token] = static_cast<int32_t>(id);
  }
  t_->pieces_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : t_->vocab_) {
    if (!t_->pieces_[id].empty()) {
      const auto& [a, b] = std::minmax(token, t_->pieces_[id]);
      bad("model.vocab", "id ", id, " is given to both '", a, "' and '", b, "'");
    }
    t_->pieces_[id] = token;
  }
  all_ids_ = t_->vocab_;

  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    const std::string& unk = need_string(m["unk_token"], "model.unk_token");
    const auto it = t_->vocab_.find(unk);
    if (it == t_->vocab_.end()) bad("model.unk_token", "'", unk, "' is not in model.vocab");
    t_->unk_ = it->second;
  }
  const auto& symbols = byte_symbols();
  for (int b = 0; b < 256; ++b) {
    const auto it = t_->vocab_.find(symbols[b]);
    if (it != t_->vocab_.end()) {
      t_->byte_ids_[b] = it->second;
    } else if (t_->unk_ >= 0) {
      t_->byte_ids_[b] = t_->unk_;
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      bad("model.vocab", "no token for byte ", hex, " ('", symbols[b],
          "') and no unk_token: a byte-level vocabulary needs all 256 byte symbols");
    }
  }

  if (!m.contains("merges")) bad("model.merges", "missing");
  const json& merges = need_array(m["merges"], "model.merges");
  t_->merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string field = cat("model.merges[", i, "]");
    std::string a, b;
    const json& e = merges[i];
    if (e.is_string()) {  // "a b"
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        bad(field, "expected two tokens separated by one space, got '", s, "'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      bad(field, "expected \"a b\" or [\"a\", \"b\"], got ", e.dump());
    }
    int32_t ids[3];
    const std::string* names[3] = {&a, &b, nullptr};
    const std::string ab = a + b;
    names[2] = &ab;
    for (int k = 0; k < 3; ++k) {
      const auto it = t_->vocab_.find(*names[k]);
      if (it == t_->vocab_.end())
        bad(field, k < 2 ? "token '" : "the merged token '", *names[k], "' is not in model.vocab");
      ids[k] = it->second;
    }
    const uint64_t key = (uint64_t(uint32_t(ids[0])) << 32) | uint32_t(ids[1]);
    if (!t_->merges_.emplace(key, BpeTokenizer::Merge{static_cast<int32_t>(i), ids[2]}).second)
      bad(field, "the pair '", a, "' '", b, "' is merged twice (first at rank ", t_->merges_[key].rank, ")");
  }
}

void BpeLoader::read_added(const json& added) {
  need_array(added, "added_tokens");
  std::unordered_map<int32_t, std::string> added_ids;
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = cat("added_tokens[", i, "]");
    const json& a = need_object(added[i], field);
    only_keys(a, field, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    if (!a.contains("id") || !a["id"].is_number_integer()) bad(field + ".id", "expected an integer");
    const int64_t id64 = a["id"].get<int64_t>();
    if (id64 < 0 || id64 > INT32_MAX) bad(field + ".id", id64, " is out of range");
    const auto id = static_cast<int32_t>(id64);
    if (!a.contains("content")) bad(field + ".content", "missing");
    const std::string& content = need_string(a["content"], field + ".content");
    if (content.empty()) bad(field + ".content", "empty");
    must_be_false(a, "single_word", field, "added tokens are matched anywhere");
    must_be_false(a, "lstrip", field, "whitespace around added tokens is kept");
    must_be_false(a, "rstrip", field, "whitespace around added tokens is kept");
    const bool special = flag(a, "special", field, false);
    const bool normalized = flag(a, "normalized", field, !special);

    if (const auto it = added_ids.find(id); it != added_ids.end())
      bad(field + ".id", "id ", id, " is given to both '", it->second, "' and '", content, "'");
    if (const auto it = all_ids_.find(content); it != all_ids_.end() && it->second != id)
      bad(field + ".id", "'", content, "' has id ", id, " here but ", it->second, " in model.vocab");
    if (static_cast<size_t>(id) < t_->pieces_.size() && !t_->pieces_[id].empty() && t_->pieces_[id] != content)
      bad(field + ".id", "id ", id, " is '", content, "' here but '", t_->pieces_[id], "' in model.vocab");
    added_ids[id] = content;
    all_ids_[content] = id;
    if (static_cast<size_t>(id) >= t_->pieces_.size()) t_->pieces_.resize(static_cast<size_t>(id) + 1);
    t_->pieces_[id] = content;
    auto& set = normalized ? t_->norm_added_ : t_->raw_added_;
    set.by_first[static_cast<unsigned char>(content[0])].emplace_back(content, id);
    set.empty = false;
  }
  check_ids_dense();
  // Decoded bytes: vocabulary tokens through the reversed byte map (a token with a character outside it
  // stands for its own UTF-8, as in HF's decoder); added tokens are literal text, special ones none.
  std::unordered_map<std::string, uint8_t> reverse;
  const auto& symbols = byte_symbols();
  for (int b = 0; b < 256; ++b) reverse[symbols[b]] = static_cast<uint8_t>(b);
  t_->bytes_.resize(t_->pieces_.size());
  for (size_t id = 0; id < t_->pieces_.size(); ++id) {
    const std::string& p = t_->pieces_[id];
    if (added_ids.count(static_cast<int32_t>(id))) continue;
    std::string out;
    for (size_t k = 0; k < p.size();) {
      const size_t n = (static_cast<unsigned char>(p[k]) & 0x80) ? 2 : 1;  // byte symbols are 1 or 2 bytes
      const auto it = reverse.find(p.substr(k, n));
      if (it == reverse.end()) {
        out = p;
        break;
      }
      out += static_cast<char>(it->second);
      k += n;
    }
    t_->bytes_[id] = std::move(out);
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const int32_t id = added[i]["id"].get<int32_t>();
    t_->bytes_[id] = flag(added[i], "special", "", false) ? std::string() : t_->pieces_[id];
  }
}

// Every id from 0 to N-1 must name a token: a gap would be an embedding row that no text reaches and no
// decode can spell, and usually means the file is cut or hand-edited.
void BpeLoader::check_ids_dense() {
  const size_t n = all_ids_.size();
  if (t_->pieces_.size() == n) return;
  const auto top = static_cast<int32_t>(t_->pieces_.size() - 1);
  const bool in_vocab = t_->vocab_.count(t_->pieces_[top]) > 0;
  bad(in_vocab ? "model.vocab" : "added_tokens", "the id ", top, " of '", t_->pieces_[top], "' is out of range: ", n,
      " tokens must have the ids 0..", n - 1);
}

void BpeLoader::read_normalizer(const json& n, const std::string& field) {
  if (n.is_null()) return;
  const std::string type = type_of(n, field);
  if (type == "NFC") {
    only_keys(n, field, {"type"});
    t_->nfc_ = true;
  } else if (type == "Sequence") {
    only_keys(n, field, {"type", "normalizers"});
    const json& list = need_array(member(n, "normalizers"), field + ".normalizers");
    for (size_t i = 0; i < list.size(); ++i) read_normalizer(list[i], cat(field, ".normalizers[", i, "]"));
  } else {
    bad(field + ".type", "normalizer '", type, "' is not supported (only NFC, or none)");
  }
}

void BpeLoader::read_pre_tokenizer(const json& p, const std::string& field) {
  if (p.is_null()) bad(field, "null is not supported (byte-level BPE needs a ByteLevel pre-tokenizer)");
  const std::string type = type_of(p, field);
  if (byte_level_pre_) bad(field, "nothing may follow the ByteLevel pre-tokenizer");
  if (type == "Sequence") {
    only_keys(p, field, {"type", "pretokenizers"});
    const json& list = need_array(member(p, "pretokenizers"), field + ".pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) read_pre_tokenizer(list[i], cat(field, ".pretokenizers[", i, "]"));
    if (field == "pre_tokenizer" && !byte_level_pre_)
      bad(field, "a Sequence without ByteLevel is not supported (byte-level BPE needs one, last)");
  } else if (type == "ByteLevel") {
    only_keys(p, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    BpeTokenizer::PreStep step;
    step.byte_level = true;
    step.add_prefix_space = flag(p, "add_prefix_space", field, true);
    if (flag(p, "use_regex", field, true)) step.regex = std::make_unique<SplitRegex>(kGpt2SplitPattern, false, path_);
    t_->pre_.push_back(std::move(step));
    byte_level_pre_ = true;
  } else if (type == "Split") {
    only_keys(p, field, {"type", "pattern", "behavior", "invert"});
    const std::string behavior = need_string(member(p, "behavior"), field + ".behavior");
    if (behavior != "Isolated") bad(field + ".behavior", "'", behavior, "' is not supported (only Isolated)");
    must_be_false(p, "invert", field, "only the matches are pieces");
    const json& pat = need_object(member(p, "pattern"), field + ".pattern");
    if (pat.size() != 1 || !(pat.contains("Regex") || pat.contains("String")))
      bad(field + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    const bool literal = pat.contains("String");
    const std::string where = cat(path_, ": field '", field, ".pattern.", literal ? "String" : "Regex", "'");
    const std::string& text = need_string(literal ? pat["String"] : pat["Regex"], field + ".pattern");
    if (text.empty()) bad(field + ".pattern", "empty");
    BpeTokenizer::PreStep step;
    step.regex = std::make_unique<SplitRegex>(text, literal, where);
    t_->pre_.push_back(std::move(step));
  } else {
    bad(field + ".type", "pre-tokenizer '", type, "' is not supported (ByteLevel, Split, Sequence)");
  }
}

void BpeLoader::read_post_processor(const json& p, const std::string& field) {
  if (p.is_null()) return;
  const std::string type = type_of(p, field);
  if (type == "ByteLevel") {  // offsets only; ids are unchanged
    only_keys(p, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
  } else if (type == "Sequence") {
    only_keys(p, field, {"type", "processors"});
    const json& list = need_array(member(p, "processors"), field + ".processors");
    for (size_t i = 0; i < list.size(); ++i) read_post_processor(list[i], cat(field, ".processors[", i, "]"));
  } else if (type == "TemplateProcessing") {
    // Only `single` matters: strata encodes one sequence at a time, so `pair` is never used.
    only_keys(p, field, {"type", "single", "pair", "special_tokens"});
    static const json no_specials = json::object();
    const json& specials =
        p.contains("special_tokens") ? need_object(p["special_tokens"], field + ".special_tokens") : no_specials;
    const json& single = need_array(member(p, "single"), field + ".single");
    bool seen_text = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string f = cat(field, ".single[", i, "]");
      const json& item = need_object(single[i], f);
      if (item.contains("Sequence") && item.size() == 1) {
        const json& seq = need_object(item["Sequence"], f + ".Sequence");
        if (member(seq, "id") != "A" || seen_text) bad(f, "only one sequence, A, is supported");
        seen_text = true;
        continue;
      }
      if (!item.contains("SpecialToken") || item.size() != 1) bad(f, "expected SpecialToken or Sequence");
      const std::string& name =
          need_string(member(need_object(item["SpecialToken"], f + ".SpecialToken"), "id"), f + ".SpecialToken.id");
      if (!specials.contains(name)) bad(f, "'", name, "' is not in ", field, ".special_tokens");
      const std::string sf = field + ".special_tokens." + name;
      const json& ids = need_array(member(need_object(specials[name], sf), "ids"), sf + ".ids");
      for (const json& idj : ids) {
        if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() >= t_->vocab_size())
          bad(sf + ".ids", idj.dump(), " is not a token id (the vocabulary has ", t_->vocab_size(), ")");
        (seen_text ? suffix_ids_ : t_->prefix_ids_).push_back(idj.get<int32_t>());
      }
    }
    if (!seen_text) bad(field + ".single", "has no Sequence A");
  } else {
    bad(field + ".type", "post-processor '", type, "' is not supported (ByteLevel, TemplateProcessing, Sequence)");
  }
}

void BpeLoader::read_decoder(const json& d, const std::string& field) {
  if (d.is_null()) bad(field, "null is not supported (byte-level tokens need the ByteLevel decoder)");
  const std::string type = type_of(d, field);
  if (type == "ByteLevel") {
    only_keys(d, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    byte_level_decoder_ = true;
  } else if (type == "Sequence") {
    only_keys(d, field, {"type", "decoders"});
    const json& list = need_array(member(d, "decoders"), field + ".decoders");
    for (size_t i = 0; i < list.size(); ++i) read_decoder(list[i], cat(field, ".decoders[", i, "]"));
    if (!byte_level_decoder_) bad(field, "a Sequence without ByteLevel is not supported");
  } else {
    bad(field + ".type", "decoder '", type, "' is not supported (only ByteLevel)");
  }
}

int32_t BpeLoader::id_of(const std::string& token, const std::string& field) const {
  const auto it = all_ids_.find(token);
  if (it == all_ids_.end()) fail(field, ": '", token, "' is not a token of ", path_);
  return it->second;
}

// bos/eos: the post-processor's tokens first (they are what encoding adds); tokenizer_config.json beside
// the file names the EOS and, with add_bos_token, a BOS the template lacks; else the GPT-2 / GPT-NeoX
// end-of-text token, the only conventional EOS of byte-level vocabularies.
void BpeLoader::read_tokenizer_config() {
  if (!t_->prefix_ids_.empty()) t_->bos_ = t_->prefix_ids_.front();
  if (!suffix_ids_.empty()) t_->eos_ = suffix_ids_.back();
  const fs::path cfg = fs::path(path_).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (fs::is_regular_file(cfg, ec)) {
    const std::string where = cfg.string();
    std::ifstream in(cfg, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    json j;
    try {
      j = json::parse(text.str());
    } catch (const json::exception& e) {
      fail(where, ": invalid JSON: ", e.what());
    }
    if (!j.is_object()) fail(where, ": expected a JSON object at the top level");
    const auto token = [&](const char* key) -> std::string {
      const json v = j.value(key, json());
      if (v.is_string()) return v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
      if (!v.is_null()) fail(where, ": field '", key, "': expected a token string");
      return {};
    };
    if (const std::string eos = token("eos_token"); !eos.empty()) t_->eos_ = id_of(eos, where + ": field 'eos_token'");
    const json add_bos = member(j, "add_bos_token");
    if (t_->prefix_ids_.empty() && add_bos.is_boolean() && add_bos.get<bool>()) {
      const std::string bos = token("bos_token");
      if (bos.empty()) fail(where, ": field 'bos_token': add_bos_token is true but no bos_token is named");
      t_->bos_ = id_of(bos, where + ": field 'bos_token'");
      t_->prefix_ids_ = {t_->bos_};
    }
  }
  if (t_->eos_ < 0) {
    const auto it = all_ids_.find("<|endoftext|>");
    if (it != all_ids_.end()) t_->eos_ = it->second;
  }
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const std::string& path) {
  try {
    return BpeLoader(path).run();
  } catch (const json::exception& e) {  // a type the checks above did not foresee: still the file's fault
    fail(path, ": malformed tokenizer.json: ", e.what());
  }
}

}  // namespace strata::text
