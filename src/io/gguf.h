// GGUF files (versions 2 and 3, little-endian), as llama.cpp reads and writes
// them: a header, typed key-value metadata, tensor infos, then the aligned
// tensor data. Reading maps the file and returns views into it; every count,
// length and offset is checked against the file before use, and errors name
// the file and the key or tensor. Writing is atomic.
//
// Shapes: GGUF lists dimensions innermost first (ne[0] = columns); strata's
// Shape is outermost first. GgufTensorInfo::shape is in strata's order.
// docs/formats.md describes the format and the keys strata reads and writes.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "strata/tensor.h"

namespace strata {

// Whether `path` is a readable file that starts with the GGUF magic.
bool is_gguf(const std::string& path);

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars are held widened (integers in i or u, floats in
// f); arrays of scalars or strings in `items` (nested arrays are refused).
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType item_type = GgufType::U32;  // arrays
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<GgufValue> items;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue array(GgufType item_type, std::vector<GgufValue> items);
  bool is_integer() const;
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
};

// ggml's type numbers for the tensor types strata reads.
bool ggml_type_to_dtype(uint32_t ggml_type, DType* out);
uint32_t dtype_to_ggml_type(DType t);
const char* ggml_type_name(uint32_t ggml_type);  // "Q5_0", ... (for errors about types strata does not read)

struct GgufTensorInfo {
  std::string name;
  Shape shape;  // outermost first
  DType dtype;
  uint64_t offset;  // from the start of the data section
  uint64_t nbytes;
};

class GgufFile {
 public:
  // Maps and parses `path`; throws strata::Error "<path>: <key or tensor>: <what>" on anything malformed.
  static GgufFile open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed accessors: a missing key (without a default) or one of another type is an error naming it.
  uint64_t get_uint(const std::string& key) const;
  uint64_t get_uint(const std::string& key, uint64_t dflt) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& dflt) const;
  // An array of `item` values (integers also accepted as any integer type, floats as F32/F64).
  const std::vector<GgufValue>& get_array(const std::string& key, GgufType item) const;

  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // A view of the tensor's data in the mapping (kept alive by the view).
  Tensor tensor(const GgufTensorInfo& info) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_offset_ = 0;
  [[noreturn]] void key_error(const std::string& key, const std::string& what) const;
};

// Builds a GGUF file: metadata in insertion order, then tensors in insertion
// order, data aligned to `general.alignment` (32). write() is atomic.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue v);
  // `t` must stay alive until write(); its rows must be whole blocks.
  void add_tensor(const std::string& name, const Tensor& t);
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
};

}  // namespace strata
