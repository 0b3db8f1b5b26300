// The collective watchdog (see watchdog.h): a steady-clock timestamp and the collective's name,
// set and cleared around each blocking wait, and a thread that polls them about once a second.
#include "dist/watchdog.h"

#include <chrono>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "core/check.h"
#include "core/log.h"

namespace sft {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

CollectiveWatchdog::CollectiveWatchdog(std::function<void()> before_exit, int exit_code)
    : before_exit_(std::move(before_exit)), exit_code_(exit_code) {}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CollectiveWatchdog::set_timeout(double seconds) {
  SFT_CHECK(seconds > 0, "dist", "--ddp_timeout must be > 0 seconds, got {}", seconds);
  timeout_s_.store(seconds);
}

void CollectiveWatchdog::start(double seconds) {
  set_timeout(seconds);
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

CollectiveWatchdog::Scope CollectiveWatchdog::watch(const char* op, const char* what) {
  std::lock_guard<std::mutex> lock(mu_);
  op_ = op;
  what_ = what ? what : "";
  since_ns_ = now_ns();
  return Scope(this);
}

void CollectiveWatchdog::disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  since_ns_ = 0;
}

std::string CollectiveWatchdog::message(const std::string& op, const std::string& what, double waited,
                                        double timeout) {
  return fmt::format("[dist] collective {} '{}' has waited {:.0f} s, more than --ddp_timeout {}: another rank stopped "
                     "responding (killed, stopped or stuck); ending this job",
                     op, what, waited, timeout);
}

void CollectiveWatchdog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    const double timeout = timeout_s_.load();
    // About once a second; a fraction of the timeout when it is shorter (tests).
    const auto period = std::chrono::duration<double>(std::min(1.0, std::max(0.01, timeout / 4)));
    if (cv_.wait_for(lock, period, [this] { return stop_; })) return;
    if (since_ns_ == 0) continue;
    const double waited = double(now_ns() - since_ns_) * 1e-9;
    if (waited <= timeout) continue;
    const std::string line = message(op_, what_, waited, timeout);
    lock.unlock();
    // The thread that waits is blocked inside the collective: end the process from here, without
    // destructors (they would wait on the same collective); the launcher ends the other ranks.
    std::fflush(stdout);
    std::fprintf(stderr, "%serror: %s\n", rank_prefix().c_str(), line.c_str());
    std::fflush(stderr);
    if (before_exit_) before_exit_();
    std::_Exit(exit_code_);
  }
}

}  // namespace sft
