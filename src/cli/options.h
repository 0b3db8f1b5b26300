// The option table of `sft train`: one table gives the parser, --help, the resolved-config echo
// and the list of compatibility-only flags. Flags are HF TrainingArguments style: `--name value`
// or `--name=value`, booleans as True/False (a bare boolean flag means True).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "train/train_config.h"

namespace sft {

struct ParsedOptions {
  TrainConfig config;
  std::vector<std::string> notices;  // one line per compatibility-only flag that was given
  bool help = false;
};

// argv[0] is the subcommand name. --config FILE (YAML or JSON, same keys) is applied first, then
// the flags on the command line override it. Unknown flags are an Error naming the nearest one.
ParsedOptions parse_train_options(int argc, char** argv);
std::string train_options_help();
// "key: value" lines of every option, for the start-of-run echo.
std::string describe_train_config(const TrainConfig& cfg);
// (name, value as a flag would spell it) of every option, in table order.
std::vector<std::pair<std::string, std::string>> train_config_values(const TrainConfig& cfg);
// Every flag name in the table (frozen by a test so new flags are deliberate).
std::vector<std::string> train_option_names();

}  // namespace sft
