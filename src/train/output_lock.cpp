// OutputDirLock (see output_lock.h): open, flock(LOCK_EX | LOCK_NB), write "pid <pid> host <host>";
// the holders within this process share one descriptor, counted.
#include "train/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "core/check.h"

namespace sft {

namespace {

struct Held {
  int fd;
  int holders;
};

// The lock files this process holds, by absolute path.
std::map<std::string, Held>& held_locks(std::unique_lock<std::mutex>& guard) {
  static std::mutex m;
  static std::map<std::string, Held> held;
  guard = std::unique_lock<std::mutex>(m);
  return held;
}

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
  const std::string path = std::filesystem::absolute(std::filesystem::path(output_dir) / kOutputLockFile).lexically_normal().string();
  std::unique_lock<std::mutex> guard;
  auto& held = held_locks(guard);
  if (auto it = held.find(path); it != held.end()) {
    ++it->second.holders;
    key_ = path;
    return;
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SFT_CHECK(fd >= 0, "train", "cannot open the lock file {}: {}", path, std::strerror(errno));
  int rc;
  do rc = ::flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    const std::string holder = err == EWOULDBLOCK ? holder_of(fd) : std::string();
    ::close(fd);
    SFT_CHECK(err != EWOULDBLOCK, "train",
              "--output_dir {} is in use by another sft train ({}; lock {}): two runs writing one output_dir would "
              "overwrite each other's checkpoints; wait for it to end, stop it, or choose another --output_dir",
              output_dir, holder, path);
    fail("train", "cannot lock {}: {} (the filesystem may not support flock)", path, std::strerror(err));
  }
  const std::string me = fmt::format("pid {} host {}\n", ::getpid(), host_name());
  const bool written = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, me.data(), me.size(), 0) == ssize_t(me.size());
  const int err = errno;
  if (!written) ::close(fd);
  SFT_CHECK(written, "train", "cannot write the lock file {}: {}", path, std::strerror(err));
  held[path] = {fd, 1};
  key_ = path;
}

OutputDirLock::~OutputDirLock() {
  if (key_.empty()) return;
  std::unique_lock<std::mutex> guard;
  auto& held = held_locks(guard);
  auto it = held.find(key_);
  if (it == held.end() || --it->second.holders > 0) return;
  if (::ftruncate(it->second.fd, 0) != 0) {}  // what it said is no longer true; the file itself stays
  ::close(it->second.fd);                     // releases the lock
  held.erase(it);
}

}  // namespace sft
