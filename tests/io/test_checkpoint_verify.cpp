// Verified checkpoints: XXH3-64 file digests (streamed across blocks, equal to the one-shot hash),
// the manifest's sizes and checksums, and verify_checkpoint's verdict on every kind of damage to
// every kind of file (a truncated, a changed byte, a missing file; every single-bit flip anywhere
// in the manifest); older size-only manifests; auto-resume's fallback to the newest checkpoint
// that verifies; the final model's read-back check.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "core/file_hash.h"
#include "io/hf_model.h"
#include "io_test_util.h"
#include "model/init.h"
#include "train/optimizer.h"
#include "../common/tiny_model.h"

namespace sft {

namespace fs = std::filesystem;
using test::expect_error;
using test::read_bytes;
using test::TempDir;
using test::write_bytes;

namespace {

using test_common::tiny_config;  // tests/common/tiny_model.h

// A checkpoint of a random tiny model with AdamW state and a stand-in tokenizer file.
std::string save_one(const fs::path& out, int64_t step) {
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, uint64_t(step));
  AdamW opt(model, {});
  std::ofstream(out / "tokenizer.model") << "tokenizer stand-in " << step;
  return save_checkpoint(out.string(), step, model, opt.state(),
                         {{"global_step", step}, {"data", {{"epoch", 0}, {"cursor", step}}}},
                         {out.string(), {"tokenizer.model"}});
}

bool mentions(const CheckpointVerification& v, const std::string& a, const std::string& b) {
  const std::string d = v.describe();
  return d.find(a) != std::string::npos && d.find(b) != std::string::npos;
}

void flip_byte(const fs::path& p, size_t at) {
  std::string b = read_bytes(p.string());
  ASSERT_LT(at, b.size()) << p;
  b[at] = char(b[at] ^ 0x01);
  write_bytes(p.string(), b);
}

}  // namespace

TEST(FileHash, StreamedDigestEqualsTheOneShotHash) {
  TempDir t;
  EXPECT_EQ(xxh3_of("", 0), 0x2D06800538D394C2ull);  // XXH3-64 of no bytes, seed 0 (xxHash's test vector)
  write_bytes(t.file("empty"), "");
  EXPECT_EQ(digest_file(t.file("empty")).xxh3, 0x2D06800538D394C2ull);
  // 9 MiB + 3 bytes: crosses the 4 MiB read blocks.
  std::string big(size_t(9) * (1 << 20) + 3, '\0');
  std::mt19937 rng(5);
  for (char& c : big) c = char(rng());
  write_bytes(t.file("big"), big);
  const FileDigest d = digest_file(t.file("big"));
  EXPECT_EQ(d.size, big.size());
  EXPECT_EQ(d.xxh3, xxh3_of(big.data(), big.size()));
  big[size_t(5) << 20] ^= 0x40;
  EXPECT_NE(d.xxh3, xxh3_of(big.data(), big.size()));
  uint64_t back = 0;
  EXPECT_TRUE(parse_xxh3_hex(xxh3_hex(d.xxh3), &back));
  EXPECT_EQ(back, d.xxh3);
  EXPECT_FALSE(parse_xxh3_hex("12345", &back));
  EXPECT_FALSE(parse_xxh3_hex("0123456789ABCDEF", &back));
  expect_error([&] { digest_file(t.file("absent")); }, {"absent", "cannot open"});
  EXPECT_EQ(verify_file_on_storage(t.file("big")).xxh3, d.xxh3);
}

TEST(CheckpointVerify, TheManifestRecordsSizeAndChecksumOfEveryFile) {
  TempDir t;
  const std::string dir = save_one(t.path, 2);
  const auto m = nlohmann::json::parse(read_bytes((fs::path(dir) / kCheckpointManifest).string()));
  EXPECT_EQ(m["format"], 2);
  EXPECT_EQ(m["step"], 2);
  int listed = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == kCheckpointManifest) continue;
    ASSERT_TRUE(m["files"].contains(name)) << name;
    const FileDigest d = digest_file(e.path().string());
    EXPECT_EQ(m["files"][name]["size"], d.size) << name;
    EXPECT_EQ(m["files"][name]["xxh3"], xxh3_hex(d.xxh3)) << name;
    ++listed;
  }
  EXPECT_GE(listed, 5);  // config.json, generation_config.json, model, optimizer, trainer_state, tokenizer
  const CheckpointVerification v = verify_checkpoint(dir);
  EXPECT_TRUE(v.ok()) << v.describe();
  EXPECT_TRUE(v.checksums);
}

TEST(CheckpointVerify, EveryKindOfDamageToEveryFileIsFoundAndNamed) {
  TempDir t, copies;
  const fs::path pristine = save_one(t.path, 4);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(pristine))
    if (e.path().filename() != kCheckpointManifest) names.push_back(e.path().filename().string());
  for (const char* must : {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json",
                           "generation_config.json", "tokenizer.model"})
    EXPECT_NE(std::find(names.begin(), names.end(), must), names.end()) << must;
  // A whole copy under another step's name: the manifest's step disagrees.
  fs::copy(pristine, copies.path / "checkpoint-8", fs::copy_options::recursive);
  auto v = verify_checkpoint((copies.path / "checkpoint-8").string());
  EXPECT_TRUE(mentions(v, kCheckpointManifest, "records step 4, but the directory is checkpoint-8")) << v.describe();
  const fs::path dir = copies.path / "checkpoint-4";
  fs::copy(pristine, dir, fs::copy_options::recursive);
  ASSERT_TRUE(verify_checkpoint(dir.string()).ok()) << verify_checkpoint(dir.string()).describe();
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const size_t size = fs::file_size(pristine / name);
    flip_byte(dir / name, size / 2);  // the trainer_state.json case holds the data-loader position
    v = verify_checkpoint(dir.string());
    EXPECT_TRUE(mentions(v, name + ": XXH3", "a changed byte")) << v.describe();
    EXPECT_EQ(v.problems.size(), 1u) << v.describe();
    fs::copy_file(pristine / name, dir / name, fs::copy_options::overwrite_existing);
    fs::resize_file(dir / name, size - 1);
    v = verify_checkpoint(dir.string());
    EXPECT_TRUE(mentions(v, name + ": " + std::to_string(size - 1) + " bytes", "truncated")) << v.describe();
    fs::remove(dir / name);
    v = verify_checkpoint(dir.string());
    EXPECT_TRUE(mentions(v, name + ": missing", std::to_string(size) + " bytes")) << v.describe();
    EXPECT_EQ(v.problems.size(), 1u) << v.describe();
    fs::copy_file(pristine / name, dir / name);
    EXPECT_TRUE(verify_checkpoint(dir.string()).ok()) << "restored";
  }
}

TEST(CheckpointVerify, EverySingleBitFlipInTheManifestIsFound) {
  TempDir t;
  const fs::path dir = save_one(t.path, 3);
  const fs::path manifest = dir / kCheckpointManifest;
  const std::string good = read_bytes(manifest.string());
  int found = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit : {0, 5}) {
      std::string bad = good;
      bad[i] = char(bad[i] ^ (1 << bit));
      write_bytes(manifest.string(), bad);
      const CheckpointVerification v = verify_checkpoint(dir.string());
      EXPECT_FALSE(v.ok()) << "byte " << i << " bit " << bit << ": " << bad;
      found += v.ok() ? 0 : 1;
    }
  }
  EXPECT_EQ(found, int(2 * good.size()));
  write_bytes(manifest.string(), good);
  EXPECT_TRUE(verify_checkpoint(dir.string()).ok());
  fs::resize_file(manifest, good.size() / 2);
  EXPECT_TRUE(mentions(verify_checkpoint(dir.string()), kCheckpointManifest, "not valid JSON"));
  fs::remove(manifest);
  EXPECT_TRUE(mentions(verify_checkpoint(dir.string()), kCheckpointManifest, "missing"));
}

TEST(CheckpointVerify, OlderManifestsWithSizesOnlyAreCheckedBySize) {
  TempDir t;
  const fs::path dir = save_one(t.path, 5);
  // What sft wrote before checksums: {"files": {name: size}, "step": N}.
  nlohmann::json old = {{"step", 5}, {"files", nlohmann::json::object()}};
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != kCheckpointManifest) old["files"][e.path().filename().string()] = e.file_size();
  write_bytes((dir / kCheckpointManifest).string(), old.dump(2));
  CheckpointVerification v = verify_checkpoint(dir.string());
  EXPECT_TRUE(v.ok()) << v.describe();
  EXPECT_FALSE(v.checksums);
  flip_byte(dir / "trainer_state.json", 3);  // not detectable without a checksum
  EXPECT_TRUE(verify_checkpoint(dir.string()).ok());
  fs::resize_file(dir / "optimizer.safetensors", 100);
  v = verify_checkpoint(dir.string());
  EXPECT_TRUE(mentions(v, "optimizer.safetensors: 100 bytes", "truncated")) << v.describe();
}

TEST(CheckpointVerify, AutoResumeTakesTheNewestCheckpointThatVerifies) {
  TempDir t;
  for (int64_t step : {10, 20, 30}) save_one(t.path, step);
  VerifiedChoice c = find_verified_checkpoint(t.path.string(), 30);
  EXPECT_EQ(fs::path(c.dir).filename(), "checkpoint-30");
  EXPECT_TRUE(c.skipped.empty());
  fs::resize_file(t.path / "checkpoint-30" / "model.safetensors", 10);
  flip_byte(t.path / "checkpoint-20" / "optimizer.safetensors", 200);
  c = find_verified_checkpoint(t.path.string(), 30);
  EXPECT_EQ(fs::path(c.dir).filename(), "checkpoint-10");
  ASSERT_EQ(c.skipped.size(), 2u);
  EXPECT_EQ(fs::path(c.skipped[0].first).filename(), "checkpoint-30");
  EXPECT_NE(c.skipped[0].second.find("model.safetensors: 10 bytes"), std::string::npos) << c.skipped[0].second;
  EXPECT_EQ(fs::path(c.skipped[1].first).filename(), "checkpoint-20");
  EXPECT_NE(c.skipped[1].second.find("optimizer.safetensors: XXH3"), std::string::npos) << c.skipped[1].second;
  // At most max_step: a newer damaged one is not even looked at.
  c = find_verified_checkpoint(t.path.string(), 10);
  EXPECT_EQ(fs::path(c.dir).filename(), "checkpoint-10");
  EXPECT_TRUE(c.skipped.empty());
  fs::remove(t.path / "checkpoint-10" / "config.json");
  c = find_verified_checkpoint(t.path.string(), 30);
  EXPECT_TRUE(c.dir.empty());
  EXPECT_EQ(c.skipped.size(), 3u);
}

TEST(CheckpointVerify, TheSavedModelIsReadBackAndCompared) {
  TempDir t;
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 1);
  save_hf_model(model, t.path.string(), SaveOptions{});
  write_bytes(t.file("tokenizer.model"), "stand-in");
  verify_saved_model_files(t.path.string(), {"tokenizer.model"});  // passes: what was written is on the disk
  expect_error([&] { verify_saved_model_files(t.path.string(), {"tokenizer.json"}); }, {"tokenizer.json", "cannot open"});
}

}  // namespace sft
