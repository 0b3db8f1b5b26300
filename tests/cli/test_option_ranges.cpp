// Numeric options have ranges in the one option table: values outside are refused at parse time
// with the option, the range and the value (from the command line and from --config files), the
// bounds themselves are accepted, --help shows every numeric option's range, and 0 epochs without
// --max_steps is refused (it used to run a step).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "cli/options.h"
#include "core/check.h"

namespace sft {

namespace {

ParsedOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "train");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_train_options(int(argv.size()), argv.data());
}

std::string error_of(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(OptionRanges, ValuesFromTheFieldReportAreRefusedWithTheRange) {
  EXPECT_EQ(error_of({"--learning_rate", "-1e-4"}), "[options] --learning_rate must be >= 0, got -1e-4");
  EXPECT_EQ(error_of({"--warmup_ratio", "2"}), "[options] --warmup_ratio must be in [0, 1], got 2");
  EXPECT_EQ(error_of({"--num_train_epochs", "0"}),
            "[options] --num_train_epochs must be > 0 when --max_steps is not set (> 0), got 0");
  EXPECT_EQ(error_of({"--num_train_epochs", "-1", "--max_steps", "10"}),
            "[options] --num_train_epochs must be >= 0, got -1");
  EXPECT_EQ(parse({"--num_train_epochs", "0", "--max_steps", "10"}).config.max_steps, 10);  // HF: max_steps rules
}

TEST(OptionRanges, EveryBoundIsCheckedAndTheBoundsThemselvesAreAccepted) {
  struct Case {
    const char* name;
    const char* bad;
    const char* range;
    const char* edge;  // the closest accepted value
  };
  const std::vector<Case> cases = {
      {"model_max_length", "1", ">= 2", "2"},
      {"save_steps", "-1", ">= 0", "0"},
      {"save_total_limit", "-2", ">= 0", "0"},
      {"max_steps", "-2", ">= -1", "-1"},
      {"per_device_train_batch_size", "0", ">= 1", "1"},
      {"per_device_eval_batch_size", "0", ">= 1", "1"},
      {"gradient_accumulation_steps", "0", ">= 1", "1"},
      {"weight_decay", "-0.1", ">= 0", "0"},
      {"adam_beta1", "1", "in [0, 1)", "0.999999"},
      {"adam_beta2", "-0.5", "in [0, 1)", "0"},
      {"adam_epsilon", "-1e-8", ">= 0", "0"},
      {"max_grad_norm", "-1", ">= 0", "0"},
      {"warmup_ratio", "-0.01", "in [0, 1]", "1"},
      {"warmup_steps", "-5", ">= 0", "0"},
      {"max_bad_steps", "0", ">= 1", "1"},
      {"eval_steps", "-1", ">= 0", "0"},
      {"logging_steps", "0", ">= 1", "1"},
      {"threads", "-4", ">= 0", "0"},
      {"local_rank", "-2", ">= -1", "-1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(error_of({std::string("--") + c.name, c.bad}),
              std::string("[options] --") + c.name + " must be " + c.range + ", got " + c.bad);
    EXPECT_EQ(error_of({std::string("--") + c.name, c.edge}), "(no error)");
  }
  EXPECT_EQ(parse({"--seed", "-3"}).config.seed, -3);  // a seed is any integer
}

TEST(OptionRanges, ConfigFilesAreCheckedToo) {
  const std::filesystem::path f =
      std::filesystem::temp_directory_path() / ("sft_ranges_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(f) << "learning_rate: -3e-4\n";
  const std::string e = error_of({"--config", f.string()});
  EXPECT_NE(e.find("--learning_rate must be >= 0, got -3e-4"), std::string::npos) << e;
  EXPECT_NE(e.find(f.string()), std::string::npos) << e;
  std::filesystem::remove(f);
}

TEST(OptionRanges, HelpShowsTheRangeOfEveryNumericOption) {
  const TrainConfig defaults;
  std::istringstream help(train_options_help());
  int numeric = 0;
  for (std::string line; std::getline(help, line);) {
    const size_t d = line.rfind("(default: ");
    if (d == std::string::npos) continue;
    const std::string value = line.substr(d + 10, line.size() - d - 11);
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0') continue;  // not a number: strings, booleans, enums
    ++numeric;
    const bool ranged = line.find("[>= ") != std::string::npos || line.find("[> ") != std::string::npos ||
                        line.find("[in [") != std::string::npos || line.find("[any number]") != std::string::npos;
    EXPECT_TRUE(ranged) << line;
  }
  EXPECT_EQ(numeric, 23);  // every int64/double option of TrainConfig
}

}  // namespace sft
