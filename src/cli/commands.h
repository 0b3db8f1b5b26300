// The sft subcommands; each parses its own arguments (argv[0] is the subcommand name) and
// returns the process exit code. Errors are thrown as sft::Error and reported by main().
#pragma once

namespace sft {

int run_init(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_tokenize(int argc, char** argv);
int run_train(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_data(int argc, char** argv);

}  // namespace sft
