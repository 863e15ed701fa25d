#include "strata/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>
#include <unistd.h>

#include "core/parallel.h"
#include "kernels/quant.h"
#include "strata/error.h"

namespace strata {

namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  const char* lower;
  int64_t block;
  size_t block_bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", "f32", 1, 4},
    {DType::BF16, "BF16", "bf16", 1, 2},
    {DType::F16, "F16", "f16", 1, 2},
    {DType::Q8_0, "Q8_0", "q8_0", quant::kBlock, sizeof(quant::BlockQ8_0)},
    {DType::Q4_0, "Q4_0", "q4_0", quant::kBlock, sizeof(quant::BlockQ4_0)},
    {DType::Q4_1, "Q4_1", "q4_1", quant::kBlock, sizeof(quant::BlockQ4_1)},
    {DType::Q5_0, "Q5_0", "q5_0", quant::kBlock, sizeof(quant::BlockQ5_0)},
    {DType::Q5_1, "Q5_1", "q5_1", quant::kBlock, sizeof(quant::BlockQ5_1)},
    {DType::Q4_K, "Q4_K", "q4_k", quant::kSuper, sizeof(quant::BlockQ4_K)},
    {DType::Q5_K, "Q5_K", "q5_k", quant::kSuper, sizeof(quant::BlockQ5_K)},
    {DType::Q6_K, "Q6_K", "q6_k", quant::kSuper, sizeof(quant::BlockQ6_K)},
};

// Bytes rounded up to whole pages (at least one).
size_t page_round(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return bytes == 0 ? page : (bytes + page - 1) / page * page;
}

const DTypeInfo& info(DType t) {
  const auto i = static_cast<size_t>(t);
  if (i >= std::size(kDTypes)) fail("unknown dtype code ", i);
  return kDTypes[i];
}

}  // namespace

size_t dtype_size(DType t) {
  if (is_quantized(t)) fail("dtype_size: ", dtype_name(t), " is a block type (use row_bytes)");
  return info(t).block_bytes;
}

int64_t dtype_block(DType t) { return info(t).block; }
size_t dtype_block_bytes(DType t) { return info(t).block_bytes; }

size_t row_bytes(DType t, int64_t n) {
  const DTypeInfo& d = info(t);
  if (n % d.block != 0) fail(d.name, ": ", n, " values are not a whole number of blocks of ", d.block);
  return static_cast<size_t>(n / d.block) * d.block_bytes;
}

std::string_view dtype_name(DType t) {
  const auto i = static_cast<size_t>(t);
  return i < std::size(kDTypes) ? kDTypes[i].name : "?";
}

bool parse_dtype(std::string_view s, DType* out) {
  for (const DTypeInfo& d : kDTypes) {
    if (s == d.name || s == d.lower) {
      *out = d.type;
      return true;
    }
  }
  if (s == "float32") { *out = DType::F32; return true; }
  if (s == "bfloat16") { *out = DType::BF16; return true; }
  if (s == "float16") { *out = DType::F16; return true; }
  return false;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::alloc(DType dtype, Shape shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (int64_t d : t.shape)
    if (d < 0) fail("negative dimension in shape ", shape_str(t.shape));
  size_t bytes = (t.nbytes() + 63) / 64 * 64;
  // Large tensors (weights of a model made in memory, big buffers) get
  // zeroed anonymous memory with the huge-page hint, as relocated weights
  // do: streaming them then costs fewer TLB misses.
  // (Not under AddressSanitizer, whose heap guards catch overruns.)
#if defined(__SANITIZE_ADDRESS__)
  constexpr bool kHugeTensors = false;
#else
  constexpr bool kHugeTensors = true;
#endif
  const size_t huge = size_t{2} << 20;
  if (kHugeTensors && bytes >= 2 * huge) {
    // Whole pages, not whole huge pages: the kernel backs the 2 MB-aligned
    // stretches with huge pages and the tail with small ones, so a tensor
    // never holds up to 2 MB it does not use.
    const size_t len = page_round(bytes);
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes for a tensor of shape ", shape_str(t.shape));
    madvise(m, len, MADV_HUGEPAGE);  // a hint: fine if refused
    t.data = m;
    t.owner = std::shared_ptr<void>(m, [len](void* q) { munmap(q, len); });
    return t;
  }
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) fail("out of memory allocating ", bytes, " bytes for a tensor of shape ", shape_str(t.shape));
  std::memset(p, 0, bytes ? bytes : 64);
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::relocate(bool release_source) const {
  const size_t bytes = nbytes();
  const size_t len = page_round(bytes);  // (see alloc)
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("out of memory relocating a tensor of ", bytes, " bytes");
  madvise(p, len, MADV_HUGEPAGE);  // a hint: fine if refused
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [len](void* q) { munmap(q, len); });
  // Copy in slices, releasing each slice of the source once copied.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), slice = size_t{64} << 20;
  const auto src = reinterpret_cast<uintptr_t>(data);
  for (size_t off = 0; off < bytes; off += slice) {
    const size_t n = bytes - off < slice ? bytes - off : slice;
    std::memcpy(static_cast<char*>(p) + off, static_cast<const char*>(data) + off, n);
    if (release_source && mapped) {
      // Only whole pages inside this tensor: neighbours may share the edge pages.
      const uintptr_t b = (src + off + page - 1) / page * page, e = (src + off + n) / page * page;
      if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
    }
  }
  return t;
}

Tensor Tensor::to(DType target) const {
  Tensor out = alloc(target, shape);
  const int64_t n = numel();
  if (target == dtype) {
    std::memcpy(out.data, data, nbytes());
  } else if (target == DType::F32) {
    to_f32(dtype, data, out.f32(), n);
  } else if (is_quantized(target)) {
    const int64_t cols = shape.empty() ? 1 : shape.back();
    if (cols % dtype_block(target) != 0)
      fail("cannot convert a tensor of shape ", shape_str(shape), " to ", dtype_name(target), ": rows of ", cols,
           " values are not whole blocks of ", dtype_block(target));
    // Rows are quantized independently (the reference quantizers are slow: K-quants
    // fit every sub-block), so they are spread over the threads.
    const size_t in_row = row_bytes(dtype, cols), out_row = row_bytes(target, cols);
    parallel_for(cols > 0 ? n / cols : 0, 16, [&](int64_t b, int64_t e) {
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = b; r < e; ++r) {
        to_f32(dtype, static_cast<const char*>(data) + r * in_row, row.data(), cols);
        quant::quantize_row(target, row.data(), static_cast<char*>(out.data) + r * out_row, cols);
      }
    });
  } else {
    std::vector<float> tmp(static_cast<size_t>(n));
    to_f32(dtype, data, tmp.data(), n);
    uint16_t* o = out.u16();
    for (int64_t i = 0; i < n; ++i) o[i] = target == DType::BF16 ? f32_to_bf16(tmp[i]) : f32_to_f16(tmp[i]);
  }
  return out;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
    return sign ? -f : f;
  }
  uint32_t u = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112u) << 23) | (mant << 13));
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // overflow rounds to infinity
  if (a < 6.103515625e-05f) {               // subnormal range: quantise to 2^-24 steps
    const float q = std::nearbyint(a * 16777216.0f);
    return sign | static_cast<uint16_t>(q);
  }
  uint32_t v = u & 0x7fffffffu;
  v += 0xfffu + ((v >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  return sign | static_cast<uint16_t>(((v >> 23) - 112u) << 10 | ((v >> 13) & 0x3ffu));
}

void to_f32(DType src_type, const void* src, float* dst, int64_t n) {
  switch (src_type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    default: quant::dequantize_row(src_type, src, dst, n); return;
  }
}

}  // namespace strata
