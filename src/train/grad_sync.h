// Data-parallel gradient averaging over the ranks of a run (docs/distributed.md).
//
// The trainable parameters are laid out in buckets of about `bucket_bytes`
// (PyTorch DDP's 25 MB), in the order their gradients become final in the
// backward (head and final norm, the last block, ..., the first block, the
// embeddings), so a bucket can be reduced while the backward of earlier
// layers still runs. Buckets and the order of collectives are the same on
// every rank (Horovod's deterministic fusion), which MPI requires.
//
// Without ZeRO each bucket is all-reduced (sum; every micro-batch's gradient
// is already scaled by 1 / micro-batches of the step over all ranks, so the
// sum is the mean) and every rank holds the same averaged gradient.
// With ZeRO-1 each bucket is split into one contiguous slice per rank and
// reduce-scattered: rank r receives the summed gradient of its slice only,
// keeps AdamW moments for that slice only (slices()), updates those weights,
// and gather_weights() all-gathers the updated weights.
#pragma once
#include <cstdint>
#include <vector>

#include "train/comm.h"
#include "train/optimizer.h"

namespace strata {

struct GradSyncOptions {
  int64_t bucket_bytes = int64_t{25} << 20;
  bool zero = false;     // ZeRO-1: shard the optimizer state
  bool overlap = true;   // reduce buckets during the backward (else after it)
};

class GradSync {
 public:
  // `params` as the optimizer gets them; `trainable[i]` says which are reduced;
  // `stages[i]` is Model::grad_stages()'s stage of parameter i, `num_blocks` the
  // model's (stage num_blocks comes first in the backward, -1 last).
  GradSync(dist::Comm& comm, const std::vector<TrainParam>& params, const std::vector<bool>& trainable,
           const std::vector<int>& stages, int num_blocks, const GradSyncOptions& opts);

  bool zero() const { return opts_.zero; }
  // This rank's slice of every parameter (ZeRO-1), for AdamW; whole
  // parameters without ZeRO.
  std::vector<ParamSlice> slices() const;
  // Per rank, the size of parameter i's slice: the slices of a parameter are
  // consecutive in rank order.
  std::vector<int64_t> slice_counts(size_t i) const;

  // Before the backward of a step's last micro-batch (the one whose stage
  // reports may start reductions), and the model's backward hook.
  void arm();
  void on_stage(int stage);
  // After the step's last micro-batch: starts the buckets not started yet and
  // waits for all. Then each rank's gradients (its slices, with ZeRO) are
  // the averages over ranks.
  void finish();
  // ZeRO-1, after the optimizer step: every rank gets every updated weight.
  void gather_weights();

  // Seconds this step spent blocked on communication in finish() (what the
  // backward did not hide), and in gather_weights().
  double wait_seconds() const { return wait_s_; }
  double gather_seconds() const { return gather_s_; }
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  int64_t bytes_per_step() const;  // gradient bytes each rank contributes per step

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offset;  // of each parameter in the bucket
    int64_t n = 0;
    int ready_at = 0;             // the backward position after which every gradient is final
    std::vector<int64_t> counts;  // ZeRO: each rank's slice of the bucket
    int64_t first = 0;            // ZeRO: this rank's slice start
    std::vector<float> flat;      // packed gradients (unused for a one-parameter bucket)
    std::vector<float> mine;      // ZeRO: this rank's reduced slice
    int handle = -1;
  };
  int position(int stage) const { return stage < 0 ? num_blocks_ + 1 : num_blocks_ - stage; }
  float* grads_of(Bucket& b);
  void start(Bucket& b);

  dist::Comm& comm_;
  std::vector<TrainParam> params_;
  GradSyncOptions opts_;
  int num_blocks_ = 0;
  std::vector<Bucket> buckets_;
  bool armed_ = false;
  int done_position_ = -1;
  double wait_s_ = 0, gather_s_ = 0;
};

// ---- the training state between ranks ----

// Rank 0's tensors (the model's weights) into every rank's.
void broadcast_tensors(const dist::Comm& comm, const NamedTensors& tensors);
// Rank 0's whole-parameter moments (`whole`, read on rank 0 only) into every
// rank's optimizer (its slice, with ZeRO-1), one parameter at a time.
void broadcast_moments(const dist::Comm& comm, AdamW& opt, const WeightSet* whole);
// The whole moments on rank 0 (AdamW::state()'s tensors), gathered from the
// ranks' slices (ZeRO-1) or taken from rank 0's own optimizer; empty on the
// other ranks. For a checkpoint that any number of ranks can resume.
NamedTensors gather_moments(const dist::Comm& comm, const AdamW& opt, const GradSync* sync);
// Fails when the ranks' weights differ (a hash of every tensor's bytes):
// data-parallel ranks must stay identical, and a checkpoint is only rank 0's.
void check_same_weights(const dist::Comm& comm, const NamedTensors& tensors);
// Rank 0's string on every rank.
std::string broadcast_string(const dist::Comm& comm, std::string s);

}  // namespace strata
