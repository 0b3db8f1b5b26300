// The Jinja interpreter's work budget per render (jinja_eval.h kWorkBase, WorkMeter in
// jinja_value.h): hostile templates that stay inside every per-value bound but repeat 64 MiB of
// work per loop step, walk exponentially shared lists, or iterate a huge string end within a
// second with an error naming the template and line; every real chat template of the fixtures
// (tool-call ones included), over the fixture conversations, a long one and long messages, uses
// a small part of its budget.
#include <gtest/gtest.h>

#include <ctime>

#include "core/check.h"
#include "data/jinja_eval.h"
#include "data_test_util.h"

using namespace data_test;
using nlohmann::ordered_json;
namespace jinja = sft::jinja;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
constexpr double kFast = 30.0;  // CPU seconds; ASan and UBSan slow the interpreter several times
#else
constexpr double kFast = 3.0;
#endif

const fs::path kFixtures = fs::path(kRoot) / "tests/data/fixtures/jinja";

struct Outcome {
  std::string error;  // the sft::Error's message, "" when it rendered
  double seconds = 0;  // CPU time
};

// This thread's CPU time: the machine running the tests may be loaded many times over.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

Outcome render_timed(const std::string& src, const std::string& name = "hostile") {
  Outcome o;
  const double t0 = thread_cpu_seconds();
  try {
    jinja::Template(src, name).render(jinja::Dict());
  } catch (const sft::Error& e) {
    o.error = e.what();
  }
  o.seconds = thread_cpu_seconds() - t0;
  return o;
}

// The context ModelChatTemplate::render_values passes (messages, tools, documents, the flag, the
// special tokens).
jinja::Dict chat_context(const ordered_json& messages, const ordered_json& tools, bool add_generation_prompt,
                         const ordered_json& manifest_entry) {
  jinja::Dict ctx;
  ctx.set("messages", jinja::Value::from_json(messages));
  ctx.set("tools", jinja::Value::from_json(tools));
  ctx.set("documents", jinja::Value(jinja::None{}));
  ctx.set("add_generation_prompt", jinja::Value(add_generation_prompt));
  ctx.set("bos_token", jinja::Value(manifest_entry["bos_token"].get<std::string>()));
  ctx.set("eos_token", jinja::Value(manifest_entry["eos_token"].get<std::string>()));
  return ctx;
}

}  // namespace

TEST(JinjaBudget, HostileTemplatesEndFastNamingTheLine) {
  const std::vector<std::pair<std::string, std::string>> hostile = {
      // 60 MB copied per step (each value under the 64 MiB bound, 100,000 steps under kMaxSteps)
      {"copy", "{% set ns = namespace(s='a' * 60000000) %}\n{% for i in range(100000) %}\n"
               "{% set t = ns.s ~ '' %}{% endfor %}"},
      // a macro renders 60 MB into its own buffer per call (the output bound is per buffer)
      {"macro", "{% macro m() %}{{ 'a' * 60000000 }}{% endmacro %}\n\n"
                "{% for i in range(100000) %}{% set x = m() %}{% endfor %}"},
      // string methods over a big string, the result thrown away
      {"method", "{% set s = 'ab' * 30000000 %}\n{% for i in range(100000) %}{% if s.upper().startswith('x') %}"
                 "{% endif %}{% endfor %}"},
      // 10^10 comparisons: two lists of 100,000 references to one 100,000-item list
      {"compare", "{% set l = range(100000)|list %}{% set a = [l] * 100000 %}{% set b = [l] * 100000 %}\n"
                  "{{ a == b }}"},
      // unique over equal big lists: pairwise deep comparisons
      {"unique", "{% set l = range(100000)|list %}\n{{ ([l] * 100000)|unique|list|length }}"},
      // 60 M one-character strings (gigabytes of values) to iterate a string
      {"iterate", "{% set s = 'a' * 60000000 %}\n{% for c in s %}{% endfor %}"},
      // ten million cheap iterations (the step bound alone would allow them)
      {"steps", "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}"},
  };
  for (const auto& [label, src] : hostile) {
    const Outcome o = render_timed(src, "hostile_" + label);
    EXPECT_NE(o.error.find("exceeded its work budget"), std::string::npos) << label << ": " << o.error;
    EXPECT_NE(o.error.find("[jinja] hostile_" + label + " line "), std::string::npos) << label << ": " << o.error;
    EXPECT_LT(o.seconds, kFast) << label << ": " << o.error;
    std::printf("[ hostile ] %-8s %.2f s CPU: %s\n", label.c_str(), o.seconds, o.error.substr(0, 120).c_str());
  }
  // The line is the one being evaluated when the budget ran out.
  EXPECT_NE(render_timed(hostile[0].second, "t").error.find("t line 3, column"), std::string::npos);
  EXPECT_NE(render_timed(hostile[1].second, "t").error.find("t line 1, column"), std::string::npos);  // in the macro
}

TEST(JinjaBudget, TheLimitGrowsWithTheContextAndIsReported) {
  jinja::Dict ctx;
  ctx.set("x", jinja::Value(std::string(1 << 20, 'x')));
  const jinja::RenderResult r = jinja::Template("{{ x|length }}").render(ctx);
  EXPECT_EQ(r.text, "1048576");
  EXPECT_EQ(r.work_limit, jinja::kWorkBase + jinja::kWorkPerContextByte * ((1 << 20) + 1));
  EXPECT_GT(r.work, uint64_t(1) << 20);  // the lookup copies the string
  EXPECT_LT(r.work, uint64_t(2) << 20);
}

// Every real template of the fixtures over every fixture conversation (both ways), a 2,000-turn
// conversation and one of two 256 KiB messages: the work stays a small part of the budget. The
// most per byte of context: Llama 3.2 Vision's template iterates over every character of a
// string content (a loop step each), 1,374 units per byte, a third of kWorkPerContextByte. The
// texts themselves are compared with Jinja2 and HF in test_jinja.cpp and test_jinja_hf.cpp.
TEST(JinjaBudget, RealTemplatesUseASmallPartOfIt) {
  const ordered_json manifest = ordered_json::parse(read_file(kFixtures / "manifest.json"));
  const ordered_json conversations = ordered_json::parse(read_file(kFixtures / "conversations.json"));
  ordered_json cases = ordered_json::array();
  for (const auto& c : conversations) cases.push_back({{"name", c["name"]}, {"messages", c["messages"]},
                                                       {"tools", c.contains("tools") ? c["tools"] : ordered_json()}});
  ordered_json long_conv = ordered_json::array(), big = ordered_json::array();
  for (int i = 0; i < 1000; ++i) {
    long_conv.push_back({{"role", "user"}, {"content", "question " + std::to_string(i)}});
    long_conv.push_back({{"role", "assistant"}, {"content", "answer " + std::to_string(i)}});
  }
  big.push_back({{"role", "user"}, {"content", std::string(256 << 10, 'q')}});
  big.push_back({{"role", "assistant"}, {"content", std::string(256 << 10, 'a')}});
  cases.push_back({{"name", "2000 turns"}, {"messages", long_conv}, {"tools", nullptr}});
  cases.push_back({{"name", "256 KiB messages"}, {"messages", big}, {"tools", nullptr}});

  double worst_small = 0, worst_large = 0;
  std::string worst_small_at, worst_large_at;
  int rendered = 0;
  for (const auto& m : manifest) {
    const std::string file = m["file"].get<std::string>();
    std::optional<jinja::Template> t;
    try {
      t.emplace(read_file(kFixtures / "templates" / file), file);
    } catch (const sft::Error&) {
      continue;  // a template sft does not parse is covered by the differential tests
    }
    for (const auto& c : cases) {
      for (bool gen : {false, true}) {
        jinja::RenderResult r;
        try {
          r = t->render(chat_context(c["messages"], c["tools"], gen, m));
        } catch (const sft::Error& e) {
          // Templates refuse some conversations (raise_exception); never for the budget.
          EXPECT_EQ(std::string(e.what()).find("work budget"), std::string::npos) << file << " " << c["name"] << ": "
                                                                                   << e.what();
          continue;
        }
        ++rendered;
        const double share = double(r.work) / double(r.work_limit);
        const bool large = c["name"] == "2000 turns" || c["name"] == "256 KiB messages";
        double& worst = large ? worst_large : worst_small;
        if (share > worst) {
          worst = share;
          (large ? worst_large_at : worst_small_at) = file + " / " + c["name"].get<std::string>();
        }
      }
    }
  }
  std::printf("[ budget ] %d renders; the most of the budget used: %.4f%% (%s) on the fixture conversations, "
              "%.2f%% (%s) on the long ones\n",
              rendered, 100 * worst_small, worst_small_at.c_str(), 100 * worst_large, worst_large_at.c_str());
  EXPECT_GT(rendered, 300);
  EXPECT_LT(worst_small, 0.01) << worst_small_at;
  EXPECT_LT(worst_large, 0.4) << worst_large_at;
}
