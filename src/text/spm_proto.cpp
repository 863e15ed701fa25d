#include "text/spm_proto.h"

#include <cstring>

#include "strata/error.h"

namespace strata::text {

namespace {

// Field numbers of sentencepiece_model.proto.
constexpr int kModelPieces = 1, kModelTrainer = 2, kModelNormalizer = 3;
constexpr int kPieceText = 1, kPieceScore = 2, kPieceType = 3;
constexpr int kTrainerModelType = 3, kTrainerVocabSize = 4, kTrainerByteFallback = 35, kTrainerUnk = 40,
              kTrainerBos = 41, kTrainerEos = 42, kTrainerPad = 43;
constexpr int kNormName = 1, kNormDummyPrefix = 3, kNormExtraWhitespace = 4, kNormEscapeWhitespace = 5;

struct Writer {
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out += static_cast<char>(v);
  }
  void tag(int field, int wire) { varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
  void integer(int field, int64_t v) {
    tag(field, 0);
    varint(static_cast<uint64_t>(v));  // negative int32 values take 10 bytes, as protobuf writes them
  }
  void bytes(int field, const std::string& s) {
    tag(field, 2);
    varint(s.size());
    out += s;
  }
  void f32(int field, float f) {
    tag(field, 5);
    char b[4];
    std::memcpy(b, &f, 4);
    out.append(b, 4);
  }
};

struct Reader {
  const std::string& b;
  size_t i = 0;
  const std::string& source;
  uint64_t varint() {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (i >= b.size()) fail(source, ": SentencePiece model: truncated varint");
      const uint8_t c = static_cast<uint8_t>(b[i++]);
      r |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (c < 0x80) return r;
    }
    fail(source, ": SentencePiece model: varint too long");
  }
  // Calls f(field, wire, value, bytes) for every field of the message.
  template <class F>
  void each(F f) {
    while (i < b.size()) {
      const uint64_t key = varint();
      const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
      uint64_t v = 0;
      std::string s;
      if (wire == 0) {
        v = varint();
      } else if (wire == 1 || wire == 5) {
        const size_t n = wire == 1 ? 8 : 4;
        if (b.size() - i < n) fail(source, ": SentencePiece model: truncated field ", field);
        std::memcpy(&v, b.data() + i, n);
        i += n;
      } else if (wire == 2) {
        const uint64_t n = varint();
        if (n > b.size() - i) fail(source, ": SentencePiece model: field ", field, " runs past the end");
        s = b.substr(i, n);
        i += n;
      } else {
        fail(source, ": SentencePiece model: unsupported wire type ", wire, " (field ", field, ")");
      }
      f(field, wire, v, s);
    }
  }
};

}  // namespace

std::string serialize_spm(const SpmVocab& v) {
  Writer m;
  for (const SpmVocab::Piece& p : v.pieces) {
    Writer w;
    w.bytes(kPieceText, p.text);
    w.f32(kPieceScore, p.score);
    w.integer(kPieceType, static_cast<int32_t>(p.type));
    m.bytes(kModelPieces, w.out);
  }
  Writer t;
  t.integer(kTrainerModelType, v.model_type);
  t.integer(kTrainerVocabSize, static_cast<int64_t>(v.pieces.size()));
  t.integer(kTrainerByteFallback, v.byte_fallback);
  t.integer(kTrainerUnk, v.unk_id);
  t.integer(kTrainerBos, v.bos_id);
  t.integer(kTrainerEos, v.eos_id);
  t.integer(kTrainerPad, v.pad_id);
  m.bytes(kModelTrainer, t.out);
  Writer n;
  n.bytes(kNormName, "identity");
  n.integer(kNormDummyPrefix, v.add_dummy_prefix);
  n.integer(kNormExtraWhitespace, v.remove_extra_whitespaces);
  n.integer(kNormEscapeWhitespace, 1);
  m.bytes(kModelNormalizer, n.out);
  return m.out;
}

SpmVocab parse_spm(const std::string& bytes, const std::string& source) {
  SpmVocab v;
  v.add_dummy_prefix = true;            // proto defaults
  v.remove_extra_whitespaces = true;
  v.model_type = 1;
  v.unk_id = 0, v.bos_id = 1, v.eos_id = 2, v.pad_id = -1;
  Reader top{bytes, 0, source};
  top.each([&](int field, int wire, uint64_t, const std::string& s) {
    if (wire != 2) return;
    Reader r{s, 0, source};
    if (field == kModelPieces) {
      SpmVocab::Piece p;
      r.each([&](int f, int, uint64_t x, const std::string& str) {
        if (f == kPieceText) p.text = str;
        if (f == kPieceScore) std::memcpy(&p.score, &x, 4);
        if (f == kPieceType) p.type = static_cast<PieceType>(static_cast<int32_t>(x));
      });
      v.pieces.push_back(std::move(p));
    } else if (field == kModelTrainer) {
      r.each([&](int f, int, uint64_t x, const std::string&) {
        const auto i = static_cast<int32_t>(static_cast<int64_t>(x));
        if (f == kTrainerModelType) v.model_type = i;
        if (f == kTrainerByteFallback) v.byte_fallback = x != 0;
        if (f == kTrainerUnk) v.unk_id = i;
        if (f == kTrainerBos) v.bos_id = i;
        if (f == kTrainerEos) v.eos_id = i;
        if (f == kTrainerPad) v.pad_id = i;
      });
    } else if (field == kModelNormalizer) {
      r.each([&](int f, int, uint64_t x, const std::string&) {
        if (f == kNormDummyPrefix) v.add_dummy_prefix = x != 0;
        if (f == kNormExtraWhitespace) v.remove_extra_whitespaces = x != 0;
      });
    }
  });
  return v;
}

}  // namespace strata::text
