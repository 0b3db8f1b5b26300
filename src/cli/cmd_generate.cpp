// `sft generate`: renders a one-turn chat with the model's template, encodes it exactly as
// training does (labels by construction; the prompt is every token before the first trained
// one), samples a reply with a KV cache and stops at the template's end-of-turn token.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "backend/backend.h"
#include "cli/commands.h"
#include "data/chat_template.h"
#include "data/jinja_chat.h"
#include "data/sample_encoder.h"
#include "io/hf_model.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"
#include "train/memory_check.h"

namespace sft {

int run_generate(int argc, char** argv) {
  CLI::App app{"sft generate: sample a chat reply from a model directory", "sft generate"};
  std::string model_dir, prompt, system, template_name = "vicuna_v1.1", kind = "auto", device = "cpu";
  SamplingParams sp;
  app.add_option("--model", model_dir, "HF model directory (e.g. a training output_dir)")->required();
  app.add_option("--prompt", prompt, "the user message")->required();
  app.add_option("--system", system, "system message (default: the template's)");
  app.add_option("--conversation_template", template_name,
                 "chat template: a built-in one, or auto (the model's own chat_template)")->capture_default_str();
  app.add_option("--max_new_tokens", sp.max_new_tokens, "most tokens to generate")->capture_default_str();
  app.add_option("--temperature", sp.temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top_p", sp.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", sp.seed, "sampling seed")->capture_default_str();
  app.add_option("--tokenizer_kind", kind, "auto | sentencepiece | json")->capture_default_str();
  app.add_option("--device", device, "cpu | cuda")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  SFT_CHECK(sp.temperature >= 0, "generate", "--temperature must be >= 0, got {}", sp.temperature);
  SFT_CHECK(sp.top_p > 0 && sp.top_p <= 1, "generate", "--top_p must be in (0, 1], got {}", sp.top_p);
  auto backend = create_backend(device);
  const LlamaConfig mc = load_llama_config((std::filesystem::path(model_dir) / "config.json").string());
  auto tok = load_tokenizer(model_dir, parse_tokenizer_kind(kind));
  const ConversationRenderer renderer(template_name, model_dir);

  // The prompt is what training saw before the first trained token of an answer.
  Conversation conv;
  if (app.count("--system")) conv.system = system;
  conv.messages = {{Role::user, prompt}, {Role::assistant, "x"}};
  EncodedSample enc;
  std::string why;
  const auto segments = renderer.render_segments(conv, &why);
  SFT_CHECK(segments.has_value(), "generate", "--conversation_template {}: {}", renderer.description(), why);
  SampleEncoder(*tok).encode(*segments, enc);
  size_t first = 0;
  while (first < enc.train.size() && !enc.train[first]) ++first;
  const std::vector<int32_t> prompt_ids(enc.ids.begin(), enc.ids.begin() + int64_t(first));
  // Stop at the template's end-of-turn token and at the model's eos ids.
  std::vector<int32_t> stop(mc.eos_token_ids.begin(), mc.eos_token_ids.end());
  if (!renderer.is_model_template())
    if (auto id = tok->token_to_id(find_template(template_name).eot)) stop.push_back(*id);
  if (tok->eos_id() >= 0) stop.push_back(tok->eos_id());

  // The context: max_position_embeddings, or a sliding window (sft runs no longer sequences).
  const int64_t context = mc.sliding_window > 0 ? std::min(mc.sliding_window, mc.max_position_embeddings)
                                                : mc.max_position_embeddings;
  const int64_t max_len = std::min<int64_t>(context, int64_t(prompt_ids.size()) + sp.max_new_tokens);
  SFT_CHECK(int64_t(prompt_ids.size()) < max_len, "generate", "the prompt has {} tokens, more than the model's context ({}{})",
            prompt_ids.size(), context, mc.sliding_window > 0 ? ", its sliding_window" : "");

  // Will it fit? Stated (on stderr: stdout is the reply) and checked before the model is allocated
  // (the config parser's bound lets through models of trillions of bytes). A GPU backend checks
  // its own device memory.
  if (backend->device() == Device::cpu) {
    const MemoryPlan plan = plan_model_memory(mc, max_len);
    const int64_t available = available_memory_bytes();
    std::fflush(stdout);
    std::fprintf(stderr, "memory: %s; %s\n", describe_model_memory(plan).c_str(), describe_available(available).c_str());
    check_model_memory_fits("generate", "the model in " + model_dir, plan, available);
  }
  auto model = load_hf_model(model_dir, *backend);
  Generator gen(*model, max_len);
  std::vector<int32_t> out = gen.generate(prompt_ids, stop, sp);
  if (!out.empty() && std::find(stop.begin(), stop.end(), out.back()) != stop.end()) out.pop_back();
  std::printf("%s\n", tok->decode(out, true).c_str());
  return 0;
}

}  // namespace sft
