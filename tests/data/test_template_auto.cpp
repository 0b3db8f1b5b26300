// --conversation_template auto through the data pipeline: load_dataset renders every sample with
// the model directory's own chat template (data/jinja_chat.h), trains exactly each assistant
// message plus the end-of-turn text the template writes after it, counts samples a template
// cannot split into turns, and refuses "auto" for a model without a template.
#include <gtest/gtest.h>

#include <fstream>

#include "core/check.h"
#include "data/dataset.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

// A copy of the shipped LLaMA-2 tokenizer whose tokenizer_config.json carries `chat_template`.
fs::path model_with_template(const std::string& name, const std::string& chat_template) {
  const fs::path dir = temp_dir("template_auto_" + name);
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.model", "special_tokens_map.json"})
    fs::copy_file(fs::path(kLlama2) / f, dir / f, fs::copy_options::overwrite_existing);
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(std::ifstream(fs::path(kLlama2) / "tokenizer_config.json"));
  cfg["chat_template"] = chat_template;
  write_file(dir / "tokenizer_config.json", cfg.dump(2));
  return dir;
}

const char* kChatml =
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const std::string kData =
    R"([{"id": "a", "conversations": [{"from": "system", "value": "Be brief."},
         {"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "A small model."},
         {"from": "human", "value": "And?"}, {"from": "gpt", "value": "Trained by sft."}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}])";

sft::Dataset load(const fs::path& model, const std::string& data) {
  const fs::path p = temp_dir("template_auto_data") / "data.json";  // temp_dir empties its directory
  write_file(p, data);
  auto tok = sft::load_tokenizer(model.string());
  sft::DataOptions opt;
  opt.conversation_template = "auto";
  opt.model_dir = model.string();
  return sft::load_dataset(p.string(), *tok, opt);
}

// The decoded text of each run of trained tokens of dataset row r.
std::vector<std::string> trained_spans(const sft::Dataset& ds, int64_t r, const sft::Tokenizer& tok) {
  std::vector<std::string> out;
  const auto ids = ds.ids(r);
  const auto train = ds.train(r);
  for (size_t t = 0; t < ids.size();) {
    if (!train[t]) {
      ++t;
      continue;
    }
    size_t e = t;
    while (e < ids.size() && train[e]) ++e;
    out.push_back(tok.decode(ids.subspan(t, e - t)));
    t = e;
  }
  return out;
}

}  // namespace

TEST(TemplateAuto, TrainsEachAssistantMessageAndItsEndOfTurn) {
  const fs::path model = model_with_template("chatml", kChatml);
  const sft::Dataset ds = load(model, kData);
  EXPECT_NE(ds.template_description().find("tokenizer_config.json"), std::string::npos) << ds.template_description();
  ASSERT_EQ(ds.size(), 2);
  auto tok = sft::load_tokenizer(model.string());
  // ChatML's newline after <|im_end|> is not trained; the end-of-turn text is.
  EXPECT_EQ(trained_spans(ds, 0, *tok), (std::vector<std::string>{"A small model.<|im_end|>", "Trained by sft.<|im_end|>"}));
  EXPECT_EQ(trained_spans(ds, 1, *tok), (std::vector<std::string>{"Hello!<|im_end|>"}));
  // The whole sample is the template's rendering (BOS first, as the tokenizer adds it).
  const auto ids = ds.ids(0);
  EXPECT_EQ(tok->decode(ids, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
            "<|im_start|>assistant\nA small model.<|im_end|>\n<|im_start|>user\nAnd?<|im_end|>\n"
            "<|im_start|>assistant\nTrained by sft.<|im_end|>\n");
}

// A template that renders an earlier message differently once more follow (here: the last message
// is marked) cannot be split by rendering prefixes: every such sample is counted with the reason.
TEST(TemplateAuto, TemplateThatRewritesEarlierTurnsIsCounted) {
  const fs::path model = model_with_template(
      "rewrites", "{% for m in messages %}{% if loop.last %}LAST:{% endif %}{{ m['content'] }}\n{% endfor %}");
  const sft::Dataset ds = load(model, kData);
  EXPECT_EQ(ds.size(), 0);
  EXPECT_EQ(ds.stats().invalid, 2);
  ASSERT_EQ(ds.issues().size(), 2u);
  EXPECT_EQ(ds.issues()[0].kind, sft::IssueKind::template_split);
  EXPECT_FALSE(ds.issues()[0].detail.empty());
}

// A template's raise_exception (here: no system messages, as Gemma's) rejects that sample only,
// counted with the template's message; the other samples are kept.
TEST(TemplateAuto, TemplateRaisingOnASampleCountsThatSample) {
  const fs::path model = model_with_template(
      "raises", "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}");
  const sft::Dataset ds = load(model, kData);
  EXPECT_EQ(ds.size(), 1);
  ASSERT_EQ(ds.issues().size(), 1u);
  EXPECT_EQ(ds.issues()[0].index, 0);
  EXPECT_EQ(ds.issues()[0].kind, sft::IssueKind::template_error);
  EXPECT_NE(ds.issues()[0].detail.find("System role not supported"), std::string::npos) << ds.issues()[0].detail;
}

TEST(TemplateAuto, ModelWithoutTemplateIsAnError) {
  try {
    load(fs::path(kLlama2), kData);
    ADD_FAILURE() << "no throw";
  } catch (const sft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("template"), std::string::npos) << e.what();
  }
}
