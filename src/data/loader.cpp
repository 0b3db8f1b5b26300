// DataLoader: epoch plans (splitmix64 + Fisher-Yates with Lemire's bounded draw, so orders are
// the same on every platform and standard library), best-fit-decreasing packing, batch assembly.
#include "data/loader.h"

#include <algorithm>
#include <map>
#include <numeric>

#include <fmt/ranges.h>

#include "core/check.h"
#include "core/log.h"

namespace sft {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Permutation of [0, n) for (seed, epoch, stream); identity when !shuffle.
std::vector<int64_t> permutation(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, uint64_t stream) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  if (!shuffle) return p;
  uint64_t s = seed;
  uint64_t state = splitmix64(s) ^ (static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull) ^ (stream << 56);
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t j = static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state)) * bound) >> 64);
    std::swap(p[i], p[static_cast<int64_t>(j)]);
  }
  return p;
}

}  // namespace

int32_t pad_id_for(const Tokenizer& tok) {
  for (int32_t id : {tok.unk_id(), tok.pad_id(), tok.eos_id()})
    if (id >= 0) return id;
  return 0;
}

std::vector<std::vector<int64_t>> plan_epoch(const Dataset& data, const LoaderOptions& opt, int64_t epoch) {
  const std::vector<int64_t> order = permutation(data.size(), opt.shuffle, opt.seed, epoch, 0);
  std::vector<std::vector<int64_t>> rows;
  if (!opt.packing) {
    rows.reserve(order.size());
    for (int64_t i : order) rows.push_back({i});
    return rows;
  }
  std::vector<int64_t> by_length = order;
  std::stable_sort(by_length.begin(), by_length.end(),
                   [&](int64_t a, int64_t b) { return data.length(a) > data.length(b); });
  std::multimap<int64_t, size_t> space;  // free tokens -> row
  for (int64_t i : by_length) {
    const int64_t len = data.length(i);
    SFT_ASSERT(len <= opt.max_length);
    auto it = space.lower_bound(len);
    if (it == space.end()) {
      rows.push_back({i});
      if (opt.max_length - len > 0) space.emplace(opt.max_length - len, rows.size() - 1);
      continue;
    }
    const auto [free, row] = *it;
    space.erase(it);
    rows[row].push_back(i);
    if (free - len > 0) space.emplace(free - len, row);
  }
  const std::vector<int64_t> row_order = permutation(static_cast<int64_t>(rows.size()), opt.shuffle, opt.seed, epoch, 1);
  std::vector<std::vector<int64_t>> out(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) out[r] = std::move(rows[row_order[r]]);
  return out;
}

void fill_batch(const Dataset& data, const std::vector<const std::vector<int64_t>*>& rows, const LoaderOptions& opt,
                Batch& out) {
  int64_t longest = 0;
  for (const auto* row : rows) {
    int64_t n = 0;
    for (int64_t i : *row) n += data.length(i);
    longest = std::max(longest, n);
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t T = B == 0 ? 0 : opt.pad_to_max_length ? std::max(opt.max_length, longest) : longest;
  out.B = B;
  out.T = T;
  out.tokens.assign(static_cast<size_t>(B * T), opt.pad_id);
  out.targets.assign(static_cast<size_t>(B * T), -100);
  out.positions.assign(static_cast<size_t>(B * T), 0);
  out.cu_seqlens.assign(1, 0);
  for (int64_t r = 0; r < B; ++r) {
    int64_t at = r * T;
    for (int64_t i : *rows[r]) {
      const std::span<const int32_t> ids = data.ids(i);
      const std::span<const uint8_t> train = data.train(i);
      const int64_t len = static_cast<int64_t>(ids.size());
      for (int64_t t = 0; t < len; ++t) {
        out.tokens[at + t] = ids[t];
        out.positions[at + t] = static_cast<int32_t>(t);
        if (t + 1 < len && train[t + 1]) out.targets[at + t] = ids[t + 1];
      }
      at += len;
      out.cu_seqlens.push_back(static_cast<int32_t>(at));
    }
    const int64_t row_end = (r + 1) * T;
    if (at < row_end) {  // padding: its own sequence, positions from 0, no targets
      for (int64_t t = at; t < row_end; ++t) out.positions[t] = static_cast<int32_t>(t - at);
      out.cu_seqlens.push_back(static_cast<int32_t>(row_end));
    }
  }
}

DataLoader::DataLoader(const Dataset& data, LoaderOptions opt) : data_(data), opt_(opt) {
  SFT_CHECK(data.size() > 0, "data", "{}: no usable samples", data.path());
  SFT_CHECK(opt_.batch_size >= 1, "data", "batch size must be at least 1, got {}", opt_.batch_size);
  SFT_CHECK(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "data",
            "rank {} is outside world size {}", opt_.rank, opt_.world_size);
  SFT_CHECK(opt_.max_length >= data.model_max_length(), "data",
            "loader max_length {} is below the data's model_max_length {}", opt_.max_length, data.model_max_length());
  start_epoch(0);
}

void DataLoader::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  row_ = 0;
  rows_ = plan_epoch(data_, opt_, epoch);
}

int64_t DataLoader::batches_per_epoch() const {
  const int64_t per_step = opt_.batch_size * opt_.world_size;
  return (rows_per_epoch() + per_step - 1) / per_step;
}

double DataLoader::epoch_progress() const {
  const int64_t rows = rows_per_epoch();
  const double fraction = double(std::min(row_, rows)) / double(std::max<int64_t>(1, rows));
  return std::max(0.0, double(epoch_) + fraction);
}

bool DataLoader::next(Batch& out) {
  const int64_t R = rows_per_epoch();
  if (row_ >= R) {
    start_epoch(epoch_ + 1);
    return false;
  }
  std::vector<const std::vector<int64_t>*> mine;
  const int64_t first = row_ + opt_.rank * opt_.batch_size;
  for (int64_t r = first; r < std::min(first + opt_.batch_size, R); ++r) mine.push_back(&rows_[r]);
  row_ += opt_.batch_size * opt_.world_size;
  fill_batch(data_, mine, opt_, out);
  return true;
}

nlohmann::json DataLoader::state() const {
  return nlohmann::json{{"epoch", epoch_},
                        {"row", std::min(row_, rows_per_epoch())},
                        {"rows", rows_per_epoch()},
                        {"seed", opt_.seed},
                        {"shuffle", opt_.shuffle},
                        {"packing", opt_.packing},
                        {"max_length", opt_.max_length},
                        {"num_samples", data_.size()},
                        {"fingerprint", fmt::format("{:016x}", data_.fingerprint())},
                        {"data_path", data_.path()},
                        {"identity", data_.identity().to_json()}};
}

namespace {

// What a loader state says about its data and options, as fingerprint items (data first).
Fingerprint state_fingerprint(const nlohmann::json& s) {
  Fingerprint f;
  if (s.contains("identity")) {  // in Dataset::identity()'s order (a JSON object's keys come back sorted)
    const Fingerprint saved = Fingerprint::from_json(s.at("identity"), "data");
    for (const char* name : {"data file size", "data file XXH3", "template"})
      if (const std::string* v = saved.find(name)) f.add(name, *v);
    for (const FingerprintItem& it : saved.items()) f.add(it.name, it.value);
  }
  const std::pair<const char*, const char*> keys[] = {{"num_samples", "usable samples"},
                                                      {"fingerprint", "sample lengths (hash)"},
                                                      {"seed", "--seed"},
                                                      {"shuffle", "shuffle"},
                                                      {"packing", "--packing"},
                                                      {"max_length", "--model_max_length"}};
  for (auto [key, name] : keys)
    if (s.contains(key)) f.add(name, s.at(key).is_string() ? s.at(key).get<std::string>() : s.at(key).dump());
  return f;
}

// The differences that make a saved position meaningless here, one phrase each; the data file's
// size and checksum as one phrase naming the file. Items the checkpoint does not record go to
// `unchecked`.
std::vector<std::string> describe_changes(const nlohmann::json& s, const Fingerprint& saved, const Fingerprint& now,
                                          const std::string& path, std::vector<std::string>& unchecked) {
  std::vector<std::string> out;
  const std::vector<FingerprintChange> changes = compare_fingerprints(saved, now);
  const FingerprintChange *size = nullptr, *hash = nullptr;
  for (const FingerprintChange& c : changes) {
    if (!c.before) unchecked.push_back(c.name);
    else if (!c.now) continue;  // recorded by another sft version, unknown here
    else if (c.name == "data file size") size = &c;
    else if (c.name == "data file XXH3") hash = &c;
  }
  if (size || hash) {
    std::string file = path;
    if (const std::string saved_path = s.value("data_path", path); saved_path != path)
      file += fmt::format(" (the checkpoint's was {})", saved_path);
    const auto get = [](const Fingerprint& f, const char* name) {
      const std::string* v = f.find(name);
      return v ? *v : std::string("none");
    };
    if (size)
      out.push_back(fmt::format("data file {}: {} when the checkpoint was saved, {} now (XXH3 {}, now {})", file,
                                *size->before, *size->now, get(saved, "data file XXH3"), get(now, "data file XXH3")));
    else
      out.push_back(fmt::format("data file {}: the same size ({}) but other content: XXH3 {} when the checkpoint was "
                                "saved, {} now", file, get(now, "data file size"), *hash->before, *hash->now));
  }
  for (const FingerprintChange& c : changes)
    if (c.before && c.now && c.name != "data file size" && c.name != "data file XXH3")
      out.push_back(describe_change(c, "when the checkpoint was saved", "now"));
  return out;
}

}  // namespace

void DataLoader::load_state(const nlohmann::json& s) {
  try {
    const int64_t epoch = s.at("epoch").get<int64_t>(), row = s.at("row").get<int64_t>();
    SFT_CHECK(epoch >= 0 && row >= 0, "data", "loader state: negative epoch {} or row {}", epoch, row);
    constexpr int64_t kFar = int64_t(1) << 40;  // no run gets there; epoch + 1 below cannot overflow
    SFT_CHECK(epoch < kFar && row < kFar, "data", "loader state: epoch {} or row {} is out of range", epoch, row);
    std::vector<std::string> unchecked;
    const std::vector<std::string> changed =
        describe_changes(s, state_fingerprint(s), state_fingerprint(state()), data_.path(), unchecked);
    if (!unchecked.empty())
      log_info("[data] the checkpoint's loader state records no {} (saved by an older sft): not checked",
               fmt::join(unchecked, ", "));
    const std::string position = fmt::format("epoch {}, row {}", epoch, row);
    if (!opt_.ignore_data_skip) {
      if (!changed.empty())
        fail("data", "loader state: the checkpoint's data position ({}) is not a position in this run's data: {}. "
                     "Resume with the data and options the checkpoint was saved with, start a new --output_dir, or "
                     "pass --ignore_data_skip True to start epoch {} of this data from its first row",
             position, fmt::join(changed, "; "), epoch);
      start_epoch(epoch);
      SFT_CHECK(row <= rows_per_epoch(), "data", "loader state: row {} is past the epoch's {} rows", row, rows_per_epoch());
      row_ = row;
      return;
    }
    // HF's ignore_data_skip: the epoch the checkpoint was in, from its first row (the next epoch
    // when the checkpoint was taken at an epoch's end).
    const int64_t saved_rows = s.contains("rows") ? s.at("rows").get<int64_t>() : rows_per_epoch();
    const int64_t start = row >= saved_rows && row > 0 ? epoch + 1 : epoch;
    start_epoch(start);
    if (!changed.empty())
      log_info("[data] --ignore_data_skip True: resuming although {} (without the flag this resume is refused); "
               "epoch {} of this data starts from its first row", fmt::join(changed, "; "), start);
    else
      log_info("[data] --ignore_data_skip True: epoch {} starts from its first row instead of the saved position ({})",
               start, position);
  } catch (const nlohmann::json::exception& e) {
    fail("data", "loader state: {}", e.what());
  }
}

}  // namespace sft
