// The real tokenizer test vectors of ../shared/data/tokenizer-vectors (generated with HF, shipped
// by llama.cpp): llama-spm and llama2-special with the LLaMA-2 tokenizer in legacy mode (as
// tokenizer.model and as its converted tokenizer.json), llama-bpe with LLaMA-3.
#include <gtest/gtest.h>

#include <sstream>

#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

using namespace tok_test;
using Ids = std::vector<int32_t>;

namespace {

struct Vectors {
  std::vector<std::string> inputs;
  std::vector<Ids> expected;
};

Vectors read_vectors(const std::string& name) {
  const std::string dir = kShared + "/data/tokenizer-vectors/";
  const std::string sep = "\n__ggml_vocab_test__\n";
  Vectors v;
  std::string inp = read_file(dir + name + ".inp");
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    v.inputs.push_back(inp.substr(pos, next - pos));
  std::istringstream out(read_file(dir + name + ".out"));
  for (std::string line; std::getline(out, line);) {
    Ids ids;
    std::istringstream ls(line);
    for (int32_t id; ls >> id;) ids.push_back(id);
    v.expected.push_back(ids);
  }
  return v;
}

void check(const sft::Tokenizer& tok, const std::string& name) {
  Vectors v = read_vectors(name);
  ASSERT_EQ(v.inputs.size(), v.expected.size()) << name;
  ASSERT_GT(v.inputs.size(), 10u) << name;
  size_t bad = 0;
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    Ids got = tok.encode(v.inputs[i], false);
    if (got != v.expected[i]) ++bad, ADD_FAILURE() << name << ": " << show(v.inputs[i]);
  }
  std::printf("[ %s ] %zu vectors, %zu mismatches\n", name.c_str(), v.inputs.size(), bad);
}

std::string legacy_dir() {
  fs::path dir = kBuildDir / "tokenizer-test" / "vectors-legacy";
  fs::create_directories(dir);
  fs::copy_file(fs::path(kShipped) / "tokenizer.model", dir / "tokenizer.model", fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizer", "legacy": true})";
  return dir.string();
}

TEST(Vectors, Llama2SentencePieceLegacy) {
  if (!have_shared()) GTEST_SKIP() << "needs ../shared (tokenizer test vectors)";
  auto tok = sft::load_tokenizer(legacy_dir());
  check(*tok, "llama-spm");
  check(*tok, "llama2-special");
}

TEST(Vectors, Llama2ConvertedTokenizerJson) {
  if (!have_shared()) GTEST_SKIP() << "needs ../shared (tokenizer test vectors)";
  REQUIRE_REFERENCE();
  auto tok = sft::load_tokenizer((*reference().dir / "tok" / "llama2-fast").string(), sft::TokenizerKind::json);
  check(*tok, "llama-spm");
  check(*tok, "llama2-special");
}

TEST(Vectors, Llama3) {
  if (!have_shared()) GTEST_SKIP() << "needs ../shared (tokenizer test vectors)";
  REQUIRE_REFERENCE();
  auto tok = sft::load_tokenizer((*reference().dir / "tok" / "llama3").string());
  check(*tok, "llama-bpe");
}

}  // namespace
