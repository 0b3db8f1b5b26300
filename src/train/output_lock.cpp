// OutputDirLock (see output_lock.h): open, flock(LOCK_EX | LOCK_NB), write "pid <pid> host <host>".
#include "train/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "core/check.h"

namespace sft {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

// "pid 123 host node7" as the holder wrote it, or why it cannot be said.
std::string holder_of(int fd) {
  char buf[512] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string s = n > 0 ? std::string(buf, size_t(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? std::string("a process that has not written its pid and host yet") : s;
}

}  // namespace

OutputDirLock::OutputDirLock(const std::string& output_dir, bool take) {
  if (!take) return;
  const std::string path = (std::filesystem::path(output_dir) / kOutputLockFile).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SFT_CHECK(fd_ >= 0, "train", "cannot open the lock file {}: {}", path, std::strerror(errno));
  int rc;
  do rc = ::flock(fd_, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    const std::string holder = err == EWOULDBLOCK ? holder_of(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    SFT_CHECK(err != EWOULDBLOCK, "train",
              "--output_dir {} is in use by another sft train ({}; lock {}): two runs writing one output_dir would "
              "overwrite each other's checkpoints; wait for it to end, stop it, or choose another --output_dir",
              output_dir, holder, path);
    fail("train", "cannot lock {}: {} (the filesystem may not support flock)", path, std::strerror(err));
  }
  const std::string me = fmt::format("pid {} host {}\n", ::getpid(), host_name());
  const bool written = ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) == ssize_t(me.size());
  SFT_CHECK(written, "train", "cannot write the lock file {}: {}", path, std::strerror(errno));
}

OutputDirLock::~OutputDirLock() {
  if (fd_ < 0) return;
  if (::ftruncate(fd_, 0) != 0) {}  // what it said is no longer true; the file itself stays
  ::close(fd_);                     // releases the lock
}

}  // namespace sft
