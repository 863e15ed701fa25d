// Tensor: a shape, a dtype and a pointer. The data is either owned (a heap
// buffer) or a view into a memory-mapped file kept alive by `owner`.
// No autograd: backward passes are written per module.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

// Float types, and GGUF's block-quantized types (src/kernels/quant.h): a row
// of a quantized tensor is a whole number of blocks of dtype_block values.
enum class DType : uint8_t { F32, BF16, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };

inline bool is_quantized(DType t) { return t >= DType::Q8_0; }
size_t dtype_size(DType t);   // bytes per value of a float type (quantized types: fails)
int64_t dtype_block(DType t);  // values per block: 1 for float types, 32 or 256
size_t dtype_block_bytes(DType t);
// Bytes of n values (quantized: n must be a multiple of the block; fails otherwise).
size_t row_bytes(DType t, int64_t n);
std::string_view dtype_name(DType t);           // "F32", "BF16", "F16", "Q8_0", ... (safetensors / GGUF spelling)
bool parse_dtype(std::string_view s, DType* out);  // accepts those names and lower case

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2048, 64]"
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // keeps the buffer or the mapping alive
  bool mapped = false;          // a view into a read-only file mapping

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return row_bytes(dtype, numel()); }
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i < 0 ? i + (int)shape.size() : i)); }
  float* f32() const { return static_cast<float*>(data); }
  uint16_t* u16() const { return static_cast<uint16_t*>(data); }

  // A zero-filled, 64-byte aligned, owned tensor.
  static Tensor alloc(DType dtype, Shape shape);
  // An owned copy in anonymous memory backed by transparent huge pages where
  // the kernel allows. With release_source and a mapped source, the source
  // pages are dropped from this process as they are copied (the file stays in
  // the page cache), so moving weights never holds two copies.
  Tensor relocate(bool release_source) const;
  // A copy converted to `dtype` (F16/BF16 -> F32 is exact; F32 -> BF16 rounds to nearest even;
  // quantized types dequantize exactly and quantize with the reference quantizers).
  Tensor to(DType dtype) const;
};

// Scalar conversions (exact for widening; round-to-nearest-even for narrowing).
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts a contiguous run of `n` values of `src_type` to float (quantized:
// n a multiple of the block).
void to_f32(DType src_type, const void* src, float* dst, int64_t n);

}  // namespace strata
