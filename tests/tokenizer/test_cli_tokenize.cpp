// `sft tokenize` end to end with the shipped LLaMA-2 tokenizer: --text and --input (escapes, empty
// lines), --add_special_tokens, --decode back to the same text, --tokenizer_kind, and errors
// (exit code and "[where]" message). Ids must equal the library's, which test_reference checks
// against HF.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

using namespace tok_test;

namespace {

std::string ids_line(const std::vector<int32_t>& ids) { return fmt::format("{}", fmt::join(ids, " ")); }

std::string quote(const std::string& s) {  // single-quoted for sh
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

fs::path temp_file(const std::string& name, const std::string& content) {
  fs::path dir = kBuildDir / "tokenizer-test" / ("cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << content;
  return dir / name;
}

TEST(TokenizeCli, EncodesText) {
  ASSERT_TRUE(fs::exists(kSft)) << kSft;
  auto tok = sft::load_tokenizer(kShipped);
  const std::string text = "Hello world! USER: hi</s>";
  RunResult r = run(kSft + " tokenize --tokenizer " + kShipped + " --text " + quote(text));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, ids_line(tok->encode(text, true)) + "\n");
  r = run(kSft + " tokenize --tokenizer " + kShipped + " --add_special_tokens False --text " + quote(text));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, ids_line(tok->encode(text, false)) + "\n");
}

TEST(TokenizeCli, InputFileAndDecodeRoundTrip) {
  ASSERT_TRUE(fs::exists(kSft)) << kSft;
  auto tok = sft::load_tokenizer(kShipped);
  // One input per line; "\n" and "\\" escapes; an empty line is an empty input.
  const std::vector<std::string> lines = {"first line", "two\\nlines and a \\\\ backslash", "", " x</s>y 😀 你好"};
  const std::vector<std::string> texts = {"first line", "two\nlines and a \\ backslash", "", " x</s>y 😀 你好"};
  std::string file;
  for (const auto& l : lines) file += l + "\n";
  fs::path in = temp_file("input.txt", file);
  RunResult r = run(kSft + " tokenize --tokenizer " + kShipped + " --input " + in.string());
  ASSERT_EQ(r.code, 0) << r.out;
  std::string expected;
  for (const auto& t : texts) expected += ids_line(tok->encode(t, true)) + "\n";
  EXPECT_EQ(r.out, expected);

  // --decode turns each line of ids back into its text, escaped again to stay one line.
  fs::path ids = temp_file("ids.txt", r.out);
  r = run(kSft + " tokenize --tokenizer " + kShipped + " --decode --skip_special_tokens --input " + ids.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "first line\ntwo\\nlines and a \\\\ backslash\n\n xy 😀 你好\n");
  r = run(kSft + " tokenize --tokenizer " + kShipped + " --decode --text '1 15043 2'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, tok->decode(std::vector<int32_t>{1, 15043, 2}) + "\n");
}

TEST(TokenizeCli, Errors) {
  ASSERT_TRUE(fs::exists(kSft)) << kSft;
  const auto expect_error = [](const std::string& args, const std::string& fragment) {
    RunResult r = run(kSft + " tokenize " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  };
  expect_error("--tokenizer " + kShipped, "give --text STRING or --input FILE");
  expect_error("--tokenizer " + kShipped + " --text a --input b", "excludes");
  expect_error("--tokenizer " + kShipped + " --text a --add_special_tokens maybe", "[tokenize] --add_special_tokens");
  expect_error("--tokenizer " + kShipped + " --text a --tokenizer_kind json", "[tokenizer] " + kShipped + ": no tokenizer.json");
  expect_error("--tokenizer " + kShipped + " --text a --tokenizer_kind fast", "unknown tokenizer kind 'fast'");
  expect_error("--tokenizer /nonexistent --text a", "[tokenizer] /nonexistent: not a directory");
  expect_error("--tokenizer " + kShipped + " --input /nonexistent/file", "[tokenize] /nonexistent/file: cannot open");
  expect_error("--tokenizer " + kShipped + " --decode --text '1 abc'", "[tokenize] input 1: 'abc' is not a token id");
  expect_error("--tokenizer " + kShipped + " --decode --text '1 32000'", "outside the vocabulary");
  expect_error("--tokenizer " + kShipped + " --text \"$(printf '\\377')\"", "not valid UTF-8");
  RunResult help = run(kSft + " tokenize --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--tokenizer_kind"), std::string::npos) << help.out;
}

}  // namespace
