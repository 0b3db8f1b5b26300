// CollectiveWatchdog: bounds how long a rank waits in a collective (HF's --ddp_timeout). The
// thread that calls collectives marks each blocking wait with watch(op, what); a watchdog thread,
// started only in a world of several ranks, looks about once a second and, when one wait has
// lasted longer than the timeout, prints why on stderr (prefixed with the rank) and ends the
// process at once (std::_Exit, no destructors), so that the launcher tears the job down.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace sft {

class CollectiveWatchdog {
 public:
  // before_exit (optional) runs on the watchdog thread just before the process ends, e.g. to abort
  // a NCCL communicator; exit_code is the process's status.
  explicit CollectiveWatchdog(std::function<void()> before_exit = {}, int exit_code = 1);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Starts the watchdog thread (once; a world of one never calls it). seconds > 0.
  void start(double seconds);
  void set_timeout(double seconds);
  double timeout() const { return timeout_s_.load(); }

  // Marks one blocking wait: op ("all_reduce") and what (the caller's name for it) are copied.
  class Scope {
   public:
    Scope(Scope&& o) noexcept : dog_(o.dog_) { o.dog_ = nullptr; }
    ~Scope() {
      if (dog_) dog_->disarm();
    }

   private:
    friend class CollectiveWatchdog;
    explicit Scope(CollectiveWatchdog* dog) : dog_(dog) {}
    CollectiveWatchdog* dog_;
  };
  [[nodiscard]] Scope watch(const char* op, const char* what);

  // The line printed when a wait of `waited` seconds passes the timeout (without the rank prefix).
  static std::string message(const std::string& op, const std::string& what, double waited, double timeout);

 private:
  void disarm();
  void run();

  std::function<void()> before_exit_;
  int exit_code_;
  std::atomic<double> timeout_s_{1800.0};
  std::mutex mu_;                  // guards op_, what_, since_ns_ (held for a copy, never while waiting)
  std::string op_, what_;
  int64_t since_ns_ = 0;           // steady-clock start of the current wait; 0: none
  std::condition_variable cv_;     // wakes the watchdog thread to stop
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sft
