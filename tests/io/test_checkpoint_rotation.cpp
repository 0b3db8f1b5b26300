// --save_total_limit with damaged checkpoints (rotate_checkpoints): a checkpoint that does not
// verify never counts toward the limit, so it never pushes a good one out and the newest good one
// is never deleted; a damaged one newer than the kept good ones stays (named once in a note), an
// older one is deleted with the rest; every deletion is named; with a RotationMemory each checkpoint is
// hashed once and later checked by size, so a truncation is still found at the next save.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "io_test_util.h"
#include "model/init.h"
#include "train/optimizer.h"
#include "../common/tiny_model.h"

namespace sft {

namespace fs = std::filesystem;
using test::read_bytes;
using test::TempDir;
using test::write_bytes;

namespace {

std::string save_at(const fs::path& out, int64_t step) {
  auto be = create_backend("cpu");
  LlamaModel model(test_common::tiny_config(), *be);
  init_weights(model, uint64_t(step));
  AdamW opt(model, {});
  return save_checkpoint(out.string(), step, model, opt.state(), {{"global_step", step}}, {});
}

std::set<int64_t> steps_in(const fs::path& out) {
  std::set<int64_t> s;
  for (const auto& e : fs::directory_iterator(out)) s.insert(checkpoint_step(e.path().string()));
  return s;
}

void flip_a_byte(const fs::path& p) {
  std::string b = read_bytes(p.string());
  b[b.size() / 2] = char(b[b.size() / 2] ^ 0x04);
  write_bytes(p.string(), b);
}

std::string all_notes(const RotationReport& r) {
  std::string s;
  for (const std::string& n : r.notes) s += n + "\n";
  return s;
}

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST(CheckpointRotation, ADamagedCheckpointDoesNotCountTowardTheLimit) {
  TempDir t;
  RotationMemory memory;
  for (int64_t s : {100, 200, 300}) rotate_checkpoints(t.path.string(), 0, save_at(t.path, s), &memory);
  flip_a_byte(t.path / "checkpoint-300" / "model.safetensors");

  // 400 saved: 400 and 200 are the two good ones; the damaged 300 between them stays, 100 goes.
  RotationReport r = rotate_checkpoints(t.path.string(), 2, save_at(t.path, 400), &memory);
  EXPECT_EQ(steps_in(t.path), (std::set<int64_t>{200, 300, 400}));
  ASSERT_EQ(r.notes.size(), 2u) << all_notes(r);
  EXPECT_TRUE(has(r.notes[0], "WARNING: checkpoint " + (t.path / "checkpoint-300").string()) &&
              has(r.notes[0], "model.safetensors") && has(r.notes[0], "a changed byte") &&
              has(r.notes[0], "does not count toward --save_total_limit 2"))
      << r.notes[0];
  EXPECT_EQ(r.notes[1], "deleted checkpoint " + (t.path / "checkpoint-100").string() + " (--save_total_limit 2)");
  ASSERT_EQ(r.deleted.size(), 1u);
  EXPECT_EQ(fs::path(r.deleted[0]).filename(), "checkpoint-100");

  // 500 saved: 500 and 400 are the two good ones; 300 (damaged) and 200 are deleted, the damaged
  // one named; the note about keeping 300 is not repeated.
  r = rotate_checkpoints(t.path.string(), 2, save_at(t.path, 500), &memory);
  EXPECT_EQ(steps_in(t.path), (std::set<int64_t>{400, 500}));
  ASSERT_EQ(r.notes.size(), 2u) << all_notes(r);
  EXPECT_TRUE(has(r.notes[0], "deleted the damaged checkpoint " + (t.path / "checkpoint-300").string())) << r.notes[0];
  EXPECT_EQ(r.notes[1], "deleted checkpoint " + (t.path / "checkpoint-200").string() + " (--save_total_limit 2)");
  EXPECT_EQ(r.deleted.size(), 2u);
}

TEST(CheckpointRotation, TheNewestGoodCheckpointIsNeverDeleted) {
  TempDir t;
  for (int64_t s : {100, 200, 300}) save_at(t.path, s);
  fs::resize_file(t.path / "checkpoint-300" / "optimizer.safetensors", 100);
  fs::remove(t.path / "checkpoint-200" / "trainer_state.json");
  // Limit 1 and nothing just saved: the two newer ones do not verify, so 100 is the one kept.
  const RotationReport r = rotate_checkpoints(t.path.string(), 1, "");
  EXPECT_EQ(steps_in(t.path), (std::set<int64_t>{100, 200, 300}));
  const std::string notes = all_notes(r);
  EXPECT_EQ(r.notes.size(), 2u) << notes;
  EXPECT_TRUE(has(notes, "checkpoint-300") && has(notes, "optimizer.safetensors") && has(notes, "truncated")) << notes;
  EXPECT_TRUE(has(notes, "checkpoint-200") && has(notes, "trainer_state.json") && has(notes, "missing")) << notes;
  EXPECT_TRUE(r.deleted.empty());
  // Limit 1 with a good newer save: the older good one and both damaged ones go.
  const RotationReport r2 = rotate_checkpoints(t.path.string(), 1, save_at(t.path, 400));
  EXPECT_EQ(steps_in(t.path), (std::set<int64_t>{400}));
  EXPECT_EQ(r2.deleted.size(), 3u);
  EXPECT_EQ(r2.notes.size(), 3u);  // each deletion named
}

TEST(CheckpointRotation, EachCheckpointIsHashedOnceAndLaterCheckedBySize) {
  TempDir t;
  RotationMemory memory;
  for (int64_t s : {100, 200}) EXPECT_TRUE(rotate_checkpoints(t.path.string(), 3, save_at(t.path, s), &memory).notes.empty());
  EXPECT_EQ(memory.hashed, (std::set<std::string>{"checkpoint-100", "checkpoint-200"}));
  // A changed byte after 100 was hashed: the size check of later saves cannot see it (a fresh run,
  // or a rotation without memory, hashes again and does).
  flip_a_byte(t.path / "checkpoint-100" / "model.safetensors");
  EXPECT_TRUE(rotate_checkpoints(t.path.string(), 3, save_at(t.path, 300), &memory).notes.empty());
  const RotationReport fresh = rotate_checkpoints(t.path.string(), 3, (t.path / "checkpoint-300").string());
  ASSERT_EQ(fresh.notes.size(), 1u) << all_notes(fresh);
  EXPECT_TRUE(has(fresh.notes[0], "checkpoint-100")) << fresh.notes[0];
  // A truncation is seen by the size check.
  fs::resize_file(t.path / "checkpoint-200" / "model.safetensors", 64);
  const RotationReport r = rotate_checkpoints(t.path.string(), 3, save_at(t.path, 400), &memory);
  ASSERT_EQ(r.notes.size(), 1u) << all_notes(r);
  EXPECT_TRUE(has(r.notes[0], "checkpoint-200") && has(r.notes[0], "truncated")) << r.notes[0];
  EXPECT_FALSE(memory.hashed.contains("checkpoint-200"));
}

}  // namespace sft
