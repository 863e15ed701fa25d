#include "io/gguf.h"

#include <cstring>
#include <fstream>

#include "io/atomic_writer.h"
#include "strata/error.h"

namespace strata {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kMaxDims = 4;         // ggml's GGML_MAX_DIMS
constexpr uint64_t kMaxArrayItems = uint64_t{1} << 24;

struct GgmlTypeName {
  uint32_t id;
  const char* name;
};
// ggml's type numbers (a few of those strata does not read, for clear errors).
constexpr GgmlTypeName kGgmlTypes[] = {
    {0, "F32"},   {1, "F16"},   {2, "Q4_0"},  {3, "Q4_1"},  {6, "Q5_0"},   {7, "Q5_1"},   {8, "Q8_0"},   {9, "Q8_1"},
    {10, "Q2_K"}, {11, "Q3_K"}, {12, "Q4_K"}, {13, "Q5_K"}, {14, "Q6_K"},  {15, "Q8_K"},  {16, "IQ2_XXS"},
    {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"}, {22, "IQ2_S"}, {23, "IQ4_XS"},
    {24, "I8"},   {25, "I16"},  {26, "I32"},  {27, "I64"},  {28, "F64"},   {29, "IQ1_M"}, {30, "BF16"},  {34, "TQ1_0"},
    {35, "TQ2_0"}, {39, "MXFP4"}};

constexpr struct {
  DType dtype;
  uint32_t ggml;
} kDTypeGgml[] = {{DType::F32, 0},  {DType::F16, 1},  {DType::BF16, 30}, {DType::Q8_0, 8}, {DType::Q4_0, 2},
                  {DType::Q4_1, 3}, {DType::Q5_0, 6}, {DType::Q5_1, 7}, {DType::Q4_K, 12}, {DType::Q5_K, 13}, {DType::Q6_K, 14}};

// Bounds-checked little-endian reads over the mapping.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return n_ - pos_; }

  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " (string length)");
    if (len > left())
      fail(path_, ": ", what, ": string of ", len, " bytes runs past the end of the file (", left(), " bytes left)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  void need(uint64_t n, const std::string& what) {
    if (n > left()) fail(path_, ": ", what, ": the file ends at byte ", n_, " (truncated?)");
  }
  const uint8_t* p_;
  uint64_t n_, pos_ = 0;
  const std::string& path_;
};

uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::String: return 8;  // at least its length
    default: return 0;
  }
}

GgufValue read_scalar(Cursor& c, GgufType t, const std::string& what) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufType::U8: v.u = c.read<uint8_t>(what); v.i = static_cast<int64_t>(v.u); break;
    case GgufType::I8: v.i = c.read<int8_t>(what); v.u = static_cast<uint64_t>(v.i); break;
    case GgufType::U16: v.u = c.read<uint16_t>(what); v.i = static_cast<int64_t>(v.u); break;
    case GgufType::I16: v.i = c.read<int16_t>(what); v.u = static_cast<uint64_t>(v.i); break;
    case GgufType::U32: v.u = c.read<uint32_t>(what); v.i = static_cast<int64_t>(v.u); break;
    case GgufType::I32: v.i = c.read<int32_t>(what); v.u = static_cast<uint64_t>(v.i); break;
    case GgufType::U64: v.u = c.read<uint64_t>(what); v.i = static_cast<int64_t>(v.u); break;
    case GgufType::I64: v.i = c.read<int64_t>(what); v.u = static_cast<uint64_t>(v.i); break;
    case GgufType::F32: v.f = c.read<float>(what); break;
    case GgufType::F64: v.f = c.read<double>(what); break;
    case GgufType::Bool: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail("", what, ": boolean byte is ", int(b), ", not 0 or 1");
      v.u = b;
      break;
    }
    case GgufType::String: v.s = c.string(what); break;
    default: break;
  }
  return v;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

}  // namespace

bool is_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64",
                                "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : "?";
}

GgufValue GgufValue::u32(uint32_t v) { GgufValue r; r.type = GgufType::U32; r.u = v; r.i = v; return r; }
GgufValue GgufValue::i32(int32_t v) { GgufValue r; r.type = GgufType::I32; r.i = v; r.u = static_cast<uint64_t>(v); return r; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue r; r.type = GgufType::U64; r.u = v; r.i = static_cast<int64_t>(v); return r; }
GgufValue GgufValue::f32(float v) { GgufValue r; r.type = GgufType::F32; r.f = v; return r; }
GgufValue GgufValue::boolean(bool v) { GgufValue r; r.type = GgufType::Bool; r.u = v; return r; }
GgufValue GgufValue::str(std::string v) { GgufValue r; r.type = GgufType::String; r.s = std::move(v); return r; }
GgufValue GgufValue::array(GgufType item_type, std::vector<GgufValue> items) {
  GgufValue r;
  r.type = GgufType::Array;
  r.item_type = item_type;
  r.items = std::move(items);
  return r;
}
bool GgufValue::is_integer() const {
  return type != GgufType::F32 && type != GgufType::F64 && type != GgufType::Bool && type != GgufType::String &&
         type != GgufType::Array;
}

bool ggml_type_to_dtype(uint32_t ggml_type, DType* out) {
  for (const auto& m : kDTypeGgml)
    if (m.ggml == ggml_type) {
      *out = m.dtype;
      return true;
    }
  return false;
}

uint32_t dtype_to_ggml_type(DType t) {
  for (const auto& m : kDTypeGgml)
    if (m.dtype == t) return m.ggml;
  fail("no GGUF type for ", dtype_name(t));
}

const char* ggml_type_name(uint32_t ggml_type) {
  for (const auto& t : kGgmlTypes)
    if (t.id == ggml_type) return t.name;
  return "unknown";
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  g.file_ = MappedFile::open(path);
  Cursor c(g.file_->data(), g.file_->size(), g.path_);
  if (g.file_->size() < 4 || c.read<uint32_t>("magic") != kMagic) fail(path, ": not a GGUF file (no 'GGUF' magic)");
  g.version_ = c.read<uint32_t>("version");
  if (g.version_ != 2 && g.version_ != 3)
    fail(path, ": GGUF version ", g.version_, " is not supported (versions 2 and 3 are)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count"), n_kv = c.read<uint64_t>("metadata count");
  // Every key-value pair takes at least 12 bytes and every tensor info 24: counts the file cannot hold are refused
  // before anything is allocated for them.
  if (n_kv > c.left() / 12) fail(path, ": metadata count ", n_kv, " is more than the file can hold");
  if (n_tensors > c.left() / 24) fail(path, ": tensor count ", n_tensors, " is more than the file can hold");

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key = c.string(cat("metadata key #", k));
    const std::string where = cat("key '", key, "'");
    const uint32_t t = c.read<uint32_t>(where + " (type)");
    if (!valid_type(t)) fail(path, ": ", where, ": unknown value type ", t);
    GgufValue v;
    if (static_cast<GgufType>(t) == GgufType::Array) {
      const uint32_t it = c.read<uint32_t>(where + " (array item type)");
      if (!valid_type(it) || static_cast<GgufType>(it) == GgufType::Array)
        fail(path, ": ", where, ": arrays of type ", it, " are not supported");
      const uint64_t n = c.read<uint64_t>(where + " (array length)");
      if (n > c.left() / scalar_size(static_cast<GgufType>(it)))
        fail(path, ": ", where, ": array of ", n, " items is longer than the rest of the file");
      // Metadata arrays are vocabularies and merges (a few hundred thousand items); each item is held
      // as a value here, so a count in the billions is refused rather than allocated.
      if (n > kMaxArrayItems) fail(path, ": ", where, ": array of ", n, " items (at most ", kMaxArrayItems, " supported)");
      v.type = GgufType::Array;
      v.item_type = static_cast<GgufType>(it);
      v.items.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) v.items.push_back(read_scalar(c, v.item_type, cat(path, ": ", where, "[", i, "]")));
    } else {
      v = read_scalar(c, static_cast<GgufType>(t), cat(path, ": ", where));
    }
    if (!g.kv_index_.emplace(key, g.kv_.size()).second) fail(path, ": ", where, ": duplicate key");
    g.kv_.emplace_back(key, std::move(v));
  }
  if (const GgufValue* a = g.find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > (1u << 20))
      g.key_error("general.alignment", "must be a power of two (got " + std::to_string(a->u) + ")");
    g.alignment_ = a->u;
  }

  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    ti.name = c.string(cat("tensor info #", k, " (name)"));
    const std::string where = cat("tensor '", ti.name, "'");
    const uint32_t n_dims = c.read<uint32_t>(where + " (dimension count)");
    // (0 dimensions: a scalar, which strata's own files hold; llama.cpp's never do.)
    if (n_dims > kMaxDims) fail(path, ": ", where, ": ", n_dims, " dimensions (at most 4 supported)");
    std::vector<uint64_t> ne(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      ne[d] = c.read<uint64_t>(where + " (dimensions)");
      if (ne[d] == 0 || ne[d] > (uint64_t{1} << 40) || __builtin_mul_overflow(numel, ne[d], &numel) ||
          numel > (uint64_t{1} << 40))
        fail(path, ": ", where, ": dimension ", d, " of ", ne[d], " is empty or too large");
    }
    const uint32_t type = c.read<uint32_t>(where + " (type)");
    if (!ggml_type_to_dtype(type, &ti.dtype))
      fail(path, ": ", where, ": tensor type ", ggml_type_name(type), " (", type,
           ") is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K are)");
    const uint64_t cols = n_dims == 0 ? 1 : ne[0];
    if (cols % static_cast<uint64_t>(dtype_block(ti.dtype)) != 0)
      fail(path, ": ", where, ": rows of ", cols, " values are not whole ", dtype_name(ti.dtype), " blocks of ",
           dtype_block(ti.dtype));
    ti.offset = c.read<uint64_t>(where + " (offset)");
    if (ti.offset % g.alignment_ != 0)
      fail(path, ": ", where, ": data offset ", ti.offset, " is not a multiple of the alignment ", g.alignment_);
    for (uint32_t d = n_dims; d-- > 0;) ti.shape.push_back(static_cast<int64_t>(ne[d]));
    ti.nbytes = row_bytes(ti.dtype, static_cast<int64_t>(numel));
    if (!g.tensor_index_.emplace(ti.name, g.tensors_.size()).second) fail(path, ": ", where, ": duplicate tensor name");
    g.tensors_.push_back(std::move(ti));
  }
  g.data_offset_ = (c.pos() + g.alignment_ - 1) / g.alignment_ * g.alignment_;
  const uint64_t size = g.file_->size();
  const uint64_t data_size = g.data_offset_ <= size ? size - g.data_offset_ : 0;
  for (const GgufTensorInfo& ti : g.tensors_) {
    if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
      fail(path, ": tensor '", ti.name, "': data [", ti.offset, ", ", ti.offset + ti.nbytes,
           ") runs past the end of the file (", data_size, " bytes of tensor data; truncated?)");
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

void GgufFile::key_error(const std::string& key, const std::string& what) const {
  fail(path_, ": key '", key, "': ", what);
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(key, "missing");
  if (!v->is_integer()) key_error(key, cat("expected an integer, found ", gguf_type_name(v->type)));
  if (v->i < 0 && v->type != GgufType::U64) key_error(key, cat("expected a non-negative integer, found ", v->i));
  return v->u;
}
uint64_t GgufFile::get_uint(const std::string& key, uint64_t dflt) const { return has(key) ? get_uint(key) : dflt; }

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(key, "missing");
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  key_error(key, cat("expected a number, found ", gguf_type_name(v->type)));
}
double GgufFile::get_float(const std::string& key, double dflt) const { return has(key) ? get_float(key) : dflt; }

bool GgufFile::get_bool(const std::string& key, bool dflt) const {
  const GgufValue* v = find(key);
  if (!v) return dflt;
  if (v->type != GgufType::Bool) key_error(key, cat("expected a bool, found ", gguf_type_name(v->type)));
  return v->u != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(key, "missing");
  if (v->type != GgufType::String) key_error(key, cat("expected a string, found ", gguf_type_name(v->type)));
  return v->s;
}
std::string GgufFile::get_string(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}

const std::vector<GgufValue>& GgufFile::get_array(const std::string& key, GgufType item) const {
  const GgufValue* v = find(key);
  if (!v) key_error(key, "missing");
  if (v->type != GgufType::Array) key_error(key, cat("expected an array, found ", gguf_type_name(v->type)));
  GgufValue probe;
  probe.type = v->item_type;
  const bool ok = v->item_type == item || (item == GgufType::I32 && probe.is_integer()) ||
                  (item == GgufType::F32 && probe.is_float());
  if (!ok && !v->items.empty())
    key_error(key, cat("expected an array of ", gguf_type_name(item), ", found one of ", gguf_type_name(v->item_type)));
  return v->items;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GgufFile::tensor(const GgufTensorInfo& info) const {
  Tensor t;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.data = const_cast<uint8_t*>(file_->data() + data_offset_ + info.offset);
  t.owner = std::shared_ptr<void>(file_, t.data);
  t.mapped = true;
  return t;
}

// --- writing -------------------------------------------------------------------

void GgufWriter::set(const std::string& key, GgufValue v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, const Tensor& t) {
  if (t.shape.size() > kMaxDims) fail("GGUF tensor '", name, "': shape ", shape_str(t.shape), " has more than 4 dimensions");
  for (const auto& [n, _] : tensors_)
    if (n == name) fail("GGUF tensor '", name, "': duplicate name");
  (void)dtype_to_ggml_type(t.dtype);
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  if (cols % dtype_block(t.dtype) != 0)
    fail("GGUF tensor '", name, "': rows of ", cols, " values are not whole ", dtype_name(t.dtype), " blocks");
  tensors_.emplace_back(name, t);
}

namespace {

struct Buffer {
  std::string b;
  template <class T>
  void put(T v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
  }
  void value(const GgufValue& v, GgufType t) {
    switch (t) {
      case GgufType::U8: put<uint8_t>(static_cast<uint8_t>(v.u)); break;
      case GgufType::I8: put<int8_t>(static_cast<int8_t>(v.i)); break;
      case GgufType::U16: put<uint16_t>(static_cast<uint16_t>(v.u)); break;
      case GgufType::I16: put<int16_t>(static_cast<int16_t>(v.i)); break;
      case GgufType::U32: put<uint32_t>(static_cast<uint32_t>(v.u)); break;
      case GgufType::I32: put<int32_t>(static_cast<int32_t>(v.i)); break;
      case GgufType::U64: put<uint64_t>(v.u); break;
      case GgufType::I64: put<int64_t>(v.i); break;
      case GgufType::F32: put<float>(static_cast<float>(v.f)); break;
      case GgufType::F64: put<double>(v.f); break;
      case GgufType::Bool: put<uint8_t>(v.u ? 1 : 0); break;
      case GgufType::String: str(v.s); break;
      case GgufType::Array:
        put<uint32_t>(static_cast<uint32_t>(v.item_type));
        put<uint64_t>(v.items.size());
        for (const GgufValue& item : v.items) value(item, v.item_type);
        break;
    }
  }
};

}  // namespace

void GgufWriter::write(const std::string& path) const {
  uint64_t alignment = 32;
  for (const auto& [k, v] : kv_)
    if (k == "general.alignment") alignment = v.u;
  Buffer h;
  h.put<uint32_t>(kMagic);
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    h.str(k);
    h.put<uint32_t>(static_cast<uint32_t>(v.type));
    h.value(v, v.type);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    h.str(name);
    h.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (size_t d = t.shape.size(); d-- > 0;) h.put<uint64_t>(static_cast<uint64_t>(t.shape[d]));
    h.put<uint32_t>(dtype_to_ggml_type(t.dtype));
    h.put<uint64_t>(offset);
    offset = (offset + t.nbytes() + alignment - 1) / alignment * alignment;
  }
  const std::string zeros(alignment, '\0');
  h.b.append(zeros.data(), (alignment - h.b.size() % alignment) % alignment);
  AtomicWriter w(path);
  w.write(h.b.data(), h.b.size());
  for (const auto& [name, t] : tensors_) {
    w.write(t.data, t.nbytes());
    w.write(zeros.data(), (alignment - t.nbytes() % alignment) % alignment);
  }
  w.commit();
}

}  // namespace strata
