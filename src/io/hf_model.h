// Hugging Face model directories: config.json + model.safetensors, or sharded
// model-0000k-of-0000N.safetensors + model.safetensors.index.json (ecosystem.md §1.1-§1.5).
// Loading converts F32/BF16/F16 into the model's fp32 parameters; saving writes the config's
// dtype (or the one asked), sharded greedily like transformers' save_pretrained. Tokenizer files
// are the caller's business.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "model/llama.h"

namespace sft {

struct SaveOptions {
  std::optional<DType> dtype = std::nullopt;  // weight dtype on disk; default: the config's torch_dtype
  int64_t max_shard_bytes = 5'000'000'000;  // transformers 4.35-4.57 default ("5GB", decimal)
};

// Fills every tensor of model.param_table() from DIR's safetensors file(s), into what this
// process's store holds (its local slices: a sharded store's rank reads only the byte ranges of
// its shard from the memory-mapped files). Every rank checks every name, shape and dtype: one
// Error lists all missing, unexpected and mis-shaped tensors by name. Ignored: "*.rotary_emb.inv_freq" buffers,
// and lm_head.weight under tied embeddings when it is bit-identical to model.embed_tokens.weight
// (a different lm_head.weight is an error: tying would silently drop it).
void load_hf_weights(const std::string& dir, LlamaModel& model);

// DIR/config.json + weights -> a model on backend.
std::unique_ptr<LlamaModel> load_hf_model(const std::string& dir, Backend& backend, ModelOptions opt = {});

// Writes DIR/config.json (torch_dtype = the saved dtype) and the weights, each file atomically;
// stale weight files of an earlier save into DIR (a single file vs. shards) are removed. The
// weights are streamed tensor by tensor in each file's order, the store's unit of each acquired
// in turn, so a sharded store holds one gathered unit at a time.
void save_hf_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt = {});

// DIR/generation_config.json with bos/eos/pad ids as transformers writes it from a model config
// (overwrites; copying the base model's file instead is the caller's choice).
void write_generation_config(const LlamaConfig& cfg, const std::string& dir);

// "bfloat16" -> DType::bf16 etc.; Error for other names.
DType dtype_from_torch_name(const std::string& torch_dtype);
const char* torch_name(DType dt);

}  // namespace sft
