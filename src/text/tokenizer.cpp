// The tokenizer (SentencePiece, or byte-level BPE from a tokenizer.json), streaming decoder and
// tokenizer training.
#include "strata/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unordered_map>

#include "strata/error.h"
#include "io/gguf.h"
#include "text/bpe_tokenizer.h"
#include "text/spm_proto.h"

namespace fs = std::filesystem;

namespace strata {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<text::BpeTokenizer> bpe;  // set for a tokenizer.json; then `sp` is unused
  int32_t vocab = 0;
};

namespace {
// SentencePiece statuses end with a space; keep error messages on one tidy line.
std::string status_text(const sentencepiece::util::Status& status) {
  std::string s = status.ToString();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  for (char& c : s) c = c == '\n' ? ' ' : c;
  return s;
}

// Out-of-range ids would make SentencePiece index past its piece table.
void check_id_in(const std::string& path, int32_t id, int32_t vocab) {
  if (id < 0 || id >= vocab) fail(path, ": token id ", id, " is outside the vocabulary [0, ", vocab, ")");
}
}  // namespace

namespace {
// libsentencepiece puts the pieces into a darts-clone trie, which throws
// through a noexcept frame (so the process aborts) on a piece that is empty
// or holds a NUL byte. Such a model is refused here, naming the piece; what
// our lenient reader cannot parse is left to SentencePiece's own checks.
void check_spm_pieces(const std::string& proto, const std::string& origin) {
  text::SpmVocab v;
  try {
    v = text::parse_spm(proto, origin);
  } catch (const Error&) {
    return;
  }
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    const std::string& t = v.pieces[i].text;
    if (t.empty() || t.find('\0') != std::string::npos)
      fail(origin, ": cannot load SentencePiece model: piece ", i, " is ", t.empty() ? "empty" : "text with a NUL byte",
           " (no tokenizer has such a piece)");
  }
}

// A tokenizer.json is a JSON object; a SentencePiece model is a protobuf, which never starts with '{'.
// Looking at the content keeps a tokenizer.json working under another name (e.g. copied into a
// checkpoint as tokenizer.model).
// The SentencePiece model a GGUF file's tokenizer.ggml.* metadata describes,
// read the way llama.cpp reads it: scores merge pieces (BPE), no Unicode
// normalization, a leading space unless tokenizer.ggml.add_space_prefix is false.
std::string gguf_vocab_proto(const std::string& path) {
  const GgufFile g = GgufFile::open(path);
  const std::string model = g.get_string("tokenizer.ggml.model");
  if (model != "llama")
    fail(path, ": key 'tokenizer.ggml.model': '", model,
         "' vocabularies are not supported (SentencePiece-style 'llama' is); pass --tokenizer with a "
         "tokenizer.json or tokenizer.model");
  const auto& tokens = g.get_array("tokenizer.ggml.tokens", GgufType::String);
  if (tokens.empty()) fail(path, ": key 'tokenizer.ggml.tokens': empty vocabulary");
  const std::vector<GgufValue>* scores = g.has("tokenizer.ggml.scores") ? &g.get_array("tokenizer.ggml.scores", GgufType::F32) : nullptr;
  const std::vector<GgufValue>* types = g.has("tokenizer.ggml.token_type") ? &g.get_array("tokenizer.ggml.token_type", GgufType::I32) : nullptr;
  if (scores && scores->size() != tokens.size())
    fail(path, ": key 'tokenizer.ggml.scores': ", scores->size(), " scores for ", tokens.size(), " tokens");
  if (types && types->size() != tokens.size())
    fail(path, ": key 'tokenizer.ggml.token_type': ", types->size(), " types for ", tokens.size(), " tokens");
  text::SpmVocab v;
  v.pieces.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    text::SpmVocab::Piece& p = v.pieces[i];
    p.text = tokens[i].s;
    p.score = scores ? static_cast<float>((*scores)[i].f) : 0.0f;
    const int64_t t = types ? (*types)[i].i : 1;
    if (t < 1 || t > 6) fail(path, ": key 'tokenizer.ggml.token_type': token ", i, " has type ", t, " (1 to 6 expected)");
    p.type = static_cast<text::PieceType>(t);
    if (p.type == text::PieceType::kByte) v.byte_fallback = true;
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  auto id = [&](const char* key, int64_t dflt) {
    const int64_t x = g.has(key) ? static_cast<int64_t>(g.get_uint(key)) : dflt;
    if (x >= n) fail(path, ": key '", key, "': token id ", x, " is outside the vocabulary of ", n);
    return static_cast<int32_t>(x);
  };
  v.unk_id = id("tokenizer.ggml.unknown_token_id", 0);
  v.bos_id = id("tokenizer.ggml.bos_token_id", 1);
  v.eos_id = id("tokenizer.ggml.eos_token_id", 2);
  v.pad_id = g.has("tokenizer.ggml.padding_token_id") ? id("tokenizer.ggml.padding_token_id", -1) : -1;
  if (v.pieces[static_cast<size_t>(v.unk_id)].type != text::PieceType::kUnknown)
    fail(path, ": key 'tokenizer.ggml.unknown_token_id': token ", v.unk_id, " is not of the unknown type (2)");
  v.add_dummy_prefix = g.get_bool("tokenizer.ggml.add_space_prefix", true);
  return text::serialize_spm(v);
}

bool looks_like_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c))
    if (!std::isspace(static_cast<unsigned char>(c))) return c == '{';
  return false;
}
}  // namespace

std::string Tokenizer::find_in_dir(const std::string& dir) {
  std::error_code ec;
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    const fs::path p = fs::path(dir) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return {};
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& given) {
  std::error_code ec;
  std::string path = given;
  if (fs::is_directory(given, ec)) {
    path = find_in_dir(given);
    if (path.empty()) fail(given, ": no tokenizer.model or tokenizer.json in this directory");
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->impl_ = std::make_unique<Impl>();
  tok->path_ = path;
  const bool json = path.ends_with(".json") || (fs::is_regular_file(path, ec) && looks_like_json(path));
  if (json) {
    tok->impl_->bpe = text::BpeTokenizer::load(path);
    tok->impl_->vocab = tok->impl_->bpe->vocab_size();
    return tok;
  }
  if (is_gguf(path)) {
    const std::string proto = gguf_vocab_proto(path);
    check_spm_pieces(proto, path);
    const auto status = tok->impl_->sp.LoadFromSerializedProto(proto);
    if (!status.ok()) fail(path, ": cannot build a tokenizer from its tokenizer.ggml metadata: ", status_text(status));
    tok->impl_->vocab = tok->impl_->sp.GetPieceSize();
    return tok;
  }
  // Check existence ourselves: a directory or special file would otherwise give a confusing status.
  if (!fs::exists(path, ec)) fail(path, ": cannot load SentencePiece model: file not found");
  if (!fs::is_regular_file(path, ec)) fail(path, ": cannot load SentencePiece model: not a regular file");
  {
    std::ifstream f(path, std::ios::binary);
    check_spm_pieces(std::string(std::istreambuf_iterator<char>(f), {}), path);
  }
  const auto status = tok->impl_->sp.Load(path);
  if (!status.ok()) fail(path, ": cannot load SentencePiece model: ", status_text(status));
  tok->impl_->vocab = tok->impl_->sp.GetPieceSize();
  // A garbage file can occasionally parse as an empty model proto.
  if (tok->impl_->vocab <= 0) fail(path, ": cannot load SentencePiece model: empty vocabulary");
  return tok;
}

Tokenizer::~Tokenizer() = default;

TokenizerKind Tokenizer::kind() const {
  return impl_->bpe ? TokenizerKind::kByteLevelBpe : TokenizerKind::kSentencePiece;
}
int32_t Tokenizer::vocab_size() const { return impl_->vocab; }
int32_t Tokenizer::bos_id() const { return impl_->bpe ? impl_->bpe->bos_id() : impl_->sp.bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->bpe ? impl_->bpe->eos_id() : impl_->sp.eos_id(); }

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  if (impl_->bpe) return impl_->bpe->encode(text, add_bos);
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) fail(path_, ": cannot encode text: ", status_text(status));
  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  if (impl_->bpe) return impl_->bpe->decode(ids);
  for (int32_t id : ids) check_id_in(path_, id, impl_->vocab);
  std::string text;
  const auto status = impl_->sp.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) fail(path_, ": cannot decode ids: ", status_text(status));
  return text;
}

std::string Tokenizer::spm_model_proto() const {
  if (impl_->bpe) fail(path_, ": a byte-level BPE tokenizer has no SentencePiece model");
  return impl_->sp.serialized_model_proto();
}

namespace {

// Byte-fallback pieces are spelled "<0xAB>".
bool is_byte_piece(const std::string& p) {
  return p.size() == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>(p[3])) && std::isxdigit(static_cast<unsigned char>(p[4]));
}

}  // namespace

std::string Tokenizer::piece(int32_t id) const {
  if (impl_->bpe) return impl_->bpe->piece(id);
  check_id_in(path_, id, impl_->vocab);
  return impl_->sp.IdToPiece(id);
}

std::string Tokenizer::token_text(int32_t id) const {
  if (impl_->bpe) return decode({id});
  const std::string p = piece(id);
  if (is_byte_piece(p)) return std::string(1, static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16)));
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += p[i++];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder

namespace {

// Length of a trailing UTF-8 sequence whose lead byte promises more bytes than are present (0 if none).
size_t incomplete_utf8_tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return back < need ? back : 0;
  }
  return 0;
}

// Length of the trailing run of U+FFFD (EF BF BD) characters.
size_t replacement_tail(const std::string& s, size_t end) {
  static const char kFffd[] = "\xEF\xBF\xBD";
  size_t n = end;
  while (n >= 3 && s.compare(n - 3, 3, kFffd) == 0) n -= 3;
  return end - n;
}

}  // namespace

namespace {
// Bytes of `text` (the decode of `ids`) that no appended id can change: everything except a trailing
// incomplete UTF-8 sequence and, while the last id is a byte piece, the U+FFFD characters of a
// byte-fallback run that may still complete into a real character.
size_t stable_prefix(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::string& text) {
  size_t stable = text.size() - incomplete_utf8_tail(text);
  // Byte-level BPE decodes to the exact bytes, never U+FFFD, so only SentencePiece needs the second rule.
  if (!ids.empty() && tok.kind() == TokenizerKind::kSentencePiece && is_byte_piece(tok.piece(ids.back())))
    stable -= replacement_tail(text, stable);
  return stable;
}
}  // namespace

// The context's text counts as shown, except a provisional tail (a prompt that ends inside a byte-fallback
// run, e.g. an earlier generation cut mid-character): starting at decode(context).size() would then cut
// the new text at a wrong offset, possibly mid-character, once the run completes. Starting at the stable
// prefix instead re-emits that tail in its final form. For prompts from encode() both are the same.
StreamDecoder::StreamDecoder(const Tokenizer& tok, std::vector<int32_t> context)
    : tok_(tok), ids_(std::move(context)) {
  emitted_ = stable_prefix(tok_, ids_, tok_.decode(ids_));
}

// The whole sequence is decoded on every push so that SentencePiece's rules (leading space of the first
// piece, byte-fallback runs merged into UTF-8) behave exactly as in a full decode. Appending ids only
// appends text in a full decode, except that a partial byte-fallback run decodes to U+FFFD per byte and
// turns into the real character once the run completes; those bytes are held back. If a decode ever did
// rewrite bytes before emitted_ (not observed with SentencePiece), only the suffix beyond emitted_ is
// returned: text already handed out cannot be taken back.
// Cost: one full decode per push, O(n) per token; negligible next to a forward pass at context lengths.
std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tok_.decode(ids_);
  const size_t stable = stable_prefix(tok_, ids_, text);
  if (stable <= emitted_) return {};
  std::string out = text.substr(emitted_, stable - emitted_);
  emitted_ = stable;
  return out;
}

std::string StreamDecoder::finish() {
  const std::string text = tok_.decode(ids_);
  if (text.size() <= emitted_) return {};
  std::string out = text.substr(emitted_);
  emitted_ = text.size();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Training

void train_tokenizer(const TokenizerTrainOptions& opts, const std::string& out_path) {
  if (opts.inputs.empty()) fail("train_tokenizer: no input files");
  std::string inputs;
  for (const auto& in : opts.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(in, ec)) fail(in, ": tokenizer training input not found");
    // SentencePiece splits --input on commas.
    if (in.find(',') != std::string::npos) fail(in, ": tokenizer training input path must not contain ','");
    if (!inputs.empty()) inputs += ',';
    inputs += in;
  }
  if (opts.vocab_size <= 0) fail("train_tokenizer: vocab size must be positive, got ", opts.vocab_size);
  static const char* kTypes[] = {"bpe", "unigram", "word", "char"};
  if (std::find(std::begin(kTypes), std::end(kTypes), opts.model_type) == std::end(kTypes)) {
    fail("train_tokenizer: unknown model type '", opts.model_type, "' (bpe, unigram, word, char)");
  }
  int threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, 128);  // SentencePiece rejects very large thread counts

  // Train into a temporary prefix next to out_path so the final rename is atomic (same filesystem).
  const fs::path out(out_path);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code dir_ec;
  if (!fs::is_directory(dir, dir_ec)) fail(out_path, ": output directory ", dir.string(), " does not exist");
  const std::string prefix = (dir / (".strata-spm-" + std::to_string(::getpid()) + "-" + out.filename().string()))
                                 .string();

  // llama2.c's train_vocab settings: identity normaliser so decode(encode(x)) == x.
  std::unordered_map<std::string, std::string> args = {
      {"input", inputs},
      {"model_prefix", prefix},
      {"model_type", opts.model_type},
      {"vocab_size", std::to_string(opts.vocab_size)},
      {"byte_fallback", opts.byte_fallback ? "true" : "false"},
      {"character_coverage", "1.0"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},  // decode(encode(x)) == x, spaces included
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"input_format", "text"},
      {"self_test_sample_size", "0"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "1"},  // SentencePiece's INFO output is hundreds of lines
  };
  if (opts.max_sentences > 0) {
    args["input_sentence_size"] = std::to_string(opts.max_sentences);
    args["shuffle_input_sentence"] = "true";
  }

  const std::string tmp_model = prefix + ".model", tmp_vocab = prefix + ".vocab";
  std::error_code ec;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  fs::remove(tmp_vocab, ec);
  if (!status.ok()) {
    fs::remove(tmp_model, ec);
    fail(out_path, ": tokenizer training failed: ", status_text(status));
  }
  fs::rename(tmp_model, out_path, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove(tmp_model, ec2);
    fail(out_path, ": cannot write tokenizer model: ", ec.message());
  }
}

}  // namespace strata
