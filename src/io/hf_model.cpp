// HF model directory load/save (see hf_model.h). References: transformers
// modeling_utils.save_pretrained / load_state_dict (index format, shard names, total_size),
// huggingface_hub split_torch_state_dict_into_shards (greedy in key order, 5GB default), and
// ecosystem.md §1.3, §1.5. Every file is written atomically (tmp + fsync + rename).
#include "io/hf_model.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "backend/host_access.h"
#include "core/check.h"
#include "io/safetensors.h"

namespace sft {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// The safetensors files of a model directory and the tensor -> file mapping.
struct WeightFiles {
  std::vector<SafetensorsFile> files;
  std::map<std::string, const SafetensorsTensorInfo*> tensors;
};

WeightFiles open_weight_files(const std::string& dir) {
  WeightFiles w;
  const fs::path root(dir);
  std::error_code ec;
  if (fs::exists(root / kIndexFile, ec)) {
    const std::string index_path = (root / kIndexFile).string();
    std::string err;
    std::optional<json> index = parse_json_strict(read_text_file(index_path, "hf_model"), &err);
    if (!index) fail("hf_model", "{}: not valid JSON: {}", index_path, err);
    if (!index->is_object() || !index->contains("weight_map") || !(*index)["weight_map"].is_object())
      fail("hf_model", "{}: expected an object with a 'weight_map' object", index_path);
    std::map<std::string, std::vector<std::string>> by_file;  // shard -> tensor names
    for (auto& [name, file] : (*index)["weight_map"].items()) {
      if (!file.is_string())
        fail("hf_model", "{}: weight_map['{}'] is {}, expected a file name", index_path, name, file.type_name());
      by_file[file.get<std::string>()].push_back(name);
    }
    for (const auto& [file, names] : by_file) {
      const fs::path fp(file);
      if (file.empty() || fp.is_absolute() || std::any_of(fp.begin(), fp.end(), [](auto& c) { return c == ".."; }))
        fail("hf_model", "{}: weight_map maps '{}' to '{}', expected a file name inside the directory", index_path,
             names[0], file);
      if (!fs::exists(root / file, ec))
        fail("hf_model", "{}: weight_map maps {} tensor(s) ('{}', ...) to '{}', which does not exist", index_path,
             names.size(), names[0], file);
    }
    w.files.reserve(by_file.size());  // each shard is opened once; pointers into files stay valid
    for (const auto& [file, names] : by_file) {
      const SafetensorsFile& st = w.files.emplace_back((root / file).string());
      std::set<std::string> listed(names.begin(), names.end());
      for (const std::string& name : names) {
        const SafetensorsTensorInfo* t = st.find(name);
        if (!t) fail("hf_model", "{}: weight_map maps '{}' to '{}', which has no such tensor", index_path, name, file);
        w.tensors[name] = t;
      }
      for (const SafetensorsTensorInfo& t : st.tensors())
        if (!listed.count(t.name))
          fail("hf_model", "{}: tensor '{}' in '{}' is not listed there by the weight_map", index_path, t.name, file);
    }
  } else if (fs::exists(root / kSingleFile, ec)) {
    const SafetensorsFile& st = w.files.emplace_back((root / kSingleFile).string());
    for (const SafetensorsTensorInfo& t : st.tensors()) w.tensors[t.name] = &t;
  } else {
    const bool has_bin =
        fs::exists(root / "pytorch_model.bin", ec) || fs::exists(root / "pytorch_model.bin.index.json", ec);
    fail("hf_model", "{}: no {} or {}{}", dir, kSingleFile, kIndexFile,
         has_bin ? fmt::format(" (found pytorch_model.bin: sft does not unpickle, a pickle can run code; convert it "
                               "once to safetensors with `python3 tools/convert_pytorch_bin.py {}` from the sft "
                               "source tree, which needs `pip install torch safetensors` and loads with "
                               "torch.load(weights_only=True))", dir)
                 : std::string());
  }
  return w;
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("({}{})", fmt::join(s, ", "), s.size() == 1 ? "," : "");
}

bool same_bytes(const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data, b.data, size_t(a.nbytes())) == 0;
}

// Elements [begin, begin + n) of an F32/BF16/F16 tensor (possibly unaligned inside the mapping)
// -> fp32; only those bytes of the mapping are touched.
void copy_range_to_f32(const SafetensorsTensorInfo& t, int64_t begin, int64_t n, float* dst) {
  const DType dt = *safetensors_float_dtype(t.dtype);
  const size_t es = dtype_size(dt);
  const uint8_t* src = t.data + size_t(begin) * es;
  if (dt == DType::f32 || reinterpret_cast<uintptr_t>(src) % es == 0) {
    convert_to_f32(src, dt, dst, size_t(n));
    return;
  }
  std::vector<uint16_t> tmp(size_t(1) << 16);
  for (size_t i = 0; i < size_t(n); i += tmp.size()) {
    const size_t m = std::min(tmp.size(), size_t(n) - i);
    std::memcpy(tmp.data(), src + i * es, m * es);
    convert_to_f32(tmp.data(), dt, dst + i, m);
  }
}

// The one unit of a parameter store that a streamed writer holds: hold(u) releases the unit held
// before (if another) and acquires u; the last one is released on destruction.
struct UnitCursor {
  ParamStore& store;
  int held = -1;
  void hold(int unit) {
    if (unit == held) return;
    if (held >= 0) store.release(std::exchange(held, -1));
    store.acquire(unit);
    held = unit;
  }
  ~UnitCursor() {
    if (held >= 0) store.release(held);
  }
};

bool is_shard_name(const std::string& f) {  // model-00001-of-00004.safetensors
  if (f.size() != 32 || !f.starts_with("model-") || !f.ends_with(".safetensors") || f.substr(11, 4) != "-of-")
    return false;
  for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19})
    if (!std::isdigit(static_cast<unsigned char>(f[i]))) return false;
  return true;
}

}  // namespace

DType dtype_from_torch_name(const std::string& torch_dtype) {
  if (torch_dtype == "float32") return DType::f32;
  if (torch_dtype == "bfloat16") return DType::bf16;
  if (torch_dtype == "float16") return DType::f16;
  fail("hf_model", "torch_dtype '{}' is not supported, expected float32, bfloat16 or float16", torch_dtype);
}

const char* torch_name(DType dt) {
  switch (dt) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
  }
  return "float32";
}

void load_hf_weights(const std::string& dir, LlamaModel& model) {
  const WeightFiles w = open_weight_files(dir);
  const LlamaConfig& cfg = model.config();
  const std::vector<ParamRef>& table = model.param_table();

  std::vector<std::string> missing, unexpected, problems;
  std::set<std::string> used;
  for (const ParamRef& p : table) {
    auto it = w.tensors.find(p.hf_name);
    if (it == w.tensors.end()) {
      missing.push_back(p.hf_name);
      continue;
    }
    used.insert(p.hf_name);
    const SafetensorsTensorInfo& t = *it->second;
    const std::vector<int64_t> want(p.view.shape.begin(), p.view.shape.begin() + p.view.ndim);
    if (t.shape != want) problems.push_back(fmt::format("'{}' has shape {}, expected {}", t.name, t.shape_str(),
                                                        shape_str(want)));
    if (!safetensors_float_dtype(t.dtype))
      problems.push_back(fmt::format("'{}' has dtype {}, expected F32, BF16 or F16", t.name, t.dtype));
  }
  for (const auto& [name, t] : w.tensors) {
    if (used.count(name) || name.ends_with(".rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && cfg.tie_word_embeddings) {
      auto embed = w.tensors.find("model.embed_tokens.weight");
      if (embed != w.tensors.end() && same_bytes(*t, *embed->second)) continue;
      unexpected.push_back("lm_head.weight (tie_word_embeddings is true and it differs from "
                           "model.embed_tokens.weight)");
      continue;
    }
    unexpected.push_back(name);
  }
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(fmt::format("missing tensors: {}", fmt::join(missing, ", ")));
  if (!unexpected.empty()) parts.push_back(fmt::format("unexpected: {}", fmt::join(unexpected, ", ")));
  parts.insert(parts.end(), problems.begin(), problems.end());
  if (!parts.empty()) fail("hf_model", "{}: {}", dir, fmt::join(parts, "; "));

  // Straight into what this process holds (its local slices of the flat layout): only the byte
  // ranges of those slices are read from the mapped files, so a rank of a sharded store touches
  // its 1/N of the model and never a whole unit or file.
  ParamStore& ps = model.store();
  const Tensor local = ps.local_params();
  int64_t held = 0;
  for (const LocalSlice& s : ps.local_slices()) held += s.size;
  for (const ParamRef& p : table) {
    const SafetensorsTensorInfo& t = *w.tensors.at(p.hf_name);
    const int64_t n = p.view.numel();
    for (const LocalSlice& s : ps.local_slices()) {
      const int64_t lo = std::max(s.offset, p.offset), hi = std::min(s.offset + s.size, p.offset + n);
      if (lo >= hi) continue;
      HostTensor host(model.backend(), Tensor(local.f32() + s.local_offset + (lo - s.offset), DType::f32, {hi - lo}, local.device), false);
      copy_range_to_f32(t, lo - p.offset, hi - lo, host.f32());
      host.store();
    }
  }
  if (held == ps.num_params()) {  // the whole model here: each unit's derived weight copies go
    for (int u = 0; u < ps.num_units(); ++u) {
      ps.acquire(u);
      ps.written(u);
      ps.release(u);
    }
  } else {
    ps.params_updated();  // shards written in place, as by an optimizer step
  }
}

std::unique_ptr<LlamaModel> load_hf_model(const std::string& dir, Backend& backend, ModelOptions opt) {
  const LlamaConfig cfg = load_llama_config((fs::path(dir) / "config.json").string());
  auto model = std::make_unique<LlamaModel>(cfg, backend, opt);
  load_hf_weights(dir, *model);
  return model;
}

void save_hf_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt) {
  const DType dt = opt.dtype ? *opt.dtype : dtype_from_torch_name(model.config().torch_dtype);
  SFT_CHECK(opt.max_shard_bytes > 0, "hf_model", "max_shard_bytes is {}, expected > 0", opt.max_shard_bytes);
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  SFT_CHECK(fs::is_directory(root, ec), "hf_model", "{}: cannot create the directory", dir);

  LlamaConfig cfg = model.config();
  cfg.torch_dtype = torch_name(dt);
  write_file_atomic((root / "config.json").string(), llama_config_to_json(cfg).dump(2) + "\n");

  // Greedy shards in table order; a tensor larger than the limit gets a shard of its own.
  const std::vector<ParamRef>& table = model.param_table();
  std::vector<std::vector<const ParamRef*>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const ParamRef& p : table) {
    const uint64_t nb = uint64_t(p.view.numel()) * dtype_size(dt);
    if (!shards.back().empty() && shard_bytes + nb > uint64_t(opt.max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&p);
    shard_bytes += nb;
    total_bytes += nb;
  }

  std::set<std::string> written;
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? std::string(kSingleFile)
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1,
                                                              shards.size());
    std::vector<SafetensorsWriteItem> items;
    for (const ParamRef* p : shards[s]) {
      items.push_back({p->hf_name, nullptr, "F32", std::vector<int64_t>(p->view.shape.begin(), p->view.shape.begin() + p->view.ndim)});
      weight_map[p->hf_name] = file;
    }
    // Streamed in the file's order: the unit of the tensor the writer reaches is acquired (a
    // sharded store gathers it) and the previous one released, so one unit is held at a time.
    UnitCursor cursor{model.store()};
    std::optional<HostTensor> staged;  // the tensor being written, on the host (zero copy on the CPU)
    write_safetensors_streamed((root / file).string(), items, [&](size_t i) {
      const ParamRef& p = *shards[s][i];
      cursor.hold(p.unit);
      staged.emplace(model.backend(), p.view, true);
      return staged->host_view().data;
    }, {}, dt);
    written.insert(file);
  }
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_file_atomic((root / kIndexFile).string(), index.dump(2) + "\n");
    written.insert(kIndexFile);
  }

  // Remove weight files of an earlier save that the loader could otherwise pick up.
  std::vector<fs::path> stale;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::string f = e.path().filename().string();
    if ((f == kSingleFile || f == kIndexFile || is_shard_name(f)) && !written.count(f)) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) fs::remove(p, ec);
}

void write_generation_config(const LlamaConfig& cfg, const std::string& dir) {
  json g = {{"_from_model_config", true}};
  if (cfg.bos_token_id >= 0) g["bos_token_id"] = cfg.bos_token_id;
  if (cfg.eos_token_ids.size() == 1) g["eos_token_id"] = cfg.eos_token_ids[0];
  if (cfg.eos_token_ids.size() > 1) g["eos_token_id"] = cfg.eos_token_ids;
  if (cfg.pad_token_id >= 0) g["pad_token_id"] = cfg.pad_token_id;
  write_file_atomic((fs::path(dir) / "generation_config.json").string(), g.dump(2) + "\n");
}

}  // namespace sft
