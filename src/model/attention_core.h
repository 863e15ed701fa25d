// The computation shared by the attention mixers (standard GQA attention,
// differential attention): the RoPE table, the per-sequence KV cache, and
// softmax(Q Kᵀ / sqrt(d)) V over already rotated rows, with its backward.
// A mixer projects, rotates and appends to the caches; the core maps q, k, v
// rows to head outputs. Heads are described by strides, so one layout covers
// "head h at column h * head_dim" as well as the differential layout's
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
// F32 exactly as the reference implementations do (llama2.c, HF).
struct RopeTable {
  int64_t head_dim = 0, half = 0;
  std::vector<float> cos, sin;  // [max_pos, half]

  // One table per (head_dim, theta, scaling, max_pos), shared by all layers.
  static std::shared_ptr<const RopeTable> get(const Config& cfg);
  // rotate_half RoPE on `heads` consecutive heads of head_dim at the start of
  // every row (row r at position pos[r]), in place. inverse rotates by minus
  // the angle: the backward of the rotation.
  void rotate(float* x, int64_t rows, int64_t ld, int64_t heads, const int64_t* pos, bool inverse = false) const;
};

// Decode state: the rotated keys and the values of every position so far.
struct KvCache final : LayerState {
  int64_t k_width = 0, v_width = 0;  // floats per position
  int64_t len = 0;                   // positions held
  std::vector<float> k, v;

  std::unique_ptr<LayerState> clone() const override { return std::make_unique<KvCache>(*this); }
  void append(const float* k_rows, const float* v_rows, int64_t n);
};

// The caches one forward call attends over: the sequences' states, or
// temporaries when the call has none (training keeps them for backward).
class CallCaches {
 public:
  // Checks that each state continues where its sequence starts and records
  // every row's absolute position; `who` names the module in errors.
  void begin(const Batch& batch, LayerState* const* states, int64_t k_width, int64_t v_width, const std::string& who);
  // Appends every sequence's new rows (packed like the batch, k_width and v_width floats per row).
  void append(const Batch& batch, const float* k_rows, const float* v_rows);
  KvCache& operator[](size_t seq) { return *caches_[seq]; }
  const int64_t* row_pos() const { return row_pos_.data(); }
  void release() { std::vector<KvCache>().swap(temp_); }  // frees the temporaries

 private:
  std::vector<KvCache> temp_;
  std::vector<KvCache*> caches_;
  std::vector<int64_t> row_pos_;
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
};

// One sequence of a call. Query row i sits at position first + i and sees the
// keys of positions 0 .. first + i.
struct AttnSeq {
  const float* q = nullptr;  // first query row
  int64_t n_q = 0;
  int64_t first = 0;
  const float* k = nullptr;  // key row of position 0
  const float* v = nullptr;  // value row of position 0
  float* out = nullptr;      // first output row (forward)
};

struct AttnSeqGrad {
  const float* d_out = nullptr;  // gradient of the outputs (o_ld, o_step)
  float* dq = nullptr;           // written: the query columns of the n_q rows
  float* dk = nullptr;           // added to: rows of positions 0 .. first + n_q - 1
  float* dv = nullptr;           // added to
};

// Blocked by (sequence, KV head, block of query rows): the query heads of a
// KV head are taken together so each key and value row is read once for all
// of them. Every output row gets the bits it would get alone, so prefill,
// chunked prefill and decode agree exactly.
void attention_forward(const AttnLayout& L, std::span<const AttnSeq> seqs);

// Per (sequence, KV head) and block of query rows: recomputes the
// probabilities P and, with dP = dO Vᵀ and dS = P ⊙ (dP − rowsum(P ⊙ dP)) /
// sqrt(d): dq = dS K, dk += dSᵀ q, dv += Pᵀ dO, all as outer-product
// accumulations (the head dimension is short, so no horizontal sums; K and V
// are transposed once per item for the two score-shaped products). Parallel
// over (sequence, KV head) only, so every dk/dv row has one writer and the
// result is the same for any thread count.
void attention_backward(const AttnLayout& L, std::span<const AttnSeq> seqs, std::span<const AttnSeqGrad> grads);

// Plain loops, one query row at a time (tests compare the blocked versions
// against these).
void attention_forward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs);
void attention_backward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs,
                                  std::span<const AttnSeqGrad> grads);

// Backward of q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ: dW += dᵀ x for each and
// dx = dq Wq + dk Wk + dv Wv (overwritten). tmp holds rows * dim floats.
void qkv_projection_backward(const float* x, int64_t rows, int64_t dim, const float* dq, const Tensor& wq, float* dwq,
                             const float* dk, const Tensor& wk, float* dwk, const float* dv, const Tensor& wv,
                             float* dwv, float* dx, float* tmp);

}  // namespace strata
