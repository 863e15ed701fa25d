// The computation shared by the attention mixers (standard GQA attention with
// an optional sliding window, differential attention): the RoPE table, the
// per-sequence KV cache (all positions, or a ring of the last w), and
// softmax(Q Kᵀ / sqrt(d)) V over already rotated rows, with its backward.
// A mixer projects, rotates and hands its rows to the caches; the core maps
// q, k, v rows to head outputs. Heads are described by strides, so one layout
// covers "head h at column h * head_dim" as well as the differential layout's
// interleaved sub-heads.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/module.h"

namespace strata {

// cos/sin of p * theta^(-2i/d) for every position up to max_pos, computed in
// F32 exactly as the reference implementations do (llama2.c, HF). Positions
// past the table (a model run beyond its training length) get the same
// formula computed on the fly.
struct RopeTable {
  int64_t head_dim = 0, half = 0, positions = 0;
  float scale = 1.0f;
  std::vector<float> freq;      // [half]
  std::vector<float> cos, sin;  // [positions, half]

  // One table per (head_dim, theta, scaling, max_pos), shared by all layers.
  static std::shared_ptr<const RopeTable> get(const Config& cfg);
  // rotate_half RoPE on `heads` consecutive heads of head_dim at the start of
  // every row (row r at position pos[r]), in place. inverse rotates by minus
  // the angle: the backward of the rotation.
  void rotate(const kernels::Table& kt, float* x, int64_t rows, int64_t ld, int64_t heads, const int64_t* pos,
              bool inverse = false) const;
  // cos and sin of position p (half values each).
  void angles(int64_t p, float* c, float* s) const;
  // One row of `heads` heads rotated further by `shift` positions (any sign):
  // R(p + shift) x from R(p) x.
  void shift(const kernels::Table& kt, float* x, int64_t heads, int64_t shift) const;
};

// Decode state: the rotated keys and the values of every position so far
// (window 0), or of the last `window` positions in a ring, position p in
// slot p % window, so memory stays constant however long the sequence. Rows
// are kept in the model's dtype: a BF16 model's cache holds BF16 rows (half
// the bytes), and its attention rounds every new key and value row to BF16
// before use, so prefill, decode and recomputation see the same values.
struct KvCache final : StateOf<KvCache> {
  static constexpr const char* kKind = "kv-cache";
  int64_t k_width = 0, v_width = 0;  // values per position
  int64_t window = 0;                // 0: every position
  int64_t len = 0;                   // positions seen
  DType dtype = DType::F32;          // F32 (k, v) or BF16 (kb, vb)
  std::vector<float> k, v;
  std::vector<uint16_t> kb, vb;

  std::string shape() const;
  int64_t bytes() const {
    return static_cast<int64_t>((k.capacity() + v.capacity()) * sizeof(float) +
                                (kb.capacity() + vb.capacity()) * sizeof(uint16_t));
  }
  // Rows of positions len .. len + n - 1 (a ring keeps the last `window`).
  void append(const float* k_rows, const float* v_rows, int64_t n);
  // "k" and "v": [held, width], the positions still held (all, or a ring's
  // last min(len, window)) oldest first, keys after RoPE.
  std::vector<std::pair<std::string, Tensor>> export_tensors() const override;
};

// The dtype of an attention module's KV cache: the model's. BF16 when its
// weights are BF16 (after bind) or, before any weights (counting state sizes
// from a config), when the config says bfloat16; F32 otherwise.
inline DType kv_dtype_for(DType weights) { return weights == DType::BF16 ? DType::BF16 : DType::F32; }
inline DType kv_dtype_for(const Config& cfg) { return cfg.torch_dtype == "bfloat16" ? DType::BF16 : DType::F32; }
inline int64_t kv_bytes(DType d) { return d == DType::BF16 ? 2 : 4; }

// A run of consecutive positions pos .. pos + n - 1 whose key and value rows
// are contiguous (rows of k_ld / v_ld values from k / v, or from kb / vb when
// the run is a BF16 cache's: then k and v are null).
struct KvRun {
  int64_t pos = 0, n = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  const uint16_t* kb = nullptr;
  const uint16_t* vb = nullptr;
};

// One sequence of a call. Query row i sits at position first + i and sees
// the keys of positions max(0, first + i - window + 1) .. first + i (window
// 0: from position 0). `runs` hold those positions in increasing order (a
// ring's wrap and the call's new rows make up to three).
struct AttnSeq {
  const float* q = nullptr;  // first query row
  int64_t n_q = 0;
  int64_t first = 0;
  KvRun runs[3];
  int n_runs = 0;
  float* out = nullptr;  // first output row (forward)
};

// The caches one forward call attends over: the sequences' states, or
// temporaries when the call has none (training keeps them for backward).
class CallCaches {
 public:
  // Checks that each state continues where its sequence starts, has these
  // widths, window and dtype (the module's: kv_dtype), and records every
  // row's absolute position; `who` names the module in errors.
  void begin(const Batch& batch, LayerState* const* states, int64_t k_width, int64_t v_width, int64_t window,
             DType kv_dtype, const std::string& who);
  // The call's new rows (packed like the batch, k_width and v_width floats
  // per row), rounded in place to kv_dtype: full caches take them now; rings
  // attend over them where they are and take them in commit().
  void add(const Batch& batch, float* k_rows, float* v_rows);
  // Sequence s of the call: queries from q (row ld as the layout says), keys
  // and values from column k_col / v_col of the rows, outputs to out.
  AttnSeq seq(size_t s, const Batch& batch, const float* q, float* out, int64_t k_col = 0, int64_t v_col = 0) const;
  // Writes the new rows into the rings (after the attention that read them).
  void commit(const Batch& batch);
  const int64_t* row_pos() const { return row_pos_.data(); }
  void release() { std::vector<KvCache>().swap(temp_); }  // frees the temporaries

 private:
  std::vector<KvCache> temp_;
  std::vector<KvCache*> caches_;
  std::vector<int64_t> row_pos_;
  const float *k_new_ = nullptr, *v_new_ = nullptr;
  DType kv_dtype_ = DType::F32;
  int64_t k_width_ = 0, v_width_ = 0;
};

// Where the heads sit in the rows. Query head h uses KV head
// h / (heads / kv_heads); its q columns start at h * q_step, its output
// columns at h * o_step; KV head g's key columns start at g * k_step and its
// value columns at g * v_step. Gradients use the strides of their operands.
struct AttnLayout {
  int64_t heads = 0, kv_heads = 0;
  int64_t head_dim = 0;  // q/k width; scores are scaled by 1/sqrt(head_dim)
  int64_t v_dim = 0;     // value (and output) width of a head
  int64_t q_ld = 0, q_step = 0;
  int64_t k_ld = 0, k_step = 0;
  int64_t v_ld = 0, v_step = 0;
  int64_t o_ld = 0, o_step = 0;
  int64_t window = 0;  // each query sees this many keys, itself included (0: all earlier ones)
  // Self-Extend: keys at distance >= self_extend.window are scored at the
  // grouped positions, re-rotating the (rotated) rows with `rope`.
  SelfExtend self_extend{};
  const RopeTable* rope = nullptr;
};

struct AttnSeqGrad {
  const float* d_out = nullptr;  // gradient of the outputs (o_ld, o_step)
  float* dq = nullptr;           // written: the query columns of the n_q rows
  float* dk = nullptr;           // added to: rows of positions 0 .. first + n_q - 1
  float* dv = nullptr;           // added to
};

// Blocked by (sequence, KV head, block of query rows): the query heads of a
// KV head are taken together so each key and value row is read once for all
// of them. Every output row gets the bits it would get alone, whatever the
// runs its keys come in, so prefill, chunked prefill and decode agree exactly.
void attention_forward(const Exec& ex, const AttnLayout& L, std::span<const AttnSeq> seqs);

// Per (sequence, KV head) and block of query rows: recomputes the
// probabilities P and, with dP = dO Vᵀ and dS = P ⊙ (dP − rowsum(P ⊙ dP)) /
// sqrt(d): dq = dS K, dk += dSᵀ q, dv += Pᵀ dO, as GEMMs over the keys the
// block sees. Parallel over (sequence, KV head) only, so every dk/dv row has
// one writer and the result is the same for any thread count. Each sequence's
// keys must be one run from position 0 (a training forward's).
void attention_backward(const Exec& ex, const AttnLayout& L, std::span<const AttnSeq> seqs,
                        std::span<const AttnSeqGrad> grads);

// Plain loops, one query row at a time (tests compare the blocked versions
// against these).
void attention_forward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs);
void attention_backward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs,
                                  std::span<const AttnSeqGrad> grads);

// Backward of q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ: dW += dᵀ x for each and
// dx = dq Wq + dk Wk + dv Wv (overwritten). tmp holds rows * dim floats.
void qkv_projection_backward(const Exec& ex, const float* x, int64_t rows, int64_t dim, const float* dq,
                             const Tensor& wq, float* dwq, const float* dk, const Tensor& wk, float* dwk,
                             const float* dv, const Tensor& wv, float* dwv, float* dx, float* tmp);

}  // namespace strata
