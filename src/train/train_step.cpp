// train_step(): the optimizer step (see train_step.h). Loss normalisation (design.md §4): the
// global token mean scales every micro-batch by 1 / (targets of the whole step, all ranks); the
// FastChat-era micro-batch mean by 1 / (its own targets × accumulation × ranks).
#include "train/train_step.h"

#include <cmath>

#include <fmt/format.h>

#include "dist/step_collectives.h"
#include "train/flops.h"

namespace sft {

StepResult train_step(LlamaModel& model, AdamW& optimizer, Comm& comm, const std::vector<Batch>& micro, double lr,
                      const StepOptions& opt) {
  StepResult r;
  const bool global_mean = opt.loss_normalization == LossNormalization::global_token_mean;
  const double accum = double(micro.size()), world = double(comm.size());
  int64_t local_targets = 0;
  for (const Batch& b : micro) {
    local_targets += b.num_targets();
    r.tokens += b.num_tokens();
    r.flops += train_flops(model.config(), b);
  }
  r.targets = int64_t(comm.sum(double(local_targets), kStepTargets));
  // The step's collectives in their dtypes (fp32 again on return: loading and saving gather fp32).
  StepCollectives collectives(model.store(), opt.gather_in_gemm_dtype ? model.backend().matmul_dtype() : DType::f32,
                          opt.reduce_dtype);

  model.zero_grad();
  double loss = 0;
  for (size_t i = 0; i < micro.size(); ++i) {
    const Batch& b = micro[i];
    collectives.sync_gradients(i + 1 == micro.size());  // DDP all-reduces after the last micro-batch
    const int64_t n = b.num_targets();
    // A micro-batch without targets still runs its pass (its gradient is zero): ranks stay in step.
    const float scale = n == 0      ? 0.0f
                        : global_mean ? 1.0f / float(r.targets)
                                      : 1.0f / float(n * int64_t(micro.size()) * comm.size());
    const double s = model.forward_backward(b, scale);
    if (n > 0) loss += global_mean ? s / double(r.targets) : s / double(n) / accum / world;
  }
  r.loss = comm.sum(loss, kLossSum);
  r.grad_norm = std::sqrt(comm.sum(grad_sum_squares(model.store()), kGradSumSquares));
  const bool nonfinite = comm.any(!std::isfinite(r.loss) || !std::isfinite(r.grad_norm), kFiniteCheck);
  r.skipped = comm.any(r.targets == 0 || nonfinite, kSkipDecision);
  if (r.skipped) {
    r.skip_reason = r.targets == 0 ? "no target tokens" : fmt::format("loss {} grad norm {}", r.loss, r.grad_norm);
    model.zero_grad();
    return r;
  }
  // torch.nn.utils.clip_grad_norm_'s factor, applied inside the update (the same fp32 products)
  const float clip = opt.max_grad_norm > 0 && r.grad_norm > opt.max_grad_norm
                         ? float(opt.max_grad_norm / (r.grad_norm + 1e-6))
                         : 1.0f;
  optimizer.step(float(lr), clip);
  return r;
}

EvalResult evaluate(LlamaModel& model, Comm& comm, const std::vector<Batch>& batches) {
  const StepCollectives collectives(model.store(), model.backend().matmul_dtype(), DType::f32);  // units gathered in the GEMM dtype
  double loss = 0;
  int64_t targets = 0;
  for (const Batch& b : batches) {
    loss += model.forward(b);  // every batch, empty or not: ranks stay in step
    targets += b.num_targets();
  }
  double v[2] = {loss, double(targets)};
  comm.all_reduce_host(v, 2, ReduceOp::sum, "eval_loss_sum_and_targets");
  return {v[1] > 0 ? v[0] / v[1] : NAN, int64_t(v[1])};
}

int agree_to_stop(Comm& comm, int signal_here) {
  double v = double(signal_here);
  comm.all_reduce_host(&v, 1, ReduceOp::max, "stop_decision");
  return int(v);
}

}  // namespace sft
