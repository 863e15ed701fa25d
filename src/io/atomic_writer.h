// A file written atomically: to a temp file beside the target, then fsync,
// rename and fsync of the directory, so a crash leaves the old file or the new
// one, never a torn one. Used by every writer of checkpoints and models.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "strata/error.h"

namespace strata {

// Writes to a temp file beside `path`; commit() fsyncs and renames it into place.
// The destructor removes the temp file if commit() was not reached.
class AtomicWriter {
 public:
  explicit AtomicWriter(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    fs::path p(path);
    dir_ = p.parent_path().empty() ? std::string(".") : p.parent_path().string();
    std::string name = p.filename().string();  // hidden ".NAME.tmp.XXXXXX" beside the target
    name.insert(0, 1, '.');
    name.append(".tmp.XXXXXX");
    tmp_ = (fs::path(dir_) / name).string();
    fd_ = mkstemp(tmp_.data());
    if (fd_ < 0) fail(path, ": cannot create a temporary file in ", dir_, ": ", std::strerror(errno));
    fchmod(fd_, 0644);  // mkstemp creates 0600; checkpoints should be readable like normal files
  }
  ~AtomicWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      // Large tensors are written in chunks: some kernels cap a single write at ~2 GiB.
      const size_t chunk = n < (size_t{1} << 30) ? n : (size_t{1} << 30);
      ssize_t w = ::write(fd_, p, chunk);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(path_, ": write failed: ", std::strerror(errno));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail(path_, ": fsync failed: ", std::strerror(errno));
    if (::close(fd_) != 0) {
      fd_ = -1;
      fail(path_, ": close failed: ", std::strerror(errno));
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(path_, ": cannot rename temporary file: ", std::strerror(errno));
    committed_ = true;
    // fsync the directory so the rename itself survives a crash.
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string path_, dir_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace strata
