// Which checkpoint a run resumes from, verified and the same on every rank: rank 0 checks the
// files against their manifest (io/checkpoint.h verify_checkpoint) and the other ranks take its
// choice through one host all-reduce. Auto-resume falls back past damaged checkpoints, saying so;
// a damaged checkpoint named with --resume_from_checkpoint is an error.
#pragma once
#include <string>

#include "dist/comm.h"

namespace sft {

// `found`: the checkpoint the command found (the newest complete one in output_dir) or was given;
// "" = a fresh start (returned as is, no collective). named_explicitly: --resume_from_checkpoint,
// so a damaged one is an Error naming the file and the cause; otherwise the newest complete
// checkpoint beside `found`, at its step or below, that verifies (each one skipped is printed as
// a WARNING with its problems; none verifies: Error). Every rank calls it; returns the directory.
std::string agree_on_resume_checkpoint(Comm& comm, const std::string& found, bool named_explicitly);

}  // namespace sft
