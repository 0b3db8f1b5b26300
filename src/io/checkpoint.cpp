// Atomic trainer checkpoints: write into a temporary sibling directory, fsync, manifest, rename.
#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "backend/host_access.h"
#include "io/hf_model.h"
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

int64_t step_of(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (!name.starts_with("checkpoint-")) return -1;
  const std::string digits = name.substr(11);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
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

bool is_complete_checkpoint(const std::string& dir) { return fs::exists(fs::path(dir) / kCheckpointManifest); }

std::string save_checkpoint(const std::string& output_dir, int64_t step, LlamaModel& model,
                            const OptimizerState& optimizer, const nlohmann::json& trainer_state,
                            const CheckpointFiles& files) {
  const fs::path final_dir = fs::path(output_dir) / fmt::format("checkpoint-{}", step);
  const fs::path tmp = fs::path(output_dir) / fmt::format(".tmp-checkpoint-{}", step);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  // A save that fails (disk full, I/O error) leaves no partial directory behind; the previous
  // checkpoints are never touched before the new one is complete.
  struct RemoveUnlessDone {
    const fs::path& dir;
    bool done = false;
    ~RemoveUnlessDone() {
      std::error_code ec;
      if (!done) fs::remove_all(dir, ec);
    }
  } cleanup{tmp};
  save_hf_model(model, tmp.string(), SaveOptions{.dtype = DType::f32});
  // The base model's generation_config.json when it has one (copied below), else one from the config.
  if (std::find(files.extra_files.begin(), files.extra_files.end(), "generation_config.json") == files.extra_files.end())
    write_generation_config(model.config(), tmp.string());
  std::vector<HostTensor> host;  // staged on the host (zero copy on the CPU)
  std::vector<SafetensorsWriteItem> items;
  host.reserve(optimizer.tensors.size());
  for (const auto& [name, t] : optimizer.tensors)
    items.push_back(SafetensorsWriteItem::from_tensor(name, host.emplace_back(model.backend(), t, true).host_view()));
  write_safetensors((tmp / "optimizer.safetensors").string(), items, {{"step", std::to_string(optimizer.steps)}});
  write_file_atomic((tmp / "trainer_state.json").string(), trainer_state.dump(2));
  for (const std::string& f : files.extra_files) {
    fs::copy_file(fs::path(files.source_dir) / f, tmp / f, fs::copy_options::overwrite_existing);
    fsync_path((tmp / f).string());
  }
  // The manifest lists every file with its size; it is written last, so its presence means complete.
  nlohmann::json manifest = {{"step", step}, {"files", nlohmann::json::object()}};
  for (const auto& e : fs::directory_iterator(tmp))
    if (e.is_regular_file()) manifest["files"][e.path().filename().string()] = e.file_size();
  write_file_atomic((tmp / kCheckpointManifest).string(), manifest.dump(2));
  fsync_path(tmp.string());
  if (fs::exists(final_dir)) fs::remove_all(final_dir);  // an older save of the same step
  std::error_code ec;
  fs::rename(tmp, final_dir, ec);
  SFT_CHECK(!ec, "checkpoint", "cannot rename {} to {}: {}", tmp.string(), final_dir.string(), ec.message());
  cleanup.done = true;
  fsync_path(output_dir);
  return final_dir.string();
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
  const std::string opt_path = (fs::path(dir) / "optimizer.safetensors").string();
  SafetensorsFile f(opt_path);
  for (const auto& [name, dst] : optimizer.tensors) {
    const SafetensorsTensorInfo& t = f.at(name);
    SFT_CHECK(t.dtype == "F32" && t.numel() == dst.numel(), "checkpoint",
              "{}: '{}' is {} {}, expected F32 ({},)", opt_path, name, t.dtype, t.shape_str(), dst.numel());
    model.backend().copy(dst.data, t.data, t.nbytes());
  }
  auto it = f.metadata().find("step");
  SFT_CHECK(it != f.metadata().end(), "checkpoint", "{}: metadata has no 'step'", opt_path);
  optimizer.steps = std::stoll(it->second);
  std::string error;
  const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
  auto state = parse_json_strict(read_text_file(state_path, "checkpoint"), &error);
  SFT_CHECK(state.has_value(), "checkpoint", "{}: {}", state_path, error);
  return *state;
}

void rotate_checkpoints(const std::string& output_dir, int64_t keep, const std::string& protect) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(output_dir, ec))
    if (e.path().filename().string().starts_with(".tmp-checkpoint-")) fs::remove_all(e.path());
  if (keep <= 0) return;
  auto all = complete_checkpoints(output_dir);
  int64_t excess = int64_t(all.size()) - keep;
  for (const auto& [step, path] : all) {
    if (excess <= 0) break;
    if (fs::equivalent(path, protect, ec)) continue;
    fs::remove_all(path);
    --excess;
  }
}

}  // namespace sft
