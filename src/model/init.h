// HF-style random initialisation of a LlamaModel (LlamaPreTrainedModel._init_weights):
// linear and embedding weights ~ normal(0, initializer_range), biases 0, RMSNorm weights 1.
#pragma once
#include <cstdint>

#include "model/llama.h"

namespace sft {

void init_weights(LlamaModel& model, uint64_t seed);

}  // namespace sft
