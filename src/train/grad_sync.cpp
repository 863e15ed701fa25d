#include "train/grad_sync.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "strata/error.h"

namespace strata {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// [lo, hi) ∩ [a, b), as an offset range relative to lo (empty: lo == hi).
std::pair<int64_t, int64_t> overlap(int64_t lo, int64_t hi, int64_t a, int64_t b) {
  const int64_t s = std::max(lo, a), e = std::min(hi, b);
  return s < e ? std::make_pair(s - lo, e - lo) : std::make_pair(int64_t{0}, int64_t{0});
}

void copy_floats(float* dst, const float* src, int64_t n) {
  if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

}  // namespace

GradSync::GradSync(dist::Comm& comm, const std::vector<TrainParam>& params, const std::vector<bool>& trainable,
                   const std::vector<int>& stages, int num_blocks, const GradSyncOptions& opts)
    : comm_(comm), params_(params), opts_(opts), num_blocks_(num_blocks) {
  if (trainable.size() != params.size() || stages.size() != params.size())
    fail("gradient sync: ", params.size(), " parameters but ", trainable.size(), " trainable flags and ",
         stages.size(), " stages");
  if (opts_.bucket_bytes < 4) fail("gradient sync: bucket size must be at least one float");
  // The order in which gradients become final: by backward position, and
  // within a position in reverse declaration order.
  std::vector<size_t> order;
  for (size_t i = 0; i < params.size(); ++i)
    if (trainable[i] && params[i].g && params[i].n > 0) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int pa = position(stages[a]), pb = position(stages[b]);
    return pa != pb ? pa < pb : a > b;
  });
  const int64_t cap = opts_.bucket_bytes / static_cast<int64_t>(sizeof(float));
  for (size_t i : order) {
    if (buckets_.empty() || (buckets_.back().n > 0 && buckets_.back().n + params[i].n > cap)) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(i);
    b.offset.push_back(b.n);
    b.n += params[i].n;
    b.ready_at = std::max(b.ready_at, position(stages[i]));
  }
  const int N = comm_.size(), R = comm_.rank();
  for (Bucket& b : buckets_) {
    if (b.params.size() > 1) b.flat.resize(static_cast<size_t>(b.n));
    for (int r = 0; r < N; ++r) b.counts.push_back(b.n / N + (r < b.n % N ? 1 : 0));
    b.first = std::accumulate(b.counts.begin(), b.counts.begin() + R, int64_t{0});
    if (opts_.zero) b.mine.resize(static_cast<size_t>(b.counts[static_cast<size_t>(R)]));
  }
}

std::vector<ParamSlice> GradSync::slices() const {
  std::vector<ParamSlice> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) out[i] = {0, opts_.zero ? 0 : params_[i].n};
  if (!opts_.zero) return out;
  const size_t R = static_cast<size_t>(comm_.rank());
  for (const Bucket& b : buckets_)
    for (size_t k = 0; k < b.params.size(); ++k) {
      const auto [lo, hi] = overlap(b.offset[k], b.offset[k] + params_[b.params[k]].n, b.first, b.first + b.counts[R]);
      out[b.params[k]] = {lo, hi};
    }
  return out;
}

std::vector<int64_t> GradSync::slice_counts(size_t i) const {
  std::vector<int64_t> counts(static_cast<size_t>(comm_.size()), 0);
  for (const Bucket& b : buckets_)
    for (size_t k = 0; k < b.params.size(); ++k) {
      if (b.params[k] != i) continue;
      int64_t start = 0;
      for (size_t r = 0; r < counts.size(); ++r) {
        const auto [lo, hi] = overlap(b.offset[k], b.offset[k] + params_[i].n, start, start + b.counts[r]);
        counts[r] = hi - lo;
        start += b.counts[r];
      }
    }
  return counts;
}

int64_t GradSync::bytes_per_step() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.n;
  return n * static_cast<int64_t>(sizeof(float));
}

float* GradSync::grads_of(Bucket& b) { return b.flat.empty() ? params_[b.params[0]].g : b.flat.data(); }

void GradSync::start(Bucket& b) {
  if (!b.flat.empty())
    for (size_t k = 0; k < b.params.size(); ++k)
      copy_floats(b.flat.data() + b.offset[k], params_[b.params[k]].g, params_[b.params[k]].n);
  float* g = grads_of(b);
  b.handle = opts_.zero ? comm_.start_reduce_scatter_sum(g, b.mine.data(), b.counts) : comm_.start_allreduce_sum(g, b.n);
}

void GradSync::arm() {
  armed_ = true;
  done_position_ = -1;
}

void GradSync::on_stage(int stage) {
  if (!armed_ || !opts_.overlap) return;
  done_position_ = position(stage);
  // Every rank walks the buckets in the same order: the collectives start in
  // the same order everywhere.
  for (Bucket& b : buckets_)
    if (b.handle < 0 && b.ready_at <= done_position_) start(b);
  comm_.progress();
}

void GradSync::finish() {
  for (Bucket& b : buckets_)
    if (b.handle < 0) start(b);
  const auto t0 = std::chrono::steady_clock::now();
  const size_t R = static_cast<size_t>(comm_.rank());
  for (Bucket& b : buckets_) {
    comm_.wait(b.handle);
    b.handle = -1;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const TrainParam& p = params_[b.params[k]];
      if (opts_.zero) {  // this rank's slice of the sum, back into its gradient
        const auto [lo, hi] = overlap(b.offset[k], b.offset[k] + p.n, b.first, b.first + b.counts[R]);
        copy_floats(p.g + lo, b.mine.data() + (b.offset[k] + lo - b.first), hi - lo);
      } else if (!b.flat.empty()) {
        copy_floats(p.g, b.flat.data() + b.offset[k], p.n);
      }
    }
  }
  wait_s_ = seconds_since(t0);
  armed_ = false;
}

void GradSync::gather_weights() {
  if (!opts_.zero) return;
  const auto t0 = std::chrono::steady_clock::now();
  const size_t R = static_cast<size_t>(comm_.rank());
  for (Bucket& b : buckets_) {
    float* w = b.flat.empty() ? params_[b.params[0]].w : b.flat.data();
    if (!b.flat.empty())
      for (size_t k = 0; k < b.params.size(); ++k) {
        const TrainParam& p = params_[b.params[k]];
        const auto [lo, hi] = overlap(b.offset[k], b.offset[k] + p.n, b.first, b.first + b.counts[R]);
        copy_floats(w + b.offset[k] + lo, p.w + lo, hi - lo);
      }
    b.handle = comm_.start_allgather(w, b.counts);
  }
  for (Bucket& b : buckets_) {
    comm_.wait(b.handle);
    b.handle = -1;
    if (!b.flat.empty())
      for (size_t k = 0; k < b.params.size(); ++k)
        copy_floats(params_[b.params[k]].w, b.flat.data() + b.offset[k], params_[b.params[k]].n);
  }
  gather_s_ = seconds_since(t0);
}

// ---- the training state between ranks ----

void broadcast_tensors(const dist::Comm& comm, const NamedTensors& tensors) {
  if (comm.size() == 1) return;
  for (const auto& [name, t] : tensors) comm.broadcast(t.data, static_cast<int64_t>(t.nbytes()));
}

void broadcast_moments(const dist::Comm& comm, AdamW& opt, const WeightSet* whole) {
  std::vector<float> m, v;
  for (size_t i = 0; i < opt.params().size(); ++i) {
    if (opt.settings(i).frozen) continue;
    const TrainParam& p = opt.params()[i];
    const float *src_m = nullptr, *src_v = nullptr;
    if (comm.root()) {
      src_m = whole->find("optim.m." + p.name)->f32();
      src_v = whole->find("optim.v." + p.name)->f32();
      if (comm.size() == 1) continue;  // AdamW::load_state took them
      m.assign(src_m, src_m + p.n);
      v.assign(src_v, src_v + p.n);
    } else {
      m.resize(static_cast<size_t>(p.n));
      v.resize(static_cast<size_t>(p.n));
    }
    comm.broadcast(m.data(), p.n * static_cast<int64_t>(sizeof(float)));
    comm.broadcast(v.data(), p.n * static_cast<int64_t>(sizeof(float)));
    if (!comm.root()) opt.load_param_state(i, m.data(), v.data());
  }
}

NamedTensors gather_moments(const dist::Comm& comm, const AdamW& opt, const GradSync* sync) {
  if (!sync || !sync->zero()) return comm.root() ? opt.state() : NamedTensors{};
  NamedTensors out;
  std::vector<float> buf;
  for (size_t i = 0; i < opt.params().size(); ++i) {
    if (opt.settings(i).frozen) continue;
    const TrainParam& p = opt.params()[i];
    const ParamSlice& sl = opt.slice(i);
    const std::vector<int64_t> counts = sync->slice_counts(i);
    for (int k = 0; k < 2; ++k) {
      const float* mine = k == 0 ? opt.m(i) : opt.v(i);
      Tensor whole;
      float* dst = nullptr;
      if (comm.root()) {
        whole = Tensor::alloc(DType::F32, p.shape);
        dst = whole.f32();
      } else {
        buf.resize(static_cast<size_t>(p.n));
        dst = buf.data();
      }
      if (sl.size() > 0) std::memcpy(dst + sl.lo, mine, static_cast<size_t>(sl.size()) * sizeof(float));
      comm.gather(dst, counts);
      if (comm.root()) out.emplace_back((k == 0 ? "optim.m." : "optim.v.") + p.name, whole);
    }
  }
  return out;
}

void check_same_weights(const dist::Comm& comm, const NamedTensors& tensors) {
  if (comm.size() == 1) return;
  // Word-wise multiply-xor: fast enough to run at every checkpoint.
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (const auto& [name, t] : tensors) {
    const auto* p = static_cast<const unsigned char*>(t.data);
    const size_t n = t.nbytes();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x100000001b3ull + (h >> 29);
    }
    for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  std::vector<uint64_t> all(static_cast<size_t>(comm.size()));
  comm.allgather(&h, all.data());
  for (int r = 1; r < comm.size(); ++r)
    if (all[static_cast<size_t>(r)] != all[0])
      fail("the weights of rank ", r, " differ from rank 0's: data-parallel ranks diverged (were they started with "
           "different strata builds, models or options?)");
}

std::string broadcast_string(const dist::Comm& comm, std::string s) {
  if (comm.size() == 1) return s;
  int64_t n = static_cast<int64_t>(s.size());
  comm.broadcast(&n, sizeof n);
  s.resize(static_cast<size_t>(n));
  comm.broadcast(s.data(), n);
  return s;
}

}  // namespace strata
