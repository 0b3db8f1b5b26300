// Atomic trainer checkpoints: write into a temporary sibling directory, fsync, manifest (sizes and
// XXH3 checksums), rename; verification of a checkpoint against its manifest before resume.
#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/file_hash.h"
#include "io/hf_model.h"
#include "io/optimizer_files.h"
#include "io/safetensors.h"

namespace sft {

namespace fs = std::filesystem;

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  SFT_CHECK(fd >= 0, "checkpoint", "cannot open {} to sync: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  SFT_CHECK(rc == 0, "checkpoint", "fsync of {} failed: {}", path, std::strerror(errno));
}

namespace {

int64_t step_of(const fs::path& dir) { return checkpoint_step(dir.string()); }

// The manifest's own checksum: XXH3 of the compact JSON (sorted keys) of all but that field.
std::string manifest_self_hash(nlohmann::json manifest) {
  manifest.erase("manifest_xxh3");
  const std::string text = manifest.dump();
  return xxh3_hex(xxh3_of(text.data(), text.size()));
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    const int64_t step = step_of(e.path());
    if (step >= 0 && e.is_directory() && is_complete_checkpoint(e.path().string())) out.emplace_back(step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int64_t checkpoint_step(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  if (!name.starts_with("checkpoint-")) return -1;
  const std::string digits = name.substr(11);
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::string CheckpointVerification::describe() const {
  std::string out;
  for (const std::string& p : problems) out += (out.empty() ? "" : "; ") + p;
  return out;
}

CheckpointVerification verify_checkpoint(const std::string& dir, VerifyDepth depth) {
  CheckpointVerification v;
  const fs::path manifest_path = fs::path(dir) / kCheckpointManifest;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    v.problems.push_back(fmt::format("{}: no such directory", dir));
    return v;
  }
  if (!fs::exists(manifest_path, ec)) {
    v.problems.push_back(fmt::format("{}: missing (an incomplete save)", kCheckpointManifest));
    return v;
  }
  std::string error;
  const auto manifest = parse_json_strict(read_text_file(manifest_path.string(), "checkpoint"), &error);
  if (!manifest || !manifest->is_object() || !manifest->contains("files") || !(*manifest)["files"].is_object()) {
    v.problems.push_back(fmt::format("{}: damaged ({})", kCheckpointManifest,
                                     manifest ? "no \"files\" object" : "not valid JSON: " + error));
    return v;
  }
  const nlohmann::json& m = *manifest;
  v.checksums = m.contains("format");
  if (v.checksums) {
    const bool known = m["format"] == kCheckpointManifestFormat && m.contains("manifest_xxh3") && m["manifest_xxh3"].is_string();
    if (!known) {
      v.problems.push_back(fmt::format("{}: damaged or of an unknown format (format {}, expected {} with \"manifest_xxh3\")",
                                       kCheckpointManifest, m["format"].dump(), kCheckpointManifestFormat));
      return v;
    }
    const std::string self = manifest_self_hash(m);
    if (self != m["manifest_xxh3"].get<std::string>()) {
      v.problems.push_back(fmt::format("{}: damaged (its content hashes to XXH3 {}, it records {}: a changed byte)",
                                       kCheckpointManifest, self, m["manifest_xxh3"].get<std::string>()));
      return v;
    }
  }
  const int64_t step = checkpoint_step(dir);
  if (step >= 0 && !(m.contains("step") && m["step"].is_number_integer() && m["step"].get<int64_t>() == step))
    v.problems.push_back(fmt::format("{}: records step {}, but the directory is {}", kCheckpointManifest,
                                     m.value("step", nlohmann::json()).dump(), fs::path(dir).filename().string()));
  for (const auto& [name, entry] : m["files"].items()) {
    const fs::path path = fs::path(dir) / name;
    uint64_t want_size = 0, want_hash = 0;
    bool sized = false, hashed = false;
    if (v.checksums) {
      sized = entry.is_object() && entry.contains("size") && entry["size"].is_number_unsigned();
      hashed = sized && entry.contains("xxh3") && entry["xxh3"].is_string() &&
               parse_xxh3_hex(entry["xxh3"].get<std::string>(), &want_hash);
      if (sized) want_size = entry["size"].get<uint64_t>();
    } else {
      sized = entry.is_number_unsigned();
      if (sized) want_size = entry.get<uint64_t>();
    }
    if (!sized || (v.checksums && !hashed) || name.find('/') != std::string::npos) {
      v.problems.push_back(fmt::format("{}: the manifest's entry for '{}' is damaged ({})", kCheckpointManifest, name, entry.dump()));
      continue;
    }
    if (!fs::is_regular_file(path, ec)) {
      v.problems.push_back(fmt::format("{}: missing (the manifest lists {} bytes)", name, want_size));
      continue;
    }
    const uint64_t size = fs::file_size(path, ec);
    if (size != want_size) {
      v.problems.push_back(fmt::format("{}: {} bytes, the manifest says {} ({})", name, size, want_size,
                                       size < want_size ? "truncated" : "grown"));
      continue;
    }
    if (!v.checksums || depth == VerifyDepth::sizes) continue;
    const FileDigest d = digest_file(path.string());
    if (d.size != want_size)
      v.problems.push_back(fmt::format("{}: read {} bytes, the manifest says {} (changed while reading)", name, d.size, want_size));
    else if (d.xxh3 != want_hash)
      v.problems.push_back(fmt::format("{}: XXH3 {}, the manifest says {} (a changed byte: the file is corrupt)", name,
                                       xxh3_hex(d.xxh3), xxh3_hex(want_hash)));
  }
  return v;
}

std::vector<std::string> list_complete_checkpoints(const std::string& output_dir) {
  std::vector<std::string> out;
  for (const auto& [step, path] : complete_checkpoints(output_dir)) out.push_back(path.string());
  return out;
}

VerifiedChoice find_verified_checkpoint(const std::string& output_dir, int64_t max_step) {
  VerifiedChoice choice;
  auto all = complete_checkpoints(output_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->first > max_step) continue;
    const CheckpointVerification v = verify_checkpoint(it->second.string());
    if (v.ok()) {
      choice.dir = it->second.string();
      choice.checksums = v.checksums;
      return choice;
    }
    choice.skipped.emplace_back(it->second.string(), v.describe());
  }
  return choice;
}

void verify_saved_model_files(const std::string& dir, const std::vector<std::string>& extra_files) {
  std::vector<std::string> names(extra_files);
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && (name == "config.json" || name == "generation_config.json" ||
                                (name.starts_with("model") && (name.ends_with(".safetensors") ||
                                                               name.ends_with(".safetensors.index.json")))))
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const std::string& n : names) verify_file_on_storage((fs::path(dir) / n).string());
}

bool is_complete_checkpoint(const std::string& dir) { return fs::exists(fs::path(dir) / kCheckpointManifest); }

void CheckpointFiles::put(const std::string& f, const std::string& dir) const {
  const fs::path to = fs::path(dir) / f;
  if (f == "tokenizer_config.json" && !tokenizer_config.empty()) {
    write_file_atomic(to.string(), tokenizer_config);
  } else {
    fs::copy_file(fs::path(source_dir) / f, to, fs::copy_options::overwrite_existing);
  }
  fsync_path(to.string());
}

std::string tmp_checkpoint_dir(const std::string& output_dir, int64_t step) {
  return (fs::path(output_dir) / fmt::format(".tmp-checkpoint-{}", step)).string();
}

PendingCheckpoint::PendingCheckpoint(std::string output_dir, int64_t step)
    : output_dir_(std::move(output_dir)), tmp_(tmp_checkpoint_dir(output_dir_, step)), step_(step) {
  fs::remove_all(tmp_);
  fs::create_directories(tmp_);
}

// A save that fails (disk full, I/O error) leaves no partial directory behind; the previous
// checkpoints are never touched before the new one is complete.
PendingCheckpoint::~PendingCheckpoint() {
  std::error_code ec;
  if (!done_) fs::remove_all(tmp_, ec);
}

void PendingCheckpoint::write_files(LlamaModel& model, const nlohmann::json& trainer_state, const CheckpointFiles& files) {
  save_hf_model(model, tmp_, SaveOptions{.dtype = DType::f32});
  // The base model's generation_config.json when it has one (copied below), else one from the config.
  if (std::find(files.extra_files.begin(), files.extra_files.end(), "generation_config.json") == files.extra_files.end())
    write_generation_config(model.config(), tmp_);
  write_file_atomic((fs::path(tmp_) / "trainer_state.json").string(), trainer_state.dump(2));
  for (const std::string& f : files.extra_files) files.put(f, tmp_);
}

std::string PendingCheckpoint::finish(const std::map<std::string, FileDigest>& known) {
  const fs::path tmp(tmp_);
  const fs::path final_dir = fs::path(output_dir_) / fmt::format("checkpoint-{}", step_);
  // The manifest lists every file with its size and XXH3 (read back once, in blocks) and its own
  // checksum; it is written last, so its presence means complete.
  nlohmann::json manifest = {{"format", kCheckpointManifestFormat}, {"step", step_}, {"files", nlohmann::json::object()}};
  for (const auto& [name, d] : known) manifest["files"][name] = {{"size", d.size}, {"xxh3", xxh3_hex(d.xxh3)}};
  for (const auto& e : fs::directory_iterator(tmp)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || known.contains(name)) continue;
    const FileDigest d = digest_file(e.path().string());
    manifest["files"][name] = {{"size", d.size}, {"xxh3", xxh3_hex(d.xxh3)}};
  }
  manifest["manifest_xxh3"] = manifest_self_hash(manifest);
  write_file_atomic((tmp / kCheckpointManifest).string(), manifest.dump(2));
  fsync_path(tmp.string());
  if (fs::exists(final_dir)) fs::remove_all(final_dir);  // an older save of the same step
  std::error_code ec;
  fs::rename(tmp, final_dir, ec);
  SFT_CHECK(!ec, "checkpoint", "cannot rename {} to {}: {}", tmp.string(), final_dir.string(), ec.message());
  done_ = true;
  fsync_path(output_dir_);
  return final_dir.string();
}

std::string save_checkpoint(const std::string& output_dir, int64_t step, LlamaModel& model,
                            const OptimizerState& optimizer, const nlohmann::json& trainer_state,
                            const CheckpointFiles& files) {
  PendingCheckpoint pending(output_dir, step);
  pending.write_files(model, trainer_state, files);
  write_optimizer_full(pending.dir(), model.backend(), optimizer);
  return pending.finish();
}

std::optional<std::string> find_latest_checkpoint(const std::string& output_dir) {
  auto all = complete_checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

nlohmann::json load_checkpoint(const std::string& dir, LlamaModel& model, OptimizerState& optimizer) {
  SFT_CHECK(is_complete_checkpoint(dir), "checkpoint", "{} is not a complete checkpoint (no {})", dir,
            kCheckpointManifest);
  load_hf_weights(dir, model);
  const ParamStore& ps = model.store();
  load_optimizer_state(dir, model.backend(), ps.num_params(), ps.local_slices(), optimizer);
  std::string error;
  const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
  auto state = parse_json_strict(read_text_file(state_path, "checkpoint"), &error);
  SFT_CHECK(state.has_value(), "checkpoint", "{}: {}", state_path, error);
  return *state;
}

RotationReport rotate_checkpoints(const std::string& output_dir, int64_t keep, const std::string& protect,
                                  RotationMemory* memory) {
  RotationReport report;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(output_dir, ec))
    if (e.path().filename().string().starts_with(".tmp-checkpoint-")) fs::remove_all(e.path());
  if (keep <= 0) return report;
  RotationMemory own;
  RotationMemory& mem = memory ? *memory : own;
  // protect first, then the others newest step first
  auto all = complete_checkpoints(output_dir);
  std::stable_partition(all.rbegin(), all.rend(), [&](const auto& c) { return fs::equivalent(c.second, protect, ec); });
  std::reverse(all.begin(), all.end());
  int64_t good = 0;
  for (const auto& [step, path] : all) {
    const std::string name = path.filename().string();
    if (good >= keep) {  // beyond the limit: deleted whether it verifies or not
      fs::remove_all(path);
      report.deleted.push_back(path.string());
      mem.hashed.erase(name);
      report.notes.push_back(mem.reported.erase(name) > 0
                                 ? fmt::format("deleted the damaged checkpoint {}: older than the {} newest "
                                               "checkpoint(s) that verify (--save_total_limit {})", path.string(), keep, keep)
                                 : fmt::format("deleted checkpoint {} (--save_total_limit {})", path.string(), keep));
      continue;
    }
    const bool is_protected = fs::equivalent(path, protect, ec);
    CheckpointVerification v;
    if (!is_protected) v = verify_checkpoint(path.string(), mem.hashed.contains(name) ? VerifyDepth::sizes : VerifyDepth::checksums);
    if (v.ok()) {
      mem.hashed.insert(name);
      mem.reported.erase(name);  // saved again since
      ++good;
      continue;
    }
    mem.hashed.erase(name);
    if (mem.reported.insert(name).second)
      report.notes.push_back(fmt::format("WARNING: checkpoint {} does not verify ({}): it does not count toward "
                                         "--save_total_limit {}, is kept for inspection (auto-resume skips it) and "
                                         "deleted once {} newer checkpoint(s) verify",
                                         path.string(), v.describe(), keep, keep));
  }
  return report;
}

}  // namespace sft
