// One optimizer step of data-parallel training, the same code for one process and for N ranks:
// count the step's targets, forward+backward every micro-batch with its loss scale, reduce the
// loss and gradient norm, decide finite/skip, clip, AdamW. Every point where ranks must agree is
// a named collective on the Comm (a no-op in a world of one), and every rank runs the same number
// of passes and collectives whatever its data: a micro-batch with no targets or no rows (a rank's
// empty share of an epoch's end) still runs its pass and joins every reduction point.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/batch.h"
#include "dist/comm.h"
#include "model/llama.h"
#include "train/optimizer.h"
#include "train/train_config.h"

namespace sft {

struct StepOptions {
  LossNormalization loss_normalization = LossNormalization::global_token_mean;
  double max_grad_norm = 1.0;  // 0: no clipping
  // Sharded (full_shard) units are all-gathered in the GEMM dtype (bf16 under --bf16; norm weights,
  // biases and the embedding stay fp32: dist/sharded_store.h) unless false: fp32 always.
  bool gather_in_gemm_dtype = true;
  // The dtype gradients are reduced over the ranks in (--fsdp_reduce_dtype): f32 or bf16.
  DType reduce_dtype = DType::f32;
};

struct StepResult {
  double loss = 0;       // the step's loss over all ranks, as --loss_normalization defines it
  double grad_norm = 0;  // global L2 norm before clipping
  int64_t targets = 0;   // target tokens of the step, all ranks
  int64_t tokens = 0;    // tokens (rows × length) this rank computed
  double flops = 0;      // model FLOPs this rank computed (train/flops.h)
  bool skipped = false;  // no update: no targets anywhere, or a non-finite loss or gradient
  std::string skip_reason;
};

// The reduction points of a step, in order (names of the Comm calls; tests check the order).
inline constexpr const char* kStepTargets = "step_targets";
inline constexpr const char* kLossSum = "loss_sum";
inline constexpr const char* kGradSumSquares = "grad_sum_squares";
inline constexpr const char* kFiniteCheck = "finite_check";
inline constexpr const char* kSkipDecision = "skip_decision";

StepResult train_step(LlamaModel& model, AdamW& optimizer, Comm& comm, const std::vector<Batch>& micro, double lr,
                      const StepOptions& opt);

// Evaluation loss over this rank's batches, summed and counted over all ranks (reduction points
// "eval_loss_sum" and "eval_targets"). Every rank passes the same number of batches (empty ones
// where it has no data).
struct EvalResult {
  double loss = 0;  // Σ loss / Σ targets over the whole eval set
  int64_t targets = 0;
};
EvalResult evaluate(LlamaModel& model, Comm& comm, const std::vector<Batch>& batches);

// The stop request any rank saw (a signal reaches one rank first): reduction point
// "stop_decision", once per step. Returns the highest signal number seen, 0 for none.
int agree_to_stop(Comm& comm, int signal_here);

}  // namespace sft
