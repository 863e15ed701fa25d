// The processes of a training run: one, or an MPI world started by `mpirun`.
//
// strata joins MPI only when a launcher started it (OMPI_COMM_WORLD_SIZE,
// PMIX_RANK or PMI_SIZE in the environment), so the same binary runs alone
// without an MPI runtime. Built without MPI (STRATA_MPI=OFF), a launch of
// several processes is refused: each would train alone into the same
// directory. Calls are made from the main thread only (MPI_THREAD_FUNNELED);
// with one process every collective is a no-op.
//
// Errors: any error on any rank of a multi-process run ends the whole run
// (report_fatal_error prints it, naming the rank, and calls MPI_Abort), so no
// rank waits forever in a collective for one that has stopped; mpirun does
// the same when a process dies from a signal.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace strata::dist {

class Comm {
 public:
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_size() const { return local_size_; }  // processes of the run on this machine
  bool root() const { return rank_ == 0; }

  // Blocking collectives. Buffers are the caller's; counts may exceed INT_MAX.
  void broadcast(void* data, int64_t bytes, int root = 0) const;
  void allreduce_sum(double* data, int64_t n) const;
  void allreduce_sum(int64_t* data, int64_t n) const;
  void allreduce_min(int64_t* data, int64_t n) const;
  void allgather(const uint64_t* mine, uint64_t* all /*size()*/) const;
  // Rank r's `counts[r]` floats at data + offset_r (offsets the prefix sums)
  // gathered into `data` on `root` (in place there).
  void gather(float* data, std::span<const int64_t> counts, int root = 0) const;

  // Non-blocking collectives: the buffer must stay untouched until wait().
  // Returns a handle for wait(); progress() lets pending ones advance (MPI
  // moves non-blocking collectives on only inside MPI calls).
  int start_allreduce_sum(float* data, int64_t n);
  // data[total] from every rank: `mine` (counts[rank()] floats) receives the
  // sum over ranks of this rank's slice [offset_r, offset_r + counts[r]).
  int start_reduce_scatter_sum(const float* data, float* mine, std::span<const int64_t> counts);
  // data[total]: afterwards every slice holds its owner's values.
  int start_allgather(float* data, std::span<const int64_t> counts);
  void wait(int handle);
  void progress();

 private:
  friend Comm& world();
  friend Comm& init_world();
  friend void finalize();
  int rank_ = 0, size_ = 1, local_size_ = 1;
  struct Pending;
  std::vector<std::unique_ptr<Pending>> pending_;  // pointers stay put: MPI holds their requests
};

// Joins the MPI world when a launcher started this process (once; later
// calls return the same). Errors: launched as several processes by a strata
// built without MPI.
Comm& init_world();
// The world joined by init_world(), or a world of one process.
Comm& world();
// Leaves MPI cleanly after a successful command (no-op without MPI).
void finalize();
// Prints "strata: error: ..." (with the rank in a run of several processes)
// and, in such a run, stops every rank (MPI_Abort); returns otherwise.
void report_fatal_error(const std::string& message);
// In a run of several processes, ranks other than 0 print nothing (their
// stdout and stderr go to /dev/null) except report_fatal_error's message:
// rank 0 alone shows progress.
void quiet_other_ranks();

}  // namespace strata::dist
