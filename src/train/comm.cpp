#include "train/comm.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "strata/error.h"

#ifdef STRATA_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (Open MPI's deprecated C++ bindings need their own library)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace strata::dist {
namespace {

Comm g_world;
bool g_joined = false;     // init_world ran
[[maybe_unused]] bool g_mpi = false;  // MPI_Init ran (and MPI_Finalize not yet)
int g_error_fd = STDERR_FILENO;

// The number of processes a launcher started, from its environment (1: none).
int launched_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  if (std::getenv("PMIX_RANK") || std::getenv("PMI_RANK")) return 1;
  return 0;
}

// Offsets of consecutive slices of the given sizes.
[[maybe_unused]] std::vector<int64_t> offsets_of(std::span<const int64_t> counts) {
  std::vector<int64_t> off(counts.size() + 1, 0);
  for (size_t i = 0; i < counts.size(); ++i) off[i + 1] = off[i] + counts[i];
  return off;
}

#ifdef STRATA_HAVE_MPI
int to_int(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX) fail("MPI ", what, ": ", n, " elements is more than one message takes (", INT_MAX, ")");
  return static_cast<int>(n);
}
#endif

}  // namespace

struct Comm::Pending {
#ifdef STRATA_HAVE_MPI
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<int> counts, displs;  // must outlive the request
#endif
  bool done = false;
};

Comm& init_world() {
  if (g_joined) return g_world;
  g_joined = true;
  const int launched = launched_size();
  if (launched == 0) return g_world;
#ifdef STRATA_HAVE_MPI
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    fail("MPI_Init_thread failed: is this process started by mpirun?");
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank_, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g_world.local_size_);
  MPI_Comm_free(&local);
#else
  if (launched > 1)
    fail("started as ", launched, " processes (mpirun), but this strata was built without MPI: each process would "
         "train alone into the same directory. Rebuild with libopenmpi-dev installed (cmake -DSTRATA_MPI=ON)");
#endif
  return g_world;
}

Comm& world() { return g_world; }

void finalize() {
#ifdef STRATA_HAVE_MPI
  if (g_mpi) {
    g_world.pending_.clear();
    MPI_Finalize();
    g_mpi = false;
  }
#endif
}

void quiet_other_ranks() {
  if (g_world.size() <= 1 || g_world.root()) return;
  std::fflush(stdout);
  std::fflush(stderr);
  g_error_fd = dup(STDERR_FILENO);
  const int null_fd = open("/dev/null", O_WRONLY);
  if (null_fd >= 0) {
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    close(null_fd);
  }
}

void report_fatal_error(const std::string& message) {
  std::string line = "strata: error: ";
  if (g_world.size() > 1) line += cat("rank ", g_world.rank(), " of ", g_world.size(), ": ");
  line += message + "\n";
  std::fflush(stderr);
  if (write(g_error_fd, line.data(), line.size()) < 0) {
    // Nowhere left to report to; the exit status still says it failed.
  }
#ifdef STRATA_HAVE_MPI
  if (g_mpi && g_world.size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
}

void Comm::broadcast(void* data, int64_t bytes, int root) const {
  if (size_ == 1) return;
#ifdef STRATA_HAVE_MPI
  // In pieces below INT_MAX bytes.
  constexpr int64_t kPiece = int64_t{1} << 30;
  auto* p = static_cast<char*>(data);
  for (int64_t off = 0; off < bytes; off += kPiece)
    MPI_Bcast(p + off, static_cast<int>(std::min(kPiece, bytes - off)), MPI_BYTE, root, MPI_COMM_WORLD);
#endif
}

namespace {

enum class Elem { F64, I64 };
enum class Op { Sum, Min };

void allreduce_in_place(int size, void* data, int64_t n, Elem elem, Op op) {
  if (size == 1) return;
#ifdef STRATA_HAVE_MPI
  MPI_Allreduce(MPI_IN_PLACE, data, to_int(n, "allreduce"), elem == Elem::F64 ? MPI_DOUBLE : MPI_INT64_T,
                op == Op::Sum ? MPI_SUM : MPI_MIN, MPI_COMM_WORLD);
#endif
}

}  // namespace

void Comm::allreduce_sum(double* data, int64_t n) const { allreduce_in_place(size_, data, n, Elem::F64, Op::Sum); }
void Comm::allreduce_sum(int64_t* data, int64_t n) const { allreduce_in_place(size_, data, n, Elem::I64, Op::Sum); }
void Comm::allreduce_min(int64_t* data, int64_t n) const { allreduce_in_place(size_, data, n, Elem::I64, Op::Min); }

void Comm::allgather(const uint64_t* mine, uint64_t* all) const {
  all[rank_] = *mine;
  if (size_ == 1) return;
#ifdef STRATA_HAVE_MPI
  MPI_Allgather(mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
#endif
}

void Comm::gather(float* data, std::span<const int64_t> counts, int root) const {
  if (size_ == 1) return;
#ifdef STRATA_HAVE_MPI
  const auto off = offsets_of(counts);
  std::vector<int> c(counts.size()), d(counts.size());
  for (size_t r = 0; r < counts.size(); ++r) {
    c[r] = to_int(counts[r], "gather");
    d[r] = to_int(off[r], "gather");
  }
  if (rank_ == root)
    MPI_Gatherv(MPI_IN_PLACE, 0, MPI_FLOAT, data, c.data(), d.data(), MPI_FLOAT, root, MPI_COMM_WORLD);
  else
    MPI_Gatherv(data + off[rank_], c[rank_], MPI_FLOAT, nullptr, nullptr, nullptr, MPI_FLOAT, root, MPI_COMM_WORLD);
#endif
}

int Comm::start_allreduce_sum(float* data, int64_t n) {
  [[maybe_unused]] Pending* p = pending_.emplace_back(std::make_unique<Pending>()).get();  // unused without MPI
#ifdef STRATA_HAVE_MPI
  if (size_ > 1)
    MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, "allreduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &p->request);
#endif
  return static_cast<int>(pending_.size()) - 1;
}

int Comm::start_reduce_scatter_sum(const float* data, float* mine, std::span<const int64_t> counts) {
  [[maybe_unused]] Pending* p = pending_.emplace_back(std::make_unique<Pending>()).get();  // unused without MPI
  if (size_ == 1) {
    if (mine != data) std::memcpy(mine, data, static_cast<size_t>(counts[0]) * sizeof(float));
  } else {
#ifdef STRATA_HAVE_MPI
    for (int64_t c : counts) p->counts.push_back(to_int(c, "reduce-scatter"));
    MPI_Ireduce_scatter(data, mine, p->counts.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &p->request);
#endif
  }
  return static_cast<int>(pending_.size()) - 1;
}

int Comm::start_allgather(float* data, std::span<const int64_t> counts) {
  [[maybe_unused]] Pending* p = pending_.emplace_back(std::make_unique<Pending>()).get();  // unused without MPI
#ifdef STRATA_HAVE_MPI
  if (size_ > 1) {
    const auto off = offsets_of(counts);
    for (size_t r = 0; r < counts.size(); ++r) {
      p->counts.push_back(to_int(counts[r], "allgather"));
      p->displs.push_back(to_int(off[r], "allgather"));
    }
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, data, p->counts.data(), p->displs.data(), MPI_FLOAT, MPI_COMM_WORLD,
                    &p->request);
  }
#endif
  return static_cast<int>(pending_.size()) - 1;
}

void Comm::wait(int handle) {
  Pending* p = pending_.at(static_cast<size_t>(handle)).get();
#ifdef STRATA_HAVE_MPI
  if (!p->done && p->request != MPI_REQUEST_NULL) MPI_Wait(&p->request, MPI_STATUS_IGNORE);
#endif
  p->done = true;
  // Handles are indices: the list is cleared once every request is done.
  for (const auto& q : pending_)
    if (!q->done) return;
  pending_.clear();
}

void Comm::progress() {
#ifdef STRATA_HAVE_MPI
  for (const auto& p : pending_) {
    if (p->done || p->request == MPI_REQUEST_NULL) continue;
    int flag = 0;
    MPI_Test(&p->request, &flag, MPI_STATUS_IGNORE);  // completes it (the request becomes MPI_REQUEST_NULL)
  }
#endif
}

}  // namespace strata::dist
