// Trainer checkpoints: output_dir/checkpoint-<step>/ holds the HF model files (fp32 master
// weights, so resume is exact), optimizer.safetensors (AdamW moments), trainer_state.json (step,
// schedule, RNG, data-loader position, log history, as the trainer fills it) and copied extra
// files (tokenizer). It is written as .tmp-checkpoint-<step>/, every file fsynced, a manifest
// written last (the size and XXH3-64 of every file, and its own checksum), then renamed and the
// parent fsynced: a directory without its manifest is incomplete and never picked for resume
// (ecosystem.md §4.1); one whose files do not match their manifest is damaged and never loaded.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/file_hash.h"
#include "core/tensor.h"
#include "model/llama.h"

namespace sft {

constexpr const char* kCheckpointManifest = "checkpoint_complete.json";

struct CheckpointFiles {
  std::string source_dir;                // where extra_files are copied from
  std::vector<std::string> extra_files;  // e.g. tokenizer files, generation_config.json
  // When set, written as tokenizer_config.json instead of the base model's copy (the tokenizer as
  // the run used it: its model_max_length and pad token, as HF Trainer saves it).
  std::string tokenizer_config = {};
  // extra file f into dir: copied from source_dir, or tokenizer_config's text; fsynced
  void put(const std::string& f, const std::string& dir) const;
};

// The optimizer's part of a checkpoint: its named state tensors over the parameters this process
// holds (AdamW: "exp_avg", "exp_avg_sq", the ParamStore's states) and its step count.
struct OptimizerState {
  std::vector<std::pair<std::string, Tensor>> tensors;
  int64_t steps = 0;
};

// Returns the final checkpoint directory. The optimizer state is written in the one-process
// layout, optimizer.safetensors (io/optimizer_files.h).
std::string save_checkpoint(const std::string& output_dir, int64_t step, LlamaModel& model,
                            const OptimizerState& optimizer, const nlohmann::json& trainer_state,
                            const CheckpointFiles& files);

// The steps of save_checkpoint, for a save that several processes write into
// (dist/sharded_checkpoint.h): output_dir/.tmp-checkpoint-<step>/ ...
std::string tmp_checkpoint_dir(const std::string& output_dir, int64_t step);

// ... created fresh (an older one removed) and removed again unless finish() is reached ...
class PendingCheckpoint {
 public:
  PendingCheckpoint(std::string output_dir, int64_t step);
  ~PendingCheckpoint();
  PendingCheckpoint(const PendingCheckpoint&) = delete;
  PendingCheckpoint& operator=(const PendingCheckpoint&) = delete;
  const std::string& dir() const { return tmp_; }  // the temporary directory
  // ... the HF model in fp32 (streamed unit by unit through the store), generation_config.json
  // unless an extra file, trainer_state.json and the extra files; the optimizer's files are the
  // caller's ...
  void write_files(LlamaModel& model, const nlohmann::json& trainer_state, const CheckpointFiles& files);
  // ... and the manifest written last: size and XXH3 of every file in the directory (read back),
  // those in `known` taken as given (files other processes wrote, fsynced and read back), then the
  // directory fsynced and renamed to checkpoint-<step>. Returns the final directory.
  std::string finish(const std::map<std::string, FileDigest>& known = {});

 private:
  std::string output_dir_, tmp_;
  int64_t step_;
  bool done_ = false;
};

// Manifest format 2: {"format": 2, "step": N, "files": {name: {"size": bytes, "xxh3": 16 hex}},
// "manifest_xxh3": XXH3 of the compact JSON of everything else}. Format 1 (sft before checksums)
// has "files": {name: bytes} and no "format"; such checkpoints are verified by size only.
constexpr int kCheckpointManifestFormat = 2;

// What verify_checkpoint found: every problem names the file and the cause (missing, truncated,
// a changed byte, a damaged manifest).
struct CheckpointVerification {
  bool checksums = true;              // false: a format-1 manifest, sizes checked only
  std::vector<std::string> problems;  // empty: every listed file is there, whole and unchanged
  bool ok() const { return problems.empty(); }
  std::string describe() const;  // the problems on one line, "; " between them
};

// How far verify_checkpoint reads: every byte (XXH3 of each file), or the manifest and the file
// sizes only (a stat per file: what rotation repeats at each save for checkpoints it has hashed).
enum class VerifyDepth { checksums, sizes };

// Reads the manifest and every file it lists (streamed): missing files, sizes (truncated or
// grown), XXH3 checksums, the manifest's own checksum and step. Never throws for a damaged
// checkpoint; an I/O error other than a missing file is an Error.
CheckpointVerification verify_checkpoint(const std::string& dir, VerifyDepth depth = VerifyDepth::checksums);

// The step of a directory named checkpoint-<step>, else -1.
int64_t checkpoint_step(const std::string& dir);

// The complete checkpoints (with a manifest) of output_dir, lowest step first.
std::vector<std::string> list_complete_checkpoints(const std::string& output_dir);

// Auto-resume's choice: the newest complete checkpoint of output_dir at step <= max_step that
// verifies ("" when none does); every newer one that fails is in `skipped` with its problems.
struct VerifiedChoice {
  std::string dir;
  bool checksums = true;  // the chosen one had checksums (format 2)
  std::vector<std::pair<std::string, std::string>> skipped;  // dir, problems
};
VerifiedChoice find_verified_checkpoint(const std::string& output_dir, int64_t max_step);

// The HF model files save_hf_model wrote in dir (config.json, model*.safetensors and the index,
// generation_config.json) and the extra files, each read back from the storage after dropping
// its cached pages and compared with what was written (core/file_hash.h): Error naming the file.
void verify_saved_model_files(const std::string& dir, const std::vector<std::string>& extra_files);

// The complete checkpoint with the highest step in output_dir, if any (not verified).
std::optional<std::string> find_latest_checkpoint(const std::string& output_dir);
bool is_complete_checkpoint(const std::string& dir);

// Restores weights, every optimizer state tensor (by name) and optimizer.steps; returns
// trainer_state.json. Any store: each process reads only the byte ranges of its local slices, from
// either optimizer layout (io/optimizer_files.h), so a checkpoint resumes at any world size; the
// optimizer's tensors are shaped like the store's local buffers. Errors name the file. It does
// not verify checksums: the trainer verifies once (on rank 0, see train/resume_choice.h) before
// any rank loads.
nlohmann::json load_checkpoint(const std::string& dir, LlamaModel& model, OptimizerState& optimizer);

// What rotation remembers across the saves of one run: the checkpoints it has hashed (or that the
// run wrote: their manifest was computed from their files as read back), so each one is hashed at
// most once per run and checked by manifest and sizes at later saves; the damaged ones it reported.
struct RotationMemory {
  std::set<std::string> hashed;    // directory names (checkpoint-<step>)
  std::set<std::string> reported;  // damaged ones already named in a note
};

// What a rotation did: the checkpoints it deleted, and a line for the log for each one deleted and
// each damaged one kept (named once per RotationMemory), naming it and why.
struct RotationReport {
  std::vector<std::string> deleted;
  std::vector<std::string> notes;
};

// --save_total_limit: keeps the `keep` newest complete checkpoints that verify (0 = keep all),
// `protect` (the one just saved) counted first, then the others newest step first, and deletes
// the older ones. A checkpoint that does not verify never counts toward keep: one newer than the
// keep-th good checkpoint is left in place (auto-resume skips it; kept for inspection), an older
// one is deleted with the rest. So a damaged checkpoint never pushes a good one out, and the
// newest good checkpoint is never deleted. `protect` is trusted without a re-read (save_checkpoint
// computed its manifest from its files as read back); with `memory`, each other checkpoint is
// hashed once per run, otherwise at every call. Also removes leftover .tmp-checkpoint-*
// directories of crashed saves.
RotationReport rotate_checkpoints(const std::string& output_dir, int64_t keep, const std::string& protect,
                                  RotationMemory* memory = nullptr);

// fsync of a file or directory by path (Error on failure).
void fsync_path(const std::string& path);

}  // namespace sft
