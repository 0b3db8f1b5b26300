// OutputDirLock (train/output_lock.h): the lock file names this process; another process sees it
// held (util-linux flock -n) until the last nested holder in this process releases it; a lock
// held by another process is an Error naming what that process wrote; once that process is
// SIGKILLed the lock is free; ranks other than 0 take nothing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "core/check.h"
#include "train/output_lock.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Whether another process can take the lock right now (flock -n: exit 1 when it is held).
bool free_for_others(const fs::path& lock) {
  return std::system(("/usr/bin/flock -n " + lock.string() + " true").c_str()) == 0;
}

std::string host() {
  char h[256] = {};
  gethostname(h, sizeof(h) - 1);
  return h;
}

}  // namespace

TEST(OutputLock, HeldUntilTheLastHolderInThisProcessGoes) {
  if (!fs::exists("/usr/bin/flock")) GTEST_SKIP() << "no /usr/bin/flock (util-linux) to look from another process";
  const fs::path dir = fs::temp_directory_path() / ("sft_lock_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path lock = dir / kOutputLockFile;
  {
    const OutputDirLock rank1(dir.string(), false);
    EXPECT_FALSE(fs::exists(lock));
  }
  {
    const OutputDirLock outer(dir.string(), true);
    EXPECT_EQ(read_all(lock), "pid " + std::to_string(::getpid()) + " host " + host() + "\n");
    EXPECT_FALSE(free_for_others(lock));
    {
      const OutputDirLock inner(dir.string(), true);  // the trainer inside the command: nests
      EXPECT_FALSE(free_for_others(lock));
    }
    EXPECT_FALSE(free_for_others(lock));
  }
  EXPECT_TRUE(free_for_others(lock));
  EXPECT_EQ(read_all(lock), "");

  // Another process holds it (as a run would, having written its pid and host), then is killed.
  std::ofstream(lock) << "pid 4242 host elsewhere\n";
  const pid_t holder = fork();
  if (holder == 0) {
    // -F: flock execs the command itself, so the process killed below is the one holding the lock.
    execl("/usr/bin/flock", "flock", "-F", lock.c_str(), "sleep", "60", (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (free_for_others(lock) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  try {
    const OutputDirLock second(dir.string(), true);
    ADD_FAILURE() << "took a lock another process holds";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--output_dir " + dir.string() + " is in use by another sft train (pid 4242 host elsewhere; lock " +
                       lock.string() + ")"),
              std::string::npos)
        << msg;
  }
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(holder, &status, 0), holder);
  EXPECT_TRUE(free_for_others(lock)) << "the kernel released the killed holder's lock";
  const OutputDirLock after(dir.string(), true);
  EXPECT_EQ(read_all(lock), "pid " + std::to_string(::getpid()) + " host " + host() + "\n");
  fs::remove_all(dir);
}

}  // namespace sft
