// Labels by construction: FastChat's worked example (fastchat-sft.md §1.2), the ids equal to
// tokenizing the whole rendered text for every template and tokenizer on the dummy data, and the
// texts FastChat cannot align (a literal </s> or " ASSISTANT: " inside a message).
#include <gtest/gtest.h>

#include <algorithm>

#include "data/chat_template.h"
#include "data/sample_encoder.h"
#include "data/sample_reader.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

sft::Conversation conv_of(std::vector<std::string> turns) {
  sft::Conversation c;
  for (size_t i = 0; i < turns.size(); ++i)
    c.messages.push_back({i % 2 ? sft::Role::assistant : sft::Role::user, std::move(turns[i])});
  return c;
}

sft::EncodedSample encode(const sft::Tokenizer& tok, std::string_view tmpl, const sft::Conversation& c) {
  sft::SampleEncoder enc(tok);
  sft::EncodedSample out;
  enc.encode(sft::render_segments(sft::find_template(tmpl), c), out);
  EXPECT_EQ(enc.fallbacks(), 0);
  return out;
}

// Ids of the trained tokens, in order.
std::vector<int32_t> trained_ids(const sft::EncodedSample& s) {
  std::vector<int32_t> out;
  for (size_t t = 0; t < s.ids.size(); ++t)
    if (s.train[t]) out.push_back(s.ids[t]);
  return out;
}

TEST(Labels, FastChatWorkedExample) {
  for (bool legacy : {true, false}) {
    auto tok = sft::load_tokenizer(llama2_with_legacy(legacy));
    const sft::EncodedSample s = encode(*tok, "vicuna_v1.1", conv_of({"Hello!", "Hi!"}));
    ASSERT_GE(s.ids.size(), 20u);
    EXPECT_EQ(s.ids.front(), 1);
    const std::vector<int32_t> tail(s.ids.end() - 14, s.ids.end());
    EXPECT_EQ(tail, (std::vector<int32_t>{29889, 3148, 1001, 29901, 15043, 29991, 319, 1799, 9047, 13566, 29901, 6324,
                                          29991, 2}))
        << "legacy " << legacy;
    EXPECT_EQ(trained_ids(s), (std::vector<int32_t>{6324, 29991, 2}));  // "▁Hi" "!" "</s>"
    EXPECT_EQ(sft::labels_of(s).size(), s.ids.size());
  }
}

// Every template with every tokenizer: are the concatenated segment ids those of the whole
// rendered text (BOS from the tokenizer unless the text starts with it)? They must be for the
// templates made for the tokenizer (`exact`); for the others a token may straddle a segment
// boundary in the whole text (e.g. LLaMA-2's "><" across "<|eot_id|>" + "<|start_header_id|>",
// which are plain text to it), and the counts are reported.
void check_whole_text(const std::string& tok_dir, const std::string& label, std::vector<std::string_view> exact) {
  auto tok = sft::load_tokenizer(tok_dir);
  sft::SampleFile file(dummy_data());
  sft::SampleEncoder enc(*tok);
  const std::string bos = tok->bos_id() >= 0 ? tok->id_to_token(tok->bos_id()) : "";
  for (std::string_view name : sft::template_names()) {
    const bool must = std::find(exact.begin(), exact.end(), name) != exact.end();
    int64_t equal = 0, differ = 0;
    for (int64_t i = 0; i < file.size(); ++i) {
      sft::Conversation conv;
      ASSERT_FALSE(sft::parse_sample(file.text(i), sft::DataFormat::sharegpt, conv).issue);
      if (i % 2) conv.system = "Sys " + std::to_string(i) + ":\n be  kind.";
      const auto segs = sft::render_segments(sft::find_template(name), conv);
      sft::EncodedSample s;
      enc.encode(segs, s);
      const std::string text = sft::render_text(sft::find_template(name), conv);
      const bool text_has_bos = !bos.empty() && text.starts_with(bos);
      const std::vector<int32_t> whole = tok->encode(text, !text_has_bos);
      if (s.ids == whole) ++equal;
      else ++differ;
      if (must) {
        EXPECT_EQ(s.ids, whole) << label << " " << name << " sample " << i;
      }
      EXPECT_EQ(tok->decode(std::span<const int32_t>(s.ids).subspan(text_has_bos ? 0 : 1)),
                tok->decode(std::span<const int32_t>(whole).subspan(text_has_bos ? 0 : 1)))
          << label << " " << name << " sample " << i;
      int runs = 0;
      for (size_t t = 0; t < s.train.size(); ++t) runs += s.train[t] && (t == 0 || !s.train[t - 1]);
      EXPECT_EQ(runs, static_cast<int>(conv.messages.size() / 2)) << label << " " << name << " sample " << i;
    }
    std::printf("[ labels ] %-22s %-12s %4lld of %4lld samples: ids equal to tokenizing the whole text%s\n",
                label.c_str(), std::string(name).c_str(), (long long)equal, (long long)(equal + differ),
                must ? " (required)" : "");
  }
  EXPECT_EQ(enc.fallbacks(), 0);
}

const std::vector<std::string_view> kLlama2Templates = {"vicuna_v1.1", "alpaca", "llama-2", "mistral"};
TEST(Labels, EqualsWholeTextLlama2NonLegacy) {
  check_whole_text(llama2_with_legacy(false), "llama2 non-legacy", kLlama2Templates);
}
TEST(Labels, EqualsWholeTextLlama2Legacy) { check_whole_text(llama2_with_legacy(true), "llama2 legacy", kLlama2Templates); }
TEST(Labels, EqualsWholeTextLlama3) {
  if (llama3_dir().empty()) GTEST_SKIP() << kLlama3 << " is absent (or could not be repaired)";
  check_whole_text(llama3_dir(), "llama3 tokenizer.json", {"llama-3"});
}

// What FastChat's preprocess() cannot align: here the ids are still those of the whole text and
// the labels are exactly the assistant messages plus their </s>.
TEST(Labels, SpecialTextInsideMessages) {
  for (bool legacy : {true, false}) {
    auto tok = sft::load_tokenizer(llama2_with_legacy(legacy));
    const auto ids_of = [&](const std::string& t) { return tok->encode(t, false); };
    const std::vector<std::string> turns = {"Say </s> and ASSISTANT: please", "Ok</s> done", "Again ASSISTANT: x",
                                            "  two spaces\nand lines"};
    const sft::Conversation c = conv_of(turns);
    const sft::EncodedSample s = encode(*tok, "vicuna_v1.1", c);
    const std::string text = sft::render_text(sft::find_template("vicuna_v1.1"), c);
    EXPECT_EQ(s.ids, tok->encode(text, true)) << "legacy " << legacy;
    // Trained: " Ok</s> done" + "</s>" and "   two spaces\nand lines" + "</s>", tokenized in place.
    std::vector<int32_t> want = ids_of(" Ok</s> done");
    want.erase(want.begin());  // the encode of a text start adds a "▁" that the in-context text has as its space
    std::vector<int32_t> got = trained_ids(s);
    ASSERT_GE(got.size(), want.size() + 1);
    // The first trained token is "▁Ok", the first assistant turn ends with the </s> of the template.
    EXPECT_EQ(tok->decode(std::span<const int32_t>(got).subspan(0, 1)), "Ok");
    int eos = 0;
    for (int32_t id : got) eos += id == 2;
    EXPECT_EQ(eos, 3) << "the literal </s> inside the answer is trained as written, plus two end-of-turn </s>";
    // Nothing of the user turns is trained, even the literal "</s>" and " ASSISTANT: " in them.
    int64_t user_eos_trained = 0;
    for (size_t t = 0; t < s.ids.size(); ++t) user_eos_trained += s.ids[t] == 2 && !s.train[t];
    EXPECT_EQ(user_eos_trained, 1) << "the </s> inside the first user message is masked";
  }
}

TEST(Labels, Llama3NewlineStartUsesLetterAnchor) {
  if (llama3_dir().empty()) GTEST_SKIP() << kLlama3 << " is absent (or could not be repaired)";
  auto tok = sft::load_tokenizer(llama3_dir());
  // chatml puts the answer right after "\n"; an answer starting with "\n" must not merge with it
  // through the anchor (that would change the ids), so the "a" anchor is used.
  const sft::Conversation c = conv_of({"q", "\n\nanswer\n", "q2", "x"});
  for (std::string_view t : {"chatml", "llama-3", "vicuna_v1.1", "zephyr", "llama-2", "mistral", "alpaca"}) {
    const sft::EncodedSample s = encode(*tok, t, c);
    EXPECT_EQ(s.ids.size(), s.train.size());
    EXPECT_FALSE(trained_ids(s).empty()) << t;
  }
}

}  // namespace
