// HF LR schedules (transformers/optimization.py: get_linear_schedule_with_warmup,
// get_cosine_schedule_with_warmup with num_cycles = 0.5, get_constant_schedule(_with_warmup)).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/check.h"

namespace sft {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "linear") return ScheduleKind::linear;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "constant") return ScheduleKind::constant;
  if (name == "constant_with_warmup") return ScheduleKind::constant_with_warmup;
  fail("lr_scheduler_type", "unknown schedule '{}', expected linear, cosine, constant or constant_with_warmup", name);
}

int64_t warmup_steps_for(int64_t total_steps, int64_t warmup_steps, double warmup_ratio) {
  if (warmup_steps > 0) return warmup_steps;
  return int64_t(std::ceil(double(total_steps) * warmup_ratio));
}

double LrSchedule::factor(int64_t step) const {
  const double s = double(step), w = double(warmup_steps), total = double(total_steps);
  if (kind == ScheduleKind::constant) return 1.0;
  if (step < warmup_steps) return s / std::max(1.0, w);
  switch (kind) {
    case ScheduleKind::linear: return std::max(0.0, (total - s) / std::max(1.0, total - w));
    case ScheduleKind::cosine: {
      const double progress = (s - w) / std::max(1.0, total - w);
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress)));
    }
    default: return 1.0;  // constant_with_warmup after warmup
  }
}

}  // namespace sft
