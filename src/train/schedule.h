// Learning-rate schedules as HF transformers' get_scheduler (optimization.py): linear, cosine,
// constant, constant_with_warmup, each with linear warmup. lr_at(k) is the rate the k-th
// optimizer step (0-based) uses, i.e. HF's LambdaLR value before its k-th scheduler.step().
#pragma once
#include <cstdint>
#include <string>

namespace sft {

enum class ScheduleKind { linear, cosine, constant, constant_with_warmup };

ScheduleKind parse_schedule_kind(const std::string& name);  // error lists the known names

// HF TrainingArguments.get_warmup_steps: warmup_steps if > 0, else ceil(ratio × total).
int64_t warmup_steps_for(int64_t total_steps, int64_t warmup_steps, double warmup_ratio);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::linear;
  double lr_max = 5e-5;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double factor(int64_t step) const;  // multiplier of lr_max at 0-based step
  double lr_at(int64_t step) const { return lr_max * factor(step); }
};

}  // namespace sft
