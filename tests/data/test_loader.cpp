// Batching on the dummy data: packed and padded batches hold exactly the dataset's samples with
// shifted targets, per-sample positions and sequence boundaries; the order is a pure function of
// (seed, epoch); ranks split the rows without overlap; a saved position resumes exactly. A resume
// against changed data (same-size content change, another size, another built-in or Jinja
// template) is refused naming the file with both sizes and XXH3s or both templates, and with
// ignore_data_skip goes on from the first row of the saved epoch (the next one at an epoch's end).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/check.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data_test_util.h"
#include "core/file_hash.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

const sft::Dataset& dummy(int64_t max_length = 512) {
  static auto tok = sft::load_tokenizer(kLlama2);
  static std::map<int64_t, sft::Dataset> cache;
  auto it = cache.find(max_length);
  if (it == cache.end()) {
    sft::DataOptions opt;
    opt.model_max_length = max_length;
    it = cache.emplace(max_length, sft::load_dataset(dummy_data(), *tok, opt)).first;
  }
  return it->second;
}

// Checks a batch against the dataset and returns the dataset samples it holds, in order.
std::vector<int64_t> check_batch(const sft::Dataset& ds, const sft::Batch& b, int32_t pad_id) {
  std::map<std::vector<int32_t>, std::vector<int64_t>> by_ids;  // sample ids -> dataset rows
  for (int64_t i = 0; i < ds.size(); ++i) by_ids[std::vector<int32_t>(ds.ids(i).begin(), ds.ids(i).end())].push_back(i);
  const int64_t N = b.B * b.T;
  EXPECT_EQ(static_cast<int64_t>(b.tokens.size()), N);
  EXPECT_EQ(b.targets.size(), b.tokens.size());
  EXPECT_EQ(b.positions.size(), b.tokens.size());
  EXPECT_EQ(b.cu_seqlens.front(), 0);
  EXPECT_EQ(b.cu_seqlens.back(), N);
  std::vector<int64_t> samples;
  for (size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s) {
    const int64_t lo = b.cu_seqlens[s], hi = b.cu_seqlens[s + 1];
    EXPECT_LT(lo, hi);
    EXPECT_EQ(lo / b.T, (hi - 1) / b.T) << "a sequence crosses a row end";
    for (int64_t t = lo; t < hi; ++t) EXPECT_EQ(b.positions[t], t - lo);
    const std::vector<int32_t> ids(b.tokens.begin() + lo, b.tokens.begin() + hi);
    auto it = by_ids.find(ids);
    if (it == by_ids.end()) {  // padding: the rest of a row
      EXPECT_EQ(hi % b.T, 0);
      for (int64_t t = lo; t < hi; ++t) {
        EXPECT_EQ(b.tokens[t], pad_id);
        EXPECT_EQ(b.targets[t], -100);
      }
      continue;
    }
    const int64_t row = it->second.front();
    samples.push_back(row);
    const std::vector<int32_t> labels = ds.labels(row);
    for (int64_t t = lo; t + 1 < hi; ++t) EXPECT_EQ(b.targets[t], labels[t - lo + 1]);
    EXPECT_EQ(b.targets[hi - 1], -100) << "the last token of a sample predicts nothing";
  }
  return samples;
}

TEST(Loader, PackingHoldsEverySampleOncePerEpoch) {
  const sft::Dataset& ds = dummy(512);
  sft::LoaderOptions opt;
  opt.batch_size = 2;
  opt.max_length = 512;
  sft::DataLoader loader(ds, opt);
  std::multiset<int64_t> seen;
  sft::Batch b;
  int64_t batches = 0, targets = 0, slots = 0;
  while (loader.next(b)) {
    ++batches;
    EXPECT_LE(b.T, 512);
    for (int64_t s : check_batch(ds, b, 0)) seen.insert(s);
    targets += b.num_targets();
    slots += b.num_tokens();
  }
  EXPECT_EQ(batches, loader.batches_per_epoch());
  EXPECT_EQ(static_cast<int64_t>(seen.size()), ds.size());
  EXPECT_EQ(static_cast<int64_t>(std::set<int64_t>(seen.begin(), seen.end()).size()), ds.size());
  int64_t want_targets = 0;
  for (int64_t i = 0; i < ds.size(); ++i)
    for (size_t t = 1; t < ds.train(i).size(); ++t) want_targets += ds.train(i)[t];
  EXPECT_EQ(targets, want_targets);
  EXPECT_GT(static_cast<double>(ds.stats().tokens) / static_cast<double>(slots), 0.9) << "packing efficiency";
  EXPECT_EQ(loader.epoch(), 1);
}

TEST(Loader, PaddingModeIsOneSamplePerRowRightPadded) {
  const sft::Dataset& ds = dummy(512);
  sft::LoaderOptions opt;
  opt.batch_size = 4;
  opt.max_length = 512;
  opt.packing = false;
  opt.pad_id = 0;
  sft::DataLoader loader(ds, opt);
  sft::Batch b;
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.B, 4);
  const auto samples = check_batch(ds, b, 0);
  ASSERT_EQ(samples.size(), 4u);
  int64_t longest = 0;
  for (int64_t s : samples) longest = std::max(longest, ds.length(s));
  EXPECT_EQ(b.T, longest);
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(b.positions[r * b.T], 0);
  EXPECT_EQ(loader.batches_per_epoch(), 125);
  opt.pad_to_max_length = true;  // FastChat: every row padded to model_max_length
  sft::DataLoader fixed(ds, opt);
  ASSERT_TRUE(fixed.next(b));
  EXPECT_EQ(b.T, 512);
  check_batch(ds, b, 0);
}

std::vector<std::vector<int32_t>> epoch_tokens(const sft::Dataset& ds, sft::LoaderOptions opt, int64_t epochs) {
  sft::DataLoader loader(ds, opt);
  std::vector<std::vector<int32_t>> out;
  sft::Batch b;
  for (int64_t e = 0; e < epochs;)
    if (loader.next(b)) out.push_back(b.tokens);
    else ++e;
  return out;
}

TEST(Loader, OrderIsAFunctionOfSeedAndEpoch) {
  const sft::Dataset& ds = dummy(512);
  for (bool packing : {true, false}) {
    sft::LoaderOptions opt;
    opt.packing = packing;
    opt.batch_size = 3;
    const auto a = epoch_tokens(ds, opt, 2), b = epoch_tokens(ds, opt, 2);
    EXPECT_EQ(a, b);
    const size_t per_epoch = a.size() / 2;
    EXPECT_NE(std::vector(a.begin(), a.begin() + per_epoch), std::vector(a.begin() + per_epoch, a.end()));
    opt.seed = 7;
    EXPECT_NE(epoch_tokens(ds, opt, 1), std::vector(a.begin(), a.begin() + per_epoch));
  }
  // A pinned first row order guards against accidental changes of the shuffle.
  sft::LoaderOptions opt;
  opt.packing = false;
  const auto rows = sft::plan_epoch(ds, opt, 0);
  EXPECT_EQ((std::vector<int64_t>{rows[0][0], rows[1][0], rows[2][0]}), (std::vector<int64_t>{393, 224, 286}));
  const auto rows1 = sft::plan_epoch(ds, opt, 1);
  EXPECT_EQ((std::vector<int64_t>{rows1[0][0], rows1[1][0], rows1[2][0]}), (std::vector<int64_t>{87, 32, 376}));
  opt.shuffle = false;
  const auto plain = sft::plan_epoch(ds, opt, 0);
  EXPECT_EQ(plain[0][0], 0);
  EXPECT_EQ(plain[499][0], 499);
}

TEST(Loader, RanksShareTheRowsWithoutOverlap) {
  const sft::Dataset& ds = dummy(256);
  for (bool packing : {true, false}) {
    sft::LoaderOptions opt;
    opt.packing = packing;
    opt.max_length = 256;
    opt.batch_size = 2;
    opt.world_size = 3;
    std::multiset<int64_t> seen;
    int64_t steps = -1;
    for (int64_t rank = 0; rank < 3; ++rank) {
      opt.rank = rank;
      sft::DataLoader loader(ds, opt);
      if (steps < 0) steps = loader.batches_per_epoch();
      EXPECT_EQ(loader.batches_per_epoch(), steps);
      sft::Batch b;
      int64_t n = 0;
      while (loader.next(b)) {
        ++n;
        for (int64_t s : check_batch(ds, b, 0)) seen.insert(s);
      }
      EXPECT_EQ(n, steps);
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), ds.size());
    EXPECT_EQ(static_cast<int64_t>(std::set<int64_t>(seen.begin(), seen.end()).size()), ds.size());
  }
}

TEST(Loader, SavedPositionResumesExactly) {
  const sft::Dataset& ds = dummy(512);
  for (bool packing : {true, false}) {
    sft::LoaderOptions opt;
    opt.packing = packing;
    opt.batch_size = packing ? 1 : 16;
    sft::DataLoader a(ds, opt);
    const int64_t per_epoch = a.batches_per_epoch();
    sft::Batch b, c;
    // Stop inside epoch 1, save, and compare the next batches (crossing into epoch 2).
    for (int64_t k = 0; k < per_epoch + 1 + per_epoch / 2; ++k) a.next(b);
    const std::string saved = a.state().dump();
    sft::DataLoader r(ds, opt);
    r.load_state(nlohmann::json::parse(saved));
    EXPECT_EQ(r.epoch(), 1);
    for (int64_t k = 0; k < per_epoch + 2; ++k) {
      const bool x = a.next(b), y = r.next(c);
      ASSERT_EQ(x, y) << k;
      if (!x) continue;
      EXPECT_EQ(b.tokens, c.tokens);
      EXPECT_EQ(b.targets, c.targets);
      EXPECT_EQ(b.cu_seqlens, c.cu_seqlens);
    }
    // A different seed or different data is refused.
    sft::LoaderOptions other = opt;
    other.seed = 1;
    sft::DataLoader o(ds, other);
    EXPECT_THROW(o.load_state(nlohmann::json::parse(saved)), sft::Error);
    sft::DataLoader d(dummy(256), sft::LoaderOptions{.max_length = 256, .packing = packing});
    EXPECT_THROW(d.load_state(nlohmann::json::parse(saved)), sft::Error);
  }
}

// epoch_progress() (the trainer's "epoch", O(1)) is epoch + row / rows of state() at every step
// of two epochs, on the last rank of an uneven split too, reaches exactly 1 at the end of epoch 0,
// and is the same in a loader resumed from a saved state (mid-epoch and at an epoch's end).
TEST(Loader, EpochProgressMatchesTheSavedState) {
  const sft::Dataset& ds = dummy(512);
  const auto from_state = [](const sft::DataLoader& l) {
    const nlohmann::json s = l.state();
    const double rows = double(std::max<int64_t>(1, l.rows_per_epoch()));
    return std::max(0.0, double(s["epoch"].get<int64_t>()) + double(s["row"].get<int64_t>()) / rows);
  };
  for (bool packing : {true, false}) {
    for (int64_t world : {1, 3}) {
      sft::LoaderOptions opt;
      opt.packing = packing;
      opt.batch_size = packing ? 1 : 5;
      opt.world_size = world;
      opt.rank = world - 1;
      sft::DataLoader a(ds, opt);
      const int64_t per_epoch = a.batches_per_epoch();
      const std::set<int64_t> resume_at = {per_epoch / 2, per_epoch, per_epoch + 1 + per_epoch / 2};
      EXPECT_EQ(a.epoch_progress(), 0.0);
      sft::Batch b;
      double last = 0.0;
      for (int64_t k = 1; k <= 2 * (per_epoch + 1); ++k) {
        const bool got = a.next(b);
        const std::string where = fmt::format("packing {} world {} call {}", packing, world, k);
        EXPECT_EQ(a.epoch_progress(), from_state(a)) << where;
        EXPECT_GE(a.epoch_progress(), last) << where;
        last = a.epoch_progress();
        if (k == per_epoch) {
          EXPECT_EQ(a.epoch_progress(), 1.0) << where;
        }
        if (!got) {
          EXPECT_EQ(a.epoch_progress(), double(a.epoch())) << where;
        }
        if (resume_at.count(k)) {
          sft::DataLoader r(ds, opt);
          r.load_state(a.state());
          EXPECT_EQ(r.epoch_progress(), a.epoch_progress()) << where;
          sft::Batch c;
          sft::DataLoader a2 = a;  // the original run, continued from here
          for (int64_t j = 0; j < 3; ++j) {
            a2.next(b);
            r.next(c);
            EXPECT_EQ(r.epoch_progress(), a2.epoch_progress()) << where << " then " << j;
            EXPECT_EQ(r.epoch_progress(), from_state(r)) << where << " then " << j;
          }
        }
      }
    }
  }
}

TEST(Loader, PositionIsGlobalAcrossWorldSizes) {
  // Two ranks consume rows 0..3 of an epoch; one rank resumes at row 4 with the same rows.
  const sft::Dataset& ds = dummy(512);
  sft::LoaderOptions opt;
  opt.packing = false;
  opt.batch_size = 2;
  opt.world_size = 2;
  sft::DataLoader r0(ds, opt);
  sft::Batch b;
  r0.next(b);
  const nlohmann::json state = r0.state();
  EXPECT_EQ(state["row"], 4);
  sft::LoaderOptions single = opt;
  single.world_size = 1;
  sft::DataLoader s(ds, single);
  s.load_state(state);
  ASSERT_TRUE(s.next(b));
  const auto rows = sft::plan_epoch(ds, opt, 0);
  EXPECT_EQ(check_batch(ds, b, 0), (std::vector<int64_t>{rows[4][0], rows[5][0]}));
}

TEST(Loader, UnevenLastBatchMayBeEmptyOnSomeRanks) {
  const sft::Dataset& ds = dummy(512);
  sft::LoaderOptions opt;
  opt.packing = false;
  opt.batch_size = 200;
  opt.world_size = 2;
  opt.rank = 1;  // 500 rows: step 0 gives rank 1 rows 200..399; step 1 gives rank 0 rows 400..499, rank 1 none
  sft::DataLoader loader(ds, opt);
  EXPECT_EQ(loader.batches_per_epoch(), 2);
  sft::Batch b;
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.B, 200);
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.B, 0);
  EXPECT_EQ(b.cu_seqlens, std::vector<int32_t>{0});
  EXPECT_FALSE(loader.next(b));
}

// --- resume against changed data ---

const sft::Tokenizer& llama2_tok() {
  static auto tok = sft::load_tokenizer(kLlama2);
  return *tok;
}

sft::Dataset load_at(const fs::path& path, const std::string& tmpl = "vicuna_v1.1", const std::string& model_dir = "") {
  sft::DataOptions opt;
  opt.conversation_template = tmpl;
  opt.model_dir = model_dir;
  return sft::load_dataset(path.string(), llama2_tok(), opt);
}

// The state after two batches of a loader over `ds`.
nlohmann::json state_after_two(const sft::Dataset& ds, const sft::LoaderOptions& opt) {
  sft::DataLoader l(ds, opt);
  sft::Batch b;
  l.next(b);
  l.next(b);
  return nlohmann::json::parse(l.state().dump());  // as a checkpoint stores it
}

std::string resume_error(const sft::Dataset& ds, const nlohmann::json& saved, const sft::LoaderOptions& opt) {
  try {
    sft::DataLoader l(ds, opt);
    l.load_state(saved);
  } catch (const sft::Error& e) {
    return e.what();
  }
  return "";
}

std::string commas(uint64_t v) {  // 234166 -> "234,166 bytes"
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) out += (i && (s.size() - i) % 3 == 0 ? "," : "") + std::string(1, s[i]);
  return out + " bytes";
}

std::string hex(uint64_t h) { return fmt::format("{:016x}", h); }

TEST(LoaderResume, SameSizeOtherContentNamesTheFileAndBothChecksums) {
  const fs::path p = temp_dir("resume-content") / "train.json";
  std::string text = read_file(dummy_data());
  write_file(p, text);
  const sft::LoaderOptions opt{.batch_size = 4};
  const nlohmann::json saved = state_after_two(load_at(p), opt);
  const uint64_t before = sft::digest_file(p.string()).xxh3;
  const size_t at = text.find("\"value\": \"") + 10;  // first letter of the first message
  text[at] = text[at] == 'Q' ? 'Z' : 'Q';
  write_file(p, text);
  const uint64_t after = sft::digest_file(p.string()).xxh3;
  ASSERT_NE(before, after);
  const std::string e = resume_error(load_at(p), saved, opt);
  EXPECT_NE(e.find(fmt::format("data file {}: the same size ({}) but other content: XXH3 {} when the checkpoint was "
                               "saved, {} now", p.string(), commas(text.size()), hex(before), hex(after))),
            std::string::npos) << e;
  EXPECT_NE(e.find("the checkpoint's data position (epoch 0, row 8)"), std::string::npos) << e;
  EXPECT_NE(e.find("pass --ignore_data_skip True to start epoch 0 of this data from its first row"), std::string::npos) << e;
  EXPECT_EQ(e.find("template"), std::string::npos) << e;  // only what changed
  fs::remove_all(p.parent_path());
}

TEST(LoaderResume, AnotherSizeNamesBothSizesAndNothingElse) {
  const fs::path p = temp_dir("resume-size") / "train.json";
  const std::string text = read_file(dummy_data());
  write_file(p, text);
  const sft::LoaderOptions opt{.batch_size = 4};
  const nlohmann::json saved = state_after_two(load_at(p), opt);
  const uint64_t before = sft::digest_file(p.string()).xxh3;
  write_file(p, text + "\n\n");  // the same samples: only the file's size and checksum differ
  const uint64_t after = sft::digest_file(p.string()).xxh3;
  const sft::Dataset now = load_at(p);
  EXPECT_EQ(now.stats().xxh3, after);  // hashed while read, equal to a separate read of the file
  const std::string e = resume_error(now, saved, opt);
  EXPECT_NE(e.find(fmt::format("data file {}: {} when the checkpoint was saved, {} now (XXH3 {}, now {})", p.string(),
                               commas(text.size()), commas(text.size() + 2), hex(before), hex(after))),
            std::string::npos) << e;
  for (const char* other : {"usable samples", "sample lengths", "template", "--seed"})
    EXPECT_EQ(e.find(other), std::string::npos) << other << ": " << e;
  fs::remove_all(p.parent_path());
}

TEST(LoaderResume, AnotherBuiltInTemplateIsNamed) {
  const sft::Dataset& vicuna = dummy(512);
  const sft::LoaderOptions opt{.batch_size = 4};
  const nlohmann::json saved = state_after_two(vicuna, opt);
  const std::string e = resume_error(load_at(dummy_data(), "llama-2"), saved, opt);
  EXPECT_NE(e.find("template: vicuna_v1.1 when the checkpoint was saved, llama-2 now"), std::string::npos) << e;
  EXPECT_EQ(e.find("data file"), std::string::npos) << e;  // the file is the same
}

TEST(LoaderResume, AnEditedJinjaTemplateIsNamedByItsChecksum) {
  const fs::path model = temp_dir("resume-jinja");
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(kLlama2) / f, model / f);
  const std::string t1 =
      "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
      "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";
  const std::string t2 = t1 + "{# edited #}";
  write_file(model / "chat_template.jinja", t1);
  const sft::LoaderOptions opt{.batch_size = 4};
  const nlohmann::json saved = state_after_two(load_at(dummy_data(), "auto", model.string()), opt);
  write_file(model / "chat_template.jinja", t2);
  const sft::Dataset now = load_at(dummy_data(), "auto", model.string());
  const std::string e = resume_error(now, saved, opt);
  EXPECT_NE(e.find(fmt::format("template: the model's Jinja template, XXH3 {} when the checkpoint was saved, the "
                               "model's Jinja template, XXH3 {} now", hex(sft::xxh3_of(t1.data(), t1.size())),
                               hex(sft::xxh3_of(t2.data(), t2.size())))),
            std::string::npos) << e;
  // A comment renders nothing: the samples are the same, only the template's text changed.
  EXPECT_EQ(e.find("sample lengths"), std::string::npos) << e;
  fs::remove_all(model);
}

// HF's ignore_data_skip: the saved epoch from its first row, whatever changed; at an epoch's end,
// the next epoch.
TEST(LoaderResume, IgnoreDataSkipStartsTheSavedEpochFromItsFirstRow) {
  const fs::path p = temp_dir("resume-ignore") / "train.json";
  const std::string text = read_file(dummy_data());
  write_file(p, text);
  sft::LoaderOptions opt{.batch_size = 4, .packing = false};
  const sft::Dataset before = load_at(p);
  sft::DataLoader a(before, opt);
  sft::Batch b;
  const int64_t per_epoch = a.batches_per_epoch();
  for (int64_t k = 0; k < per_epoch + 1 + 3; ++k) a.next(b);  // epoch 1, row 12
  const nlohmann::json mid = a.state();
  ASSERT_EQ(mid["epoch"], 1);
  ASSERT_EQ(mid["row"], 12);
  write_file(p, text + " ");  // changed: refused without the flag
  const sft::Dataset now = load_at(p);
  EXPECT_NE(resume_error(now, mid, opt), "");
  opt.ignore_data_skip = true;
  sft::DataLoader r(now, opt);
  testing::internal::CaptureStderr();
  r.load_state(mid);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find(fmt::format("--ignore_data_skip True: resuming although data file {}: {} when the checkpoint was "
                                 "saved, {} now", p.string(), commas(text.size()), commas(text.size() + 1))),
            std::string::npos) << log;
  EXPECT_NE(log.find("(without the flag this resume is refused); epoch 1 of this data starts from its first row"),
            std::string::npos) << log;
  EXPECT_EQ(r.epoch(), 1);
  ASSERT_TRUE(r.next(b));
  const auto rows = sft::plan_epoch(now, opt, 1);
  EXPECT_EQ(check_batch(now, b, 0), (std::vector<int64_t>{rows[0][0], rows[1][0], rows[2][0], rows[3][0]}));
  EXPECT_EQ(r.state()["row"], 4);

  // Saved at the end of epoch 0 (every row consumed): epoch 1 from its first row.
  sft::DataLoader e0(now, opt);
  for (int64_t k = 0; k < per_epoch; ++k) ASSERT_TRUE(e0.next(b));
  const nlohmann::json end = e0.state();
  ASSERT_EQ(end["epoch"], 0);
  ASSERT_EQ(end["row"], end["rows"]);
  sft::DataLoader r2(now, opt);
  testing::internal::CaptureStderr();
  r2.load_state(end);
  const std::string log2 = testing::internal::GetCapturedStderr();
  EXPECT_NE(log2.find("--ignore_data_skip True: epoch 1 starts from its first row instead of the saved position "
                      "(epoch 0, row " + std::to_string(end["row"].get<int64_t>()) + ")"), std::string::npos) << log2;
  EXPECT_EQ(r2.epoch(), 1);
  EXPECT_EQ(r2.state()["row"], 0);
  fs::remove_all(p.parent_path());
}

// A loader state saved before the data identity existed (no "identity", "rows", "data_path")
// resumes at its position, saying what it could not check.
TEST(LoaderResume, AnOlderStateWithoutIdentityResumesAndSaysSo) {
  const sft::Dataset& ds = dummy(512);
  const sft::LoaderOptions opt{.batch_size = 4};
  nlohmann::json saved = state_after_two(ds, opt);
  for (const char* key : {"identity", "rows", "data_path"}) saved.erase(key);
  sft::DataLoader r(ds, opt);
  testing::internal::CaptureStderr();
  r.load_state(saved);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("records no data file size, data file XXH3, template (saved by an older sft): not checked"),
            std::string::npos) << log;
  EXPECT_EQ(r.state()["row"], 8);
}

}  // namespace
