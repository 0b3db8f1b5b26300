// HF Trainer's --fsdp_config FILE: a JSON object of FSDP settings (transformers' TrainingArguments
// keys, with or without accelerate's "fsdp_" prefix, which HF strips). Each key is honoured, or
// noted once with what sft does instead, or refused where it asks for what is not built
// (parameter offload on GPU ranks; CPU ranks have nothing to move); keys sft does not know are
// noted, not fatal, as HF ignores them too.
#pragma once
#include <string>
#include <vector>

namespace sft {

struct FsdpConfig {
  bool activation_checkpointing = false;  // "activation_checkpointing": true -> gradient checkpointing
  std::vector<std::string> notes;         // one line per key (sorted by key), to print once
};

// Errors: "[fsdp_config] PATH: ..." for an unreadable file, bad JSON, a non-object, a value of the
// wrong type (naming the key), and offload_params true on a device other than "cpu" (--device).
FsdpConfig read_fsdp_config(const std::string& path, const std::string& device = "cpu");

}  // namespace sft
