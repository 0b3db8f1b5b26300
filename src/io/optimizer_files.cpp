// Optimizer state files of a checkpoint (see optimizer_files.h): the one-process layout, the
// per-rank shards, and the loader that re-slices either into any store's local buffers.
#include "io/optimizer_files.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "backend/host_access.h"
#include "io/safetensors.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

// A run of elements of the flat layout that a file holds: flat [offset, offset + size) is at
// element `at` of each of its state tensors.
struct Piece {
  int64_t offset = 0, at = 0, size = 0;
};

int64_t parse_count(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  SFT_CHECK(it != f.metadata().end(), "checkpoint", "{}: metadata has no '{}'", f.path(), key);
  const std::string& text = it->second;
  int64_t v = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  SFT_CHECK(ec == std::errc() && end == text.data() + text.size() && v >= 0, "checkpoint",
            "{}: metadata '{}' is '{}', expected a non-negative integer", f.path(), key, text);
  return v;
}

// The pieces a rank file's "slices" metadata lists ([[flat offset, local offset, size], ...]).
std::vector<Piece> rank_file_pieces(const SafetensorsFile& f, int64_t num_params) {
  auto it = f.metadata().find("slices");
  SFT_CHECK(it != f.metadata().end(), "checkpoint", "{}: metadata has no 'slices'", f.path());
  std::string error;
  const std::optional<nlohmann::json> j = parse_json_strict(it->second, &error);
  SFT_CHECK(j && j->is_array(), "checkpoint", "{}: metadata 'slices' is not a JSON array{}", f.path(),
            j ? "" : ": " + error);
  std::vector<Piece> out;
  for (const nlohmann::json& s : *j) {
    const bool ok = s.is_array() && s.size() == 3 &&
                    std::all_of(s.begin(), s.end(), [](const nlohmann::json& x) { return x.is_number_unsigned(); });
    SFT_CHECK(ok, "checkpoint", "{}: metadata 'slices' entry {} is not [flat offset, local offset, size]", f.path(),
              s.dump());
    // Compared as unsigned before any sum, so no value can wrap around or point outside.
    const uint64_t offset = s[0].get<uint64_t>(), at = s[1].get<uint64_t>(), size = s[2].get<uint64_t>();
    const uint64_t P = uint64_t(num_params);
    SFT_CHECK(offset <= P && size <= P - offset && at <= P, "checkpoint",
              "{}: slice {} lies outside the model's {} parameters", f.path(), s.dump(), num_params);
    out.push_back({int64_t(offset), int64_t(at), int64_t(size)});
  }
  return out;
}

// Every state of `local` at `slices` takes the values that `pieces` of file f hold where they
// overlap (only those bytes of the mapping are read); expect_numel: each state's length, or -1.
void copy_overlaps(const SafetensorsFile& f, const std::vector<Piece>& pieces, Backend& be,
                   const std::vector<LocalSlice>& slices, OptimizerState& local, int64_t expect_numel) {
  for (const auto& [name, dst] : local.tensors) {
    const SafetensorsTensorInfo& t = f.at(name);
    SFT_CHECK(t.dtype == "F32" && t.shape.size() == 1 && (expect_numel < 0 || t.numel() == expect_numel),
              "checkpoint", "{}: '{}' is {} {}, expected F32 {}", f.path(), name, t.dtype, t.shape_str(),
              expect_numel < 0 ? std::string("(n,)") : fmt::format("({},)", expect_numel));
    const float* src = reinterpret_cast<const float*>(t.data);
    for (const Piece& p : pieces) {
      SFT_CHECK(p.at <= t.numel() && p.size <= t.numel() - p.at, "checkpoint",
                "{}: slice at {} of {} elements is outside '{}' {}", f.path(), p.at, p.size, name, t.shape_str());
      for (const LocalSlice& s : slices) {
        const int64_t lo = std::max(s.offset, p.offset), hi = std::min(s.offset + s.size, p.offset + p.size);
        if (lo >= hi) continue;
        const Tensor part(dst.f32() + s.local_offset + (lo - s.offset), DType::f32, {hi - lo}, dst.device);
        HostTensor host(be, part, false);
        std::copy_n(src + p.at + (lo - p.offset), hi - lo, host.f32());
        host.store();
      }
    }
  }
}

// The rank files of dir: world size and the path of each rank's file; Error if any is missing.
std::vector<std::string> rank_files(const std::string& dir) {
  std::map<int, std::string> found;
  int world = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();  // optimizer-rank-00001-of-00003.safetensors
    if (n.size() != 41 || !n.starts_with("optimizer-rank-") || n.substr(20, 4) != "-of-" || !n.ends_with(".safetensors"))
      continue;
    const std::string r = n.substr(15, 5), w = n.substr(24, 5);
    if (!std::all_of(r.begin(), r.end(), ::isdigit) || !std::all_of(w.begin(), w.end(), ::isdigit)) continue;
    const int rank = std::stoi(r), of = std::stoi(w);
    SFT_CHECK(world < 0 || of == world, "checkpoint", "{}: optimizer files of {} and of {} ranks side by side ({})",
              dir, world, of, n);
    world = of;
    found[rank] = e.path().string();
  }
  SFT_CHECK(world > 0, "checkpoint", "{}: no {} or optimizer-rank-XXXXX-of-YYYYY.safetensors files", dir,
            kOptimizerFile);
  std::vector<std::string> out;
  for (int r = 0; r < world; ++r) {
    auto it = found.find(r);
    SFT_CHECK(it != found.end(), "checkpoint", "{}: {} is missing (the optimizer state was written by {} ranks)", dir,
              optimizer_rank_file(r, world), world);
    out.push_back(it->second);
  }
  SFT_CHECK(found.size() == size_t(world), "checkpoint", "{}: optimizer rank files beyond the {} ranks that wrote it",
            dir, world);
  return out;
}

}  // namespace

std::string optimizer_rank_file(int rank, int world) {
  return fmt::format("optimizer-rank-{:05d}-of-{:05d}.safetensors", rank, world);
}

void write_optimizer_full(const std::string& dir, Backend& be, const OptimizerState& full) {
  std::vector<HostTensor> host;  // staged on the host (zero copy on the CPU)
  std::vector<SafetensorsWriteItem> items;
  host.reserve(full.tensors.size());
  for (const auto& [name, t] : full.tensors)
    items.push_back(SafetensorsWriteItem::from_tensor(name, host.emplace_back(be, t, true).host_view()));
  write_safetensors((fs::path(dir) / kOptimizerFile).string(), items, {{"step", std::to_string(full.steps)}});
}

std::string write_optimizer_shard(const std::string& dir, Backend& be, const OptimizerState& local,
                                  const std::vector<LocalSlice>& slices, int64_t num_params, int rank, int world) {
  nlohmann::json js = nlohmann::json::array();
  for (const LocalSlice& s : slices) js.push_back({s.offset, s.local_offset, s.size});
  std::vector<SafetensorsWriteItem> items;
  for (const auto& [name, t] : local.tensors) items.push_back({name, nullptr, "F32", {t.numel()}});
  const std::string path = (fs::path(dir) / optimizer_rank_file(rank, world)).string();
  std::optional<HostTensor> staged;  // one state at a time on the host (zero copy on the CPU)
  write_safetensors_streamed(path, items, [&](size_t i) {
    staged.emplace(be, local.tensors[i].second, true);
    return staged->host_view().data;
  }, {{"step", std::to_string(local.steps)}, {"slices", js.dump()}, {"num_params", std::to_string(num_params)},
      {"rank", std::to_string(rank)}, {"world", std::to_string(world)}});
  return path;
}

void load_optimizer_state(const std::string& dir, Backend& be, int64_t num_params,
                          const std::vector<LocalSlice>& slices, OptimizerState& local) {
  const fs::path full = fs::path(dir) / kOptimizerFile;
  std::error_code ec;
  if (fs::exists(full, ec)) {  // one tensor per state over every parameter
    const SafetensorsFile f(full.string());
    copy_overlaps(f, {{0, 0, num_params}}, be, slices, local, num_params);
    local.steps = parse_count(f, "step");
    return;
  }
  // One file per rank of the run that saved: each holds the flat ranges its metadata lists; together
  // they must cover every parameter exactly once.
  std::vector<std::pair<Piece, std::string>> all;
  int64_t steps = -1;
  std::string steps_file;
  for (const std::string& path : rank_files(dir)) {
    const SafetensorsFile f(path);
    SFT_CHECK(parse_count(f, "num_params") == num_params, "checkpoint", "{}: written for {} parameters, the model has {}",
              path, parse_count(f, "num_params"), num_params);
    const int64_t s = parse_count(f, "step");
    SFT_CHECK(steps < 0 || s == steps, "checkpoint", "{}: step {}, but {} says {}", path, s, steps_file, steps);
    steps = s;
    steps_file = path;
    const std::vector<Piece> pieces = rank_file_pieces(f, num_params);
    copy_overlaps(f, pieces, be, slices, local, -1);
    for (const Piece& p : pieces)
      if (p.size > 0) all.emplace_back(p, path);
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first.offset < b.first.offset; });
  int64_t covered = 0;
  for (const auto& [p, path] : all) {
    SFT_CHECK(p.offset == covered, "checkpoint", "{}: the optimizer rank files {} parameters [{}, {}) ({})", dir,
              p.offset > covered ? "miss" : "hold twice", std::min(p.offset, covered), std::max(p.offset, covered),
              fs::path(path).filename().string());
    covered += p.size;
  }
  SFT_CHECK(covered == num_params, "checkpoint", "{}: the optimizer rank files hold parameters [0, {}) of {}", dir,
            covered, num_params);
  local.steps = steps;
}

}  // namespace sft
