// agree_on_resume_checkpoint (see resume_choice.h): rank 0 verifies, the others follow.
#include "train/resume_choice.h"

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "core/check.h"
#include "core/log.h"
#include "io/checkpoint.h"

namespace sft {

namespace fs = std::filesystem;

std::string agree_on_resume_checkpoint(Comm& comm, const std::string& found, bool named_explicitly) {
  if (found.empty()) return found;
  const fs::path parent = fs::path(found).parent_path();
  // A directory not named checkpoint-<step> has no older siblings to fall back to.
  const bool only_this = named_explicitly || checkpoint_step(found) < 0;
  // The decision as one number: the step chosen (auto), 0 (explicit and verified), -1 (nothing to
  // resume from); the other ranks add -2, so the all-reduce's max is rank 0's decision.
  double decision = -2;
  std::string chosen, why_not;
  if (comm.rank() == 0) {
    std::fflush(stdout);  // the warnings below come after what was printed before them
    if (only_this) {
      const CheckpointVerification v = verify_checkpoint(found);
      if (v.ok()) {
        chosen = found;
        if (!v.checksums)
          log_info("note: {} was written by an older sft without checksums: verified the file sizes only", found);
      } else {
        why_not = fmt::format("{}{} is damaged and was not loaded: {}", named_explicitly ? "--resume_from_checkpoint " : "checkpoint ",
                              found, v.describe());
      }
      decision = chosen.empty() ? -1 : 0;
    } else {
      const VerifiedChoice c = find_verified_checkpoint(parent.string(), checkpoint_step(found));
      for (const auto& [dir, problems] : c.skipped)
        log_info("WARNING: checkpoint {} is damaged, skipped for resume: {}", dir, problems);
      chosen = c.dir;
      if (!chosen.empty() && !c.skipped.empty())
        log_info("WARNING: resuming from {}, the newest checkpoint that verifies", chosen);
      if (!chosen.empty() && !c.checksums)
        log_info("note: {} was written by an older sft without checksums: verified the file sizes only", chosen);
      if (chosen.empty())
        why_not = fmt::format("no checkpoint in {} verifies (each one is listed above with its problems); move the "
                              "damaged ones out of the output_dir to train from the start",
                              parent.string());
      decision = chosen.empty() ? -1 : double(checkpoint_step(chosen));
    }
  }
  comm.all_reduce_host(&decision, 1, ReduceOp::max, "resume_checkpoint");
  SFT_CHECK(decision >= 0, "resume", "{}",
            comm.rank() == 0 ? why_not : std::string("rank 0 found no checkpoint to resume from that verifies (see its error)"));
  if (comm.rank() == 0) return chosen;
  return only_this ? found : (parent / fmt::format("checkpoint-{}", int64_t(decision))).string();
}

}  // namespace sft
