// Writing a model as GGUF (docs/quantization.md): plain Llama models under
// llama.cpp's "llama" architecture (its tensor names, metadata keys and
// interleaved q/k rows, the tokenizer embedded), so llama.cpp loads the file
// alone; every other model under architecture "strata" (config.json in
// `strata.config`, strata's tensor names), which strata reads back exactly.
// Each tensor's type follows the file type the way llama.cpp's quantizer
// chooses it (gguf_tensor_type).
#pragma once
#include <string>

#include "io/safetensors.h"
#include "strata/config.h"
#include "strata/tensor.h"
#include "strata/tokenizer.h"

namespace strata {

// The file types of `strata quantize --type` / `convert --to gguf --type`.
inline constexpr const char* kGgufFileTypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"};
bool is_gguf_file_type(const std::string& type);

// Where a tensor sits, for the choice of its type.
struct TensorRole {
  bool matrix = false;  // read by matmuls (only these are converted or quantized)
  bool head = false;    // the output projection (or the tied embedding that serves as one)
  bool more_bits = false;  // a value or down projection of a layer Q4_K_M gives 6 bits
};
// The type of one tensor of shape `shape` in a file of `type`: non-matrices
// F32; a K-quant whose super-blocks do not fit the rows falls back as
// llama.cpp's does (Q4_K to Q5_0, Q6_K to Q8_0), and rows that are not whole
// blocks of 32 stay F16.
DType gguf_tensor_type(const std::string& type, const Shape& shape, const TensorRole& role);

struct GgufExportResult {
  std::string architecture;       // "llama" or "strata"
  bool tokenizer_embedded = false;
  int64_t bytes = 0;              // tensor data
};

// Writes `tensors` of a model with config `cfg` to `path` as a GGUF of file
// type `type`. `tok` (may be null) is embedded when it is SentencePiece;
// `chat_template` (the model's Jinja template, "" for none) is kept as
// tokenizer.chat_template.
GgufExportResult write_model_gguf(const std::string& path, const Config& cfg, const NamedTensors& tensors,
                                  const Tokenizer* tok, bool add_bos, const std::string& type, const std::string& name,
                                  const std::string& chat_template = "");

}  // namespace strata
