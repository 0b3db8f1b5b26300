// The `sft train` option table: FastChat's launch-script flags parse unchanged, booleans take
// HF's forms, --config files (YAML and JSON) apply under command-line flags, unknown flags name
// the nearest known one, and the option list is frozen so new flags are deliberate.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "core/check.h"

namespace sft {

namespace {

ParsedOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "train");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_train_options(int(argv.size()), argv.data());
}

std::string error_of(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// fastchat-sft.md §5.1: scripts/train_vicuna_7b.sh, flag for flag (launcher aside).
TEST(TrainOptions, FastChatVicuna7bScriptParsesUnchanged) {
  ParsedOptions p = parse({"--model_name_or_path", "~/model_weights/llama-7b",
                           "--data_path", "~/datasets/sharegpt_20230422_clean_lang_split_identity.json",
                           "--bf16", "True", "--output_dir", "output_vicuna_7b", "--num_train_epochs", "3",
                           "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "16",
                           "--gradient_accumulation_steps", "16", "--evaluation_strategy", "steps",
                           "--eval_steps", "1500", "--save_strategy", "steps", "--save_steps", "1500",
                           "--save_total_limit", "8", "--learning_rate", "2e-5", "--weight_decay", "0.",
                           "--warmup_ratio", "0.04", "--lr_scheduler_type", "cosine", "--logging_steps", "1",
                           "--fsdp", "full_shard auto_wrap", "--fsdp_transformer_layer_cls_to_wrap",
                           "LlamaDecoderLayer", "--tf32", "True", "--model_max_length", "2048",
                           "--gradient_checkpointing", "True", "--lazy_preprocess", "True"});
  const TrainConfig& c = p.config;
  EXPECT_EQ(c.model_name_or_path, "~/model_weights/llama-7b");
  EXPECT_TRUE(c.bf16);
  EXPECT_EQ(c.num_train_epochs, 3.0);
  EXPECT_EQ(c.per_device_train_batch_size, 2);
  EXPECT_EQ(c.gradient_accumulation_steps, 16);
  EXPECT_EQ(c.evaluation_strategy, IntervalStrategy::steps);
  EXPECT_EQ(c.save_total_limit, 8);
  EXPECT_DOUBLE_EQ(c.learning_rate, 2e-5);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(c.warmup_ratio, 0.04);
  EXPECT_EQ(c.lr_scheduler_type, ScheduleKind::cosine);
  EXPECT_EQ(c.fsdp, "full_shard auto_wrap");
  EXPECT_EQ(c.model_max_length, 2048);
  EXPECT_TRUE(c.gradient_checkpointing);
  EXPECT_TRUE(c.lazy_preprocess);
  // --fsdp, --fsdp_transformer_layer_cls_to_wrap, --tf32, --lazy_preprocess say once that they are compat-only
  ASSERT_EQ(p.notices.size(), 4u);
  EXPECT_NE(p.notices[0].find("--lazy_preprocess"), std::string::npos);
}

TEST(TrainOptions, BooleanForms) {
  EXPECT_TRUE(parse({"--bf16"}).config.bf16);                        // bare flag
  EXPECT_TRUE(parse({"--bf16", "--seed", "1"}).config.bf16);         // bare flag before another
  EXPECT_TRUE(parse({"--bf16=true"}).config.bf16);
  EXPECT_FALSE(parse({"--packing", "False"}).config.packing);
  EXPECT_NE(error_of({"--bf16", "maybe"}).find("--bf16 expects True or False, got 'maybe'"), std::string::npos);
}

TEST(TrainOptions, UnknownFlagNamesTheNearest) {
  EXPECT_NE(error_of({"--learning_rat", "1e-5"}).find("did you mean '--learning_rate'"), std::string::npos);
  EXPECT_NE(error_of({"--gradient_accumulation", "4"}).find("'--gradient_accumulation_steps'"), std::string::npos);
}

TEST(TrainOptions, BadValuesAreClear) {
  EXPECT_NE(error_of({"--save_steps", "ten"}).find("--save_steps expects an integer, got 'ten'"), std::string::npos);
  EXPECT_NE(error_of({"--lr_scheduler_type", "cosine_typo"}).find("must be one of linear, cosine"), std::string::npos);
  EXPECT_NE(error_of({"--learning_rate", "nan"}).find("expects a number"), std::string::npos);
  EXPECT_NE(error_of({"--seed"}).find("--seed needs a value"), std::string::npos);
}

TEST(TrainOptions, AliasAndWandbNotice) {
  ParsedOptions p = parse({"--eval_strategy", "epoch", "--report_to", "wandb"});
  EXPECT_EQ(p.config.evaluation_strategy, IntervalStrategy::epoch);
  ASSERT_EQ(p.notices.size(), 1u);
  EXPECT_NE(p.notices[0].find("Weights & Biases is not built in"), std::string::npos);
}

TEST(TrainOptions, Tf32IsACompatNoticeOnlyOnCpu) {
  ParsedOptions cpu = parse({"--tf32", "True"});
  ASSERT_EQ(cpu.notices.size(), 1u);
  EXPECT_NE(cpu.notices[0].find("no effect on the CPU backend"), std::string::npos);
  ParsedOptions gpu = parse({"--tf32", "True", "--device", "cuda"});
  EXPECT_TRUE(gpu.config.tf32);
  EXPECT_TRUE(gpu.notices.empty());
}

TEST(TrainOptions, ConfigFilesYamlAndJsonUnderFlags) {
  const auto dir = std::filesystem::temp_directory_path() / ("sft_opts_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.yaml") << "learning_rate: 3e-4\nbf16: True\nlr_scheduler_type: cosine\nsave_steps: 7\n";
  std::ofstream(dir / "b.json") << R"({"learning_rate": 1e-3, "packing": false, "output_dir": "out"})";
  ParsedOptions y = parse({"--config", (dir / "a.yaml").string(), "--save_steps", "9"});
  EXPECT_DOUBLE_EQ(y.config.learning_rate, 3e-4);
  EXPECT_TRUE(y.config.bf16);
  EXPECT_EQ(y.config.save_steps, 9);  // the command line wins
  ParsedOptions j = parse({"--config=" + (dir / "b.json").string()});
  EXPECT_DOUBLE_EQ(j.config.learning_rate, 1e-3);
  EXPECT_FALSE(j.config.packing);
  EXPECT_EQ(j.config.output_dir, "out");
  std::ofstream(dir / "c.yaml") << "learnin_rate: 1\n";
  EXPECT_NE(error_of({"--config", (dir / "c.yaml").string()}).find("did you mean '--learning_rate'"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(TrainOptions, HelpListsEveryOptionWithItsDefault) {
  const std::string help = train_options_help();
  for (const std::string& name : train_option_names()) EXPECT_NE(help.find("--" + name + " "), std::string::npos) << name;
  EXPECT_NE(help.find("(default: 5e-05)"), std::string::npos);
}

// Frozen list (torchtitan's test_no_new_cli_options): adding or renaming a flag must be deliberate.
TEST(TrainOptions, OptionListIsFrozen) {
  const std::vector<std::string> expected = {
      "model_name_or_path", "data_path", "eval_data_path", "conversation_template", "model_max_length", "packing",
      "lazy_preprocess", "padding_side", "tokenizer_kind", "strict_data", "output_dir", "save_strategy", "save_steps",
      "save_total_limit", "resume_from_checkpoint", "ignore_data_skip", "save_on_interrupt", "num_train_epochs", "max_steps", "per_device_train_batch_size",
      "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay", "adam_beta1",
      "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
      "loss_normalization", "max_bad_steps", "evaluation_strategy", "eval_steps", "logging_steps", "report_to",
      "bf16", "fp16", "tf32", "gradient_checkpointing", "device", "threads", "ddp_timeout", "seed", "fsdp",
      "fsdp_transformer_layer_cls_to_wrap", "fsdp_config", "fsdp_reduce_dtype", "optim", "cache_dir", "trust_remote_code",
      "local_rank"};
  EXPECT_EQ(train_option_names(), expected);
}

}  // namespace sft
