// The fork-join pool behind parallel_for.
//
// Why not OpenMP's: libgomp's idle threads spin for a long time (on the order
// of a million cycles) before they sleep, and a region ends only when every
// thread has come round. On a machine whose cores are shared with other
// processes, a spinning thread takes the core its descheduled partner needs:
// decoding a 421M model with 2 threads fell to 2 tok/s next to one other
// busy process, against 21 tok/s with OMP_WAIT_POLICY=passive. The policy is
// read from the environment when libgomp loads, too late for a program to
// choose it. Here a waiting thread spins for a bounded time (long enough to
// catch the next region of a decode step, which follows within microseconds)
// and then sleeps on a futex (std::atomic::wait).
#include "core/parallel.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace strata {
namespace {

thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins while pred() holds, for at most ~kSpin, then sleeps on `word` until
// it changes from the value pred last saw.
template <class T, class Pred>
void wait_while(const std::atomic<T>& word, Pred pred) {
  constexpr auto kSpin = std::chrono::microseconds(100);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    const T v = word.load(std::memory_order_acquire);
    if (!pred(v)) return;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kSpin) {
      word.wait(v, std::memory_order_acquire);
    } else {
      cpu_relax();
    }
  }
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { work(t); });
  }
  ~Pool() {
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  void run(int64_t chunks, detail::ChunkFn fn, void* body) {
    fn_ = fn, body_ = body, chunks_ = chunks;
    next_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    t_in_parallel = true;
    share(0);
    t_in_parallel = false;
    wait_while(pending_, [](int v) { return v != 0; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Chunks are claimed one at a time, so a thread slowed by the machine
  // (or by its share of memory bandwidth) takes fewer of them; a chunk's
  // result does not depend on which thread runs it.
  void share(int) {
    try {
      for (int64_t c; (c = next_.fetch_add(1, std::memory_order_relaxed)) < chunks_;) fn_(body_, c);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void work(int t) {
    t_in_parallel = true;
    uint32_t seen = 0;
    for (;;) {
      wait_while(generation_, [seen](uint32_t g) { return g == seen; });
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      share(t);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_{0};  // the next chunk to claim
  std::atomic<bool> stop_{false};
  detail::ChunkFn fn_ = nullptr;
  void* body_ = nullptr;
  int64_t chunks_ = 0;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

// The cores this process may run on (its affinity mask, as a container or
// taskset sets it), else every core.
int hardware_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

// One pool per process, replaced when the thread count changes. Callers on
// threads of their own (a server's) take turns: g_pool_mu is held for a
// whole run, so the pool is never replaced under one.
std::mutex g_pool_mu;
std::unique_ptr<Pool> g_pool;
std::atomic<int> g_threads{0};  // 0: not set yet (all cores)

}  // namespace

void set_num_threads(int n) {
  const std::lock_guard<std::mutex> lock(g_pool_mu);
  g_threads = n > 0 ? n : hardware_threads();
}

int num_threads() {
  static const int all = hardware_threads();
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : all;
}

namespace detail {

void run_chunks(int64_t chunks, ChunkFn fn, void* body) {
  const std::lock_guard<std::mutex> lock(g_pool_mu);
  const int want = num_threads();
  if (!g_pool || g_pool->threads() != want) {
    g_pool.reset();
    g_pool = std::make_unique<Pool>(want);
  }
  g_pool->run(chunks, fn, body);
}

bool in_parallel() { return t_in_parallel; }

}  // namespace detail
}  // namespace strata
