// A SentencePiece model as its vocabulary: the pieces with scores and types,
// and the few trainer/normalizer settings a Llama-style BPE model needs.
// Converts to and from the serialized ModelProto that libsentencepiece loads
// (protobuf wire format, written and read here: only these fields matter),
// so a GGUF file's tokenizer.ggml.* vocabulary becomes a working tokenizer
// and a tokenizer.model becomes GGUF metadata.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata::text {

// SentencePiece's piece types (also GGUF's tokenizer.ggml.token_type values).
enum class PieceType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct SpmVocab {
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  std::vector<Piece> pieces;
  int32_t model_type = 2;  // 1 unigram, 2 BPE
  bool byte_fallback = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
};

std::string serialize_spm(const SpmVocab& v);
// Parses a serialized ModelProto; errors name `source`.
SpmVocab parse_spm(const std::string& bytes, const std::string& source);

}  // namespace strata::text
