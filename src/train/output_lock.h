// One writer per output_dir: an advisory flock(2) on output_dir/.sft.lock, holding the pid and
// host of the run that took it. The kernel releases it when the process ends in any way (a
// SIGKILLed run leaves no stale lock). flock is advisory and, on some network filesystems (older
// NFS, some FUSE mounts), not seen across machines: the lock is a guard, not a guarantee. Within
// one process the lock nests (the command may take it early and the trainer again): the file is
// locked once and released when the last holder goes.
#pragma once
#include <string>

namespace sft {

constexpr const char* kOutputLockFile = ".sft.lock";

class OutputDirLock {
 public:
  // take = false (ranks other than 0) holds nothing. Otherwise takes the lock without waiting;
  // Error naming the other run's pid and host when another live process holds it.
  OutputDirLock(const std::string& output_dir, bool take);
  ~OutputDirLock();
  OutputDirLock(const OutputDirLock&) = delete;
  OutputDirLock& operator=(const OutputDirLock&) = delete;

 private:
  std::string key_;  // the lock file's path while this object holds it
};

}  // namespace sft
