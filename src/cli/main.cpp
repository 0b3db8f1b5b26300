// sft: full-parameter supervised fine-tuning of LLaMA-family models. main() dispatches to the
// subcommands and is the only place that catches exceptions.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/log.h"
#include "core/check.h"
#include "dist/world.h"
#include "sft_version.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

constexpr Command kCommands[] = {
    {"train",    sft::run_train,    "fine-tune a model on chat data (FastChat / HF Trainer flags)"},
    {"data",     sft::run_data,     "stats, preview, dump or validate a chat data file"},
    {"generate", sft::run_generate, "sample a chat reply from a model directory"},
    {"init",     sft::run_init,     "write a randomly initialised HF model directory"},
    {"bench",    sft::run_bench,    "time training steps of a preset model"},
    {"tokenize", sft::run_tokenize, "encode text with a model's tokenizer, or decode ids"},
};

// For bug reports: version, commit, build, this CPU's GEMM routes, and what the build can run on.
void print_version() {
  std::printf("sft %s (commit %s, %s build, %s)\n", SFT_VERSION, SFT_GIT_COMMIT, SFT_BUILD_TYPE, SFT_COMPILER);
  std::printf("%s\n", sft::create_backend("cpu")->route_report().c_str());
  const std::string cuda = sft::cuda_unavailable_reason();
  std::printf("CUDA: %s\n", cuda.empty() ? "backend built, a usable GPU is present" : cuda.c_str());
  std::printf("MPI: %s\n", sft::mpi_built() ? "built (mpirun / srun)" : sft::no_mpi_reason().c_str());
  std::printf("NCCL: %s\n", sft::nccl_built() ? "built (GPU ranks)" : "not built");
}

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: sft <command> [options]   (sft <command> --help for its options; sft --version)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported like a full disk,
  // instead of killing the process in the middle of a checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string_view(argv[1]) == "--version") {
    try {
      print_version();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  try {
    for (const Command& c : kCommands)
      if (std::string_view(argv[1]) == c.name) return c.run(argc - 1, argv + 1);
    std::fprintf(stderr, "sft: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return 2;
  } catch (const sft::Error& e) {
    std::fflush(stdout);  // what was printed before the error stays above it
    std::fprintf(stderr, "%serror: %s\n", sft::rank_prefix().c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%serror: %s\n", sft::rank_prefix().c_str(), e.what());
    return 1;
  }
}
