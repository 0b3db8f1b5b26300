// A data file tokenized across ranks (dist/shared_dataset.h): with N = 2, 3 and 7 thread ranks
// every rank ends with exactly the Dataset one process builds (tokens, labels, lengths, sources,
// issues, counts), each rank having encoded one contiguous part; a bad sample under --strict_data
// in one rank's part ends every rank with the one-process message. Under mpirun (OpenMPI), 2 and 3
// ranks of `sft train` hold what one process holds (the content hash rank 0 prints, checked across
// ranks by the start-up configuration check) and each encoded about 1/N of the samples, and a bad
// sample seen only by the last rank ends the job naming it. MPI tests skip visibly without MPI.
#include <gtest/gtest.h>

#include <optional>
#include <regex>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/dataset_parts.h"
#include "data/sample_reader.h"
#include "dist/comm.h"
#include "dist/shared_dataset.h"
#include "dist_test_util.h"
#include "mpi_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace cli_test;

namespace {

// `count` samples of the shipped conversations with bad ones at `bad` (alternately an unknown role
// and an empty conversation), as a JSON array file.
fs::path write_samples(const fs::path& path, size_t count, const std::vector<size_t>& bad) {
  const nlohmann::json all = nlohmann::json::parse(read_file(kDummyData));
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < count; ++i) out.push_back(all.at(i));
  for (size_t k = 0; k < bad.size(); ++k) {
    nlohmann::json& s = out.at(bad[k]);
    if (k % 2 == 0) s["conversations"][0]["from"] = "robot";
    else s["conversations"] = nlohmann::json::array();
  }
  fs::create_directories(path.parent_path());
  std::ofstream(path) << out.dump(1);
  return path;
}

void expect_same_dataset(const sft::Dataset& a, const sft::Dataset& b, const std::string& where) {
  ASSERT_EQ(a.size(), b.size()) << where;
  for (int64_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a.source_index(i), b.source_index(i)) << where << " sample " << i;
    ASSERT_EQ(a.full_length(i), b.full_length(i)) << where << " sample " << i;
    ASSERT_TRUE(std::ranges::equal(a.ids(i), b.ids(i))) << where << " ids of sample " << i;
    ASSERT_TRUE(std::ranges::equal(a.train(i), b.train(i))) << where << " labels of sample " << i;
  }
  ASSERT_EQ(a.issues().size(), b.issues().size()) << where;
  for (size_t i = 0; i < a.issues().size(); ++i)
    EXPECT_EQ(sft::describe_issue(a.path(), a.issues()[i]), sft::describe_issue(b.path(), b.issues()[i])) << where;
  const sft::DataStats &x = a.stats(), &y = b.stats();
  const auto counts = [](const sft::DataStats& s) {
    return std::vector<int64_t>{s.samples, s.kept, s.invalid, s.dropped, s.truncated, s.leading_assistant_dropped,
                                s.tokens, s.trainable_tokens, s.longest, s.encoder_fallbacks, int64_t(s.bytes),
                                int64_t(s.xxh3 >> 1), s.json_lines};
  };
  EXPECT_EQ(counts(x), counts(y)) << where;
  EXPECT_EQ(a.fingerprint(), b.fingerprint()) << where;
  EXPECT_EQ(a.identity().items().size(), b.identity().items().size()) << where;
  EXPECT_EQ(a.content_xxh3(), b.content_xxh3()) << where;
}

// Loads `path` on `n` thread ranks; returns each rank's Dataset, or rethrows the first error.
std::vector<sft::Dataset> load_on_thread_ranks(int n, const std::string& path, const sft::Tokenizer& tok,
                                               const sft::DataOptions& opt) {
  sft::ThreadWorld world(n);
  std::vector<std::optional<sft::Dataset>> got(static_cast<size_t>(n));
  sft::dist_test::run_ranks(n, [&](int r) {
    got[size_t(r)] = sft::load_dataset_across_ranks(world.comm(r), path, tok, opt);
  });
  std::vector<sft::Dataset> out;
  for (auto& d : got) out.push_back(std::move(*d));
  return out;
}

class SharedDataset : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = temp_dir("shared_dataset");
    tok_ = sft::load_tokenizer(kTokenizer).release();
  }
  static void TearDownTestSuite() {
    fs::remove_all(root_);
    delete tok_;
  }
  static inline fs::path root_;
  static inline sft::Tokenizer* tok_ = nullptr;
};

}  // namespace

TEST_F(SharedDataset, ThreadRanksEachEncodeAPartAndAllHoldWhatOneProcessBuilds) {
  // Issues in several parts, samples truncated, and more ranks than a small file has samples.
  const fs::path mixed = write_samples(root_ / "mixed.json", 60, {7, 30, 41, 58});
  const fs::path tiny = write_samples(root_ / "tiny.json", 2, {});
  sft::DataOptions opt;
  opt.model_max_length = 128;
  for (const fs::path& file : {mixed, tiny}) {
    const sft::Dataset one = sft::load_dataset(file.string(), *tok_, opt);
    if (file == mixed) {
      ASSERT_GT(one.stats().truncated, 0);
    }
    ASSERT_EQ(one.issues().size(), file == mixed ? 4u : 0u);
    const sft::SampleFile layout(file.string());
    for (int n : {2, 3, 7}) {
      const std::vector<sft::Dataset> ranks = load_on_thread_ranks(n, file.string(), *tok_, opt);
      for (int r = 0; r < n; ++r) {
        const std::string where = fmt::format("{} on rank {} of {}", file.filename().string(), r, n);
        expect_same_dataset(one, ranks[size_t(r)], where);
        // Every rank encoded its own contiguous part; the parts cover the file once, in order,
        // each about 1/n of its JSON bytes (within the largest sample).
        const std::vector<sft::DataPartInfo>& parts = ranks[size_t(r)].stats().parts;
        ASSERT_EQ(parts.size(), size_t(n)) << where;
        size_t largest = 0;
        for (int64_t i = 0; i < layout.size(); ++i) largest = std::max(largest, layout.sample_bytes(i));
        double total = 0;
        for (int64_t i = 0; i < layout.size(); ++i) total += double(layout.sample_bytes(i));
        int64_t next = 0;
        for (const sft::DataPartInfo& p : parts) {
          EXPECT_EQ(p.begin, next) << where;
          EXPECT_GE(p.end, p.begin) << where;
          double bytes = 0;
          for (int64_t i = p.begin; i < p.end; ++i) bytes += double(layout.sample_bytes(i));
          EXPECT_LE(bytes, total / n + double(largest)) << where;
          next = p.end;
        }
        EXPECT_EQ(next, layout.size()) << where;
      }
    }
  }
}

TEST_F(SharedDataset, ABadSampleInOneRanksPartEndsEveryRankWithTheOneProcessMessage) {
  // Under --strict_data the first bad sample in file order is the error; here two, both in the
  // last rank's part (and the second also in the last part of 3), and a file that does not parse.
  const fs::path late = write_samples(root_ / "late_bad.json", 40, {35, 38});
  const fs::path broken = root_ / "broken.json";
  std::ofstream(broken) << "[{\"conversations\": [}";
  sft::DataOptions opt;
  opt.strict = true;
  for (const fs::path& file : {late, broken}) {
    std::string expected;
    try {
      sft::load_dataset(file.string(), *tok_, opt);
    } catch (const sft::Error& e) {
      expected = e.what();
    }
    ASSERT_FALSE(expected.empty()) << file;
    if (file == late) {
      ASSERT_NE(expected.find("sample 35"), std::string::npos) << expected;
    }
    for (int n : {2, 3}) {
      sft::ThreadWorld world(n);
      std::vector<std::string> errors(static_cast<size_t>(n));
      sft::dist_test::run_ranks(n, [&](int r) {
        try {
          sft::load_dataset_across_ranks(world.comm(r), file.string(), *tok_, opt);
        } catch (const sft::Error& e) {
          errors[size_t(r)] = e.what();
        }
      });
      for (int r = 0; r < n; ++r) EXPECT_EQ(errors[size_t(r)], expected) << file << " rank " << r << " of " << n;
    }
  }
}

// ---- under mpirun ----

namespace {

class MpiData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!mpi_test::why_no_mpi().empty()) return;
    root_ = temp_dir("mpi_data");
    const CmdResult r = init_small_model(root_, root_ / "model");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) fs::remove_all(root_);
  }
  void SetUp() override {
    if (const std::string why = mpi_test::why_no_mpi(); !why.empty()) GTEST_SKIP() << why;
  }
  // One optimizer step: what matters here is the data each rank holds at start.
  static std::string train(const fs::path& data, const fs::path& out, const std::string& extra = "") {
    return kSft + " train --model_name_or_path " + (root_ / "model").string() + " --data_path " + data.string() +
           " --eval_data_path " + kDummyData + " --output_dir " + out.string() +
           " --model_max_length 128 --max_steps 1 --save_strategy no --per_device_train_batch_size 2 --bf16 False"
           " --report_to none --threads 1 " + extra;
  }
  static inline fs::path root_;
};

// The content hashes printed, one per data file (training data, then evaluation data): only
// rank 0 reports the data.
std::vector<std::string> content_hashes(const std::string& out) {
  std::vector<std::string> h;
  const std::regex re("content XXH3 ([0-9a-f]{16})");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
    h.push_back((*it)[1]);
  return h;
}

}  // namespace

TEST_F(MpiData, TwoAndThreeRanksEachTokenizeAPartAndHoldWhatOneProcessHolds) {
  const fs::path data = write_samples(root_ / "mixed.json", 120, {7, 70, 111});
  const CmdResult one = run(train(data, root_ / "one"));
  ASSERT_EQ(one.code, 0) << one.out;
  const std::vector<std::string> want = content_hashes(one.out);
  ASSERT_EQ(want.size(), 2u) << one.out;
  for (int n : {2, 3}) {
    const CmdResult r = run(mpi_test::mpirun(n) + train(data, root_ / ("ranks" + std::to_string(n))));
    ASSERT_EQ(r.code, 0) << r.out;
    // Rank 0's data equals one process's; every other rank's equals rank 0's (the start-up
    // configuration check compares the content hashes, and the run passed it).
    EXPECT_EQ(content_hashes(r.out), want) << r.out;
    EXPECT_EQ(r.out.find("[rank 1/" + std::to_string(n) + "] [data]"), std::string::npos) << r.out;
    // The training file's parts: rank q encoded samples a..b, contiguous, about 1/n each.
    const std::regex re("\\[rank 0/\\d\\] \\[data\\]   rank (\\d+) encoded samples (\\d+)\\.\\.(\\d+) of 120 \\((\\d+) samples");
    int64_t next = 0;
    int rank = 0;
    for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), re); it != std::sregex_iterator() && rank < n;
         ++it, ++rank) {
      EXPECT_EQ(std::stoi((*it)[1]), rank) << r.out;
      EXPECT_EQ(std::stoll((*it)[2]), next) << r.out;
      next = std::stoll((*it)[3]) + 1;
      const int64_t count = std::stoll((*it)[4]);
      EXPECT_GT(count, 120 / n / 2) << r.out;
      EXPECT_LT(count, 2 * 120 / n) << r.out;
    }
    EXPECT_EQ(rank, n) << r.out;
    EXPECT_EQ(next, 120) << r.out;
  }
}

TEST_F(MpiData, ABadSampleSeenOnlyByTheLastRankEndsTheJobNamingIt) {
  const fs::path data = write_samples(root_ / "late_bad.json", 80, {71});
  const CmdResult one = run(train(data, root_ / "strict_one", "--strict_data True"));
  ASSERT_NE(one.code, 0) << one.out;
  const size_t at = one.out.find("error: ");
  ASSERT_NE(at, std::string::npos) << one.out;
  const std::string message = one.out.substr(at + 7, one.out.find('\n', at) - at - 7);
  ASSERT_NE(message.find("sample 71"), std::string::npos) << message;
  const CmdResult r = run(mpi_test::mpirun(2) + train(data, root_ / "strict_two", "--strict_data True"));
  EXPECT_NE(r.code, 0) << r.out;
  // The ranks agree and say what one process says (each rank prints it; mpirun may end one rank
  // before it has printed, once the other has exited).
  EXPECT_TRUE(r.out.find("[rank 0/2] error: " + message) != std::string::npos ||
              r.out.find("[rank 1/2] error: " + message) != std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[rank 0/2] error: [launch]"), std::string::npos) << r.out;
}
