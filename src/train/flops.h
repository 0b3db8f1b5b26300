// Model FLOPs of a training pass, the one definition `sft train` and `sft bench` share (design.md
// §9, PaLM appendix B): 6 FLOPs per matmul weight per token that passes through it (forward 2,
// backward 4) plus 12·L·d per token per attended position. Counted on what a batch really holds:
// decoder matmuls over every token (padding included: it is computed), the LM head only over the
// rows with a target (the training head skips the others), attention over each packed sequence's
// own length s (Σ s² per layer, not the row length). Recompute is not counted (model FLOPs).
#pragma once
#include <cstdint>

#include "core/batch.h"
#include "model/llama_config.h"

namespace sft {

// Decoder matmul weights per layer × layers (q|k|v, o, gate|up, down), and the LM head's.
int64_t decoder_matmul_params(const LlamaConfig& cfg);
int64_t head_matmul_params(const LlamaConfig& cfg);

// FLOPs of forward + backward of one batch.
double train_flops(const LlamaConfig& cfg, const Batch& batch);

}  // namespace sft
