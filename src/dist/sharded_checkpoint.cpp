// save_checkpoint_any and write_on_rank0 (see sharded_checkpoint.h), and the part of
// ShardedParamStore they stand on: rank 0 reading the full model while the other ranks serve the
// gathers it needs.
#include "dist/sharded_checkpoint.h"

#include <exception>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/file_hash.h"
#include "dist/sharded_store.h"
#include "io/optimizer_files.h"

namespace sft {

namespace {
constexpr double kEndAccess = -1, kServerCode = -2;  // root_access codes besides unit numbers
// What each rank reports after its part of a save: done (1) or failed (0), the shard it wrote
// (its rank among the ranks that shard the model, or -1: none), the file's size and its XXH3-64
// in two 32-bit halves (each exact as a double).
constexpr int kShardReport = 5;
}  // namespace

// ---- ShardedParamStore: rank-0 access ----

void ShardedParamStore::announce(double code) {
  comm_.all_reduce_host(&code, 1, ReduceOp::max, "root_access");
}

void ShardedParamStore::begin_root_access() {
  finish_all_reduces();
  for (Slot& s : slots_) {  // a prefetch in flight completes; every rank does the same
    wait_slot(s);
    if (s.unit >= 0 && refs_[size_t(s.unit)] == 0) {
      slot_of_[size_t(s.unit)] = -1;
      s.unit = -1;
    }
  }
  root_access_ = true;
}

void ShardedParamStore::end_root_access() {
  if (rank_ == 0) announce(kEndAccess);
  root_access_ = false;
}

void ShardedParamStore::serve_root() {
  SFT_CHECK(rank_ != 0 && root_access_, "sharded_store", "serve_root on rank {} ({} root access)", rank_,
            root_access_ ? "in" : "outside");
  for (;;) {
    double code = kServerCode;
    comm_.all_reduce_host(&code, 1, ReduceOp::max, "root_access");
    if (code < 0) break;
    const int unit = int(code);
    Slot& s = slots_[size_t(gather(unit))];
    wait_slot(s);
    s.unit = -1;
    slot_of_[size_t(unit)] = -1;
  }
  root_access_ = false;
}

void write_on_rank0(LlamaModel& model, Comm& comm, const std::function<void()>& write) {
  auto* sharded = dynamic_cast<ShardedParamStore*>(&model.store());
  if (!sharded) {
    if (comm.rank() == 0) write();
    return;
  }
  if (!sharded->first_replica()) return;  // hybrid: another node's copy; the first node serves rank 0
  sharded->begin_root_access();
  if (comm.rank() != 0) {
    sharded->serve_root();
    return;
  }
  try {
    write();
  } catch (...) {
    sharded->end_root_access();  // the others stop serving; the error travels on from rank 0
    throw;
  }
  sharded->end_root_access();
}

std::string save_checkpoint_any(const std::string& output_dir, int64_t step, LlamaModel& model, Comm& comm,
                                const OptimizerState& local, const nlohmann::json& trainer_state,
                                const CheckpointFiles& files) {
  auto* sharded = dynamic_cast<ShardedParamStore*>(&model.store());
  const int rank = comm.rank(), world = comm.size();
  if (!sharded)  // every rank holds the whole state: the one-process checkpoint
    return rank == 0 ? save_checkpoint(output_dir, step, model, local, trainer_state, files) : std::string();
  const std::string tmp = tmp_checkpoint_dir(output_dir, step);
  // Rank 0 makes the temporary directory (removed again unless the save completes).
  std::optional<PendingCheckpoint> pending;
  std::exception_ptr error;
  if (rank == 0) {
    try {
      pending.emplace(output_dir, step);
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (comm.any(error != nullptr, "checkpoint started")) {
    if (error) std::rethrow_exception(error);
    fail("checkpoint", "rank 0 could not create {} (see its error)", tmp);
  }
  // Every rank of the first replica (all ranks but under hybrid modes, where each node holds a
  // copy) writes its optimizer shard, named by its place among the ranks that shard the model,
  // fsynced, and reads it back once for the manifest.
  const bool writes = sharded->first_replica();
  const int shard_rank = sharded->comm().rank(), shards = sharded->comm().size();
  double report[kShardReport] = {0, 0, 0, 0, 0};
  try {
    if (writes) {
      const std::string path = write_optimizer_shard(tmp, model.backend(), local, sharded->local_slices(),
                                                     model.num_params(), shard_rank, shards);
      const FileDigest d = digest_file(path);
      report[2] = double(d.size);
      report[3] = double(d.xxh3 >> 32);
      report[4] = double(d.xxh3 & 0xffffffffu);
    }
    report[0] = 1;
    report[1] = writes ? double(shard_rank) : -1;
  } catch (...) {
    error = std::current_exception();
  }
  std::vector<double> all(size_t(world) * kShardReport);
  comm.all_gather_host(report, kShardReport, all.data(), "optimizer shards written");
  std::vector<int> failed;
  for (int r = 0; r < world; ++r)
    if (all[size_t(r) * kShardReport] != 1) failed.push_back(r);
  if (!failed.empty()) {
    if (error) std::rethrow_exception(error);
    fail("checkpoint", "rank(s) {} could not write their optimizer shard into {} (see their error)",
         fmt::join(failed, ", "), tmp);
  }
  // Rank 0 writes the model (the others take part in each unit's gather), the trainer state and
  // the extra files, then the manifest (with every rank's shard as digested by its writer) last.
  std::string dir;
  write_on_rank0(model, comm, [&] {
    pending->write_files(model, trainer_state, files);
    std::map<std::string, FileDigest> written;
    for (int r = 0; r < world; ++r) {
      const double* x = &all[size_t(r) * kShardReport];
      if (x[1] >= 0)
        written[optimizer_rank_file(int(x[1]), shards)] = {uint64_t(x[2]), (uint64_t(x[3]) << 32) | uint64_t(x[4])};
    }
    dir = pending->finish(written);
  });
  return dir;
}

}  // namespace sft
