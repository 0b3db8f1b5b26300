// Model FLOPs of a batch (see flops.h).
#include "train/flops.h"

namespace sft {

int64_t decoder_matmul_params(const LlamaConfig& c) {
  const int64_t C = c.hidden_size, FF = c.intermediate_size, AO = c.num_attention_heads * c.head_dim;
  return c.num_hidden_layers * (c.qkv_dim() * C + C * AO + 2 * FF * C + C * FF);
}

int64_t head_matmul_params(const LlamaConfig& c) { return c.vocab_size * c.hidden_size; }

double train_flops(const LlamaConfig& c, const Batch& batch) {
  double attended = 0.0;  // Σ over packed sequences of s², i.e. Σ over tokens of their sequence length
  for (size_t s = 0; s + 1 < batch.cu_seqlens.size(); ++s) {
    const double len = double(batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]);
    attended += len * len;
  }
  return 6.0 * double(decoder_matmul_params(c)) * double(batch.num_tokens()) +
         6.0 * double(head_matmul_params(c)) * double(batch.num_targets()) +
         12.0 * double(c.num_hidden_layers) * double(c.hidden_size) * attended;
}

}  // namespace sft
