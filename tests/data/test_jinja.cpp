// The Jinja interpreter (src/data/jinja_*): unit tests per construct and per error, then
// differential tests against the real Jinja2 run as HF's apply_chat_template runs it
// (tests/data/jinja_reference.py): snippets covering every supported construct, the corpus of
// real chat templates in tests/data/fixtures/jinja over fixed and random conversations (with and
// without add_generation_prompt, with tools), byte for byte; and a fuzz test over mutated
// templates (every input either renders or fails with sft::Error, within the render limits).
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <random>

#include "core/check.h"
#include "data/jinja_eval.h"
#include "data_test_util.h"

using namespace data_test;
using nlohmann::ordered_json;

namespace {

const fs::path kFixtures = fs::path(kRoot) / "tests/data/fixtures/jinja";
constexpr std::time_t kNow = 1721952000;  // 2024-07-26 00:00 UTC: what strftime_now() sees on both sides

sft::jinja::Dict context_of(const ordered_json& j) { return sft::jinja::Value::from_json(j).dict(); }

std::string render(std::string_view src, const ordered_json& ctx = ordered_json::object()) {
  sft::jinja::RenderOptions opts;
  opts.now = kNow;
  return sft::jinja::Template(src).render(context_of(ctx), opts).text;
}

// The sft::Error message of parsing + rendering `src` ("" when it renders).
std::string error_of(std::string_view src, const ordered_json& ctx = ordered_json::object()) {
  try {
    render(src, ctx);
  } catch (const sft::Error& e) {
    return e.what();
  }
  return "";
}

// ---- unit tests ----

TEST(Jinja, TextAndOutput) {
  EXPECT_EQ(render("plain"), "plain");
  EXPECT_EQ(render("a{{ 1 + 2 }}b{{ 'x' ~ 3 }}"), "a3bx3");
  EXPECT_EQ(render("{{ none }}|{{ true }}|{{ 1.0 }}|{{ [1, 'a'] }}|{{ {'k': none} }}|{{ undefined_name }}"),
            "None|True|1.0|[1, 'a']|{'k': None}|");
  EXPECT_EQ(render("line\n"), "line");  // one trailing newline dropped (keep_trailing_newline=False)
  EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(Jinja, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it.
  EXPECT_EQ(render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a {{- 'b' -}} c"), "abc");
  EXPECT_EQ(render("{# note #}\nx"), "x");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");
}

TEST(Jinja, Statements) {
  const ordered_json ctx = {{"xs", {3, 1, 2}}};
  EXPECT_EQ(render("{% if 0 %}a{% elif 1 %}b{% else %}c{% endif %}"), "b");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index }}{{ x }}{{ loop.last }} {% endfor %}", ctx), "13False 21False 32True ");
  EXPECT_EQ(render("{% for x in xs if x > 1 %}{{ x }}/{{ loop.length }} {% else %}none{% endfor %}", ctx), "3/2 2/2 ");
  EXPECT_EQ(render("{% for x in [] %}a{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% endfor %}", ctx), "3");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}", ctx), "32");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"), "a1b2");
  // A loop is a scope: set inside it does not leak; a namespace carries values out.
  EXPECT_EQ(render("{% set x = 0 %}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}", ctx), "0");
  EXPECT_EQ(render("{% set ns = namespace(s=0) %}{% for i in xs %}{% set ns.s = ns.s + i %}{% endfor %}{{ ns.s }}", ctx), "6");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(render("{% set t | upper %}x{{ 1 }}{% endset %}{{ t }}"), "X1");
  EXPECT_EQ(render("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(b=2, a=3) }}"), "[1B][32]");
  EXPECT_EQ(render("{% macro w(t) %}<{{ t }}:{{ caller() }}>{% endmacro %}{% call w('x') %}body{% endcall %}"), "<x:body>");
  EXPECT_EQ(render("a{% generation %}b{% endgeneration %}c"), "abc");
  EXPECT_EQ(render("{% filter upper | trim %} x{{ 1 }} {% endfilter %}"), "X1");
  const auto r = sft::jinja::Template("a{% generation %}bé{% endgeneration %}c").render({});
  ASSERT_EQ(r.generation_spans.size(), 1u);
  EXPECT_EQ(r.generation_spans[0], (std::pair<size_t, size_t>{1, 4}));
}

TEST(Jinja, Expressions) {
  const ordered_json ctx = {{"m", {{{"role", "system"}, {"content", " Hi "}}, {{"role", "user"}, {"content", "Q"}}}},
                            {"s", "héllo"}};
  EXPECT_EQ(render("{{ m[1:]|length }}{{ m[::-1][0].role }}{{ m[-1]['content'] }}{{ m.0.role }}", ctx), "1userQsystem");
  EXPECT_EQ(render("{{ s[1:3] }}{{ s[::-1] }}{{ s|length }}{{ s[1] }}", ctx), "élolléh5é");
  EXPECT_EQ(render("{{ 'x' if m else 'y' }}{{ 'a' in 'cat' }}{{ 1 < 2 <= 2 }}{{ not none }}{{ 'u' not in 'abc' }}", ctx),
            "xTrueTrueTrueTrue");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1e16 }} {{ 0.1 + 0.2 }}"),
            "3 -4 2 3.5 1024 1e+16 0.30000000000000004");
  EXPECT_EQ(render("{{ m[0].content|trim }}|{{ m[0]['content'].strip() ~ '!' }}|{{ m|map(attribute='role')|join(',') }}", ctx),
            "Hi|Hi!|system,user");
  EXPECT_EQ(render("{{ m|selectattr('role', 'equalto', 'user')|list|length }}{{ m[0].missing is defined }}", ctx), "1False");
  EXPECT_EQ(render("{{ x|default('d') }}{{ ''|default('d') }}{{ ''|default('d', true) }}"), "dd");
}

TEST(Jinja, ToJsonAsHf) {
  ordered_json d = ordered_json::parse(R"({"z": 1, "a": [true, null, 1.5, "é\"\n"], "e": {}})");
  const ordered_json ctx = {{"d", d}};
  EXPECT_EQ(render("{{ d|tojson }}", ctx), R"({"z": 1, "a": [true, null, 1.5, "é\"\n"], "e": {}})");  // key order kept
  EXPECT_EQ(render("{{ d|tojson(indent=2) }}", ctx),
            "{\n  \"z\": 1,\n  \"a\": [\n    true,\n    null,\n    1.5,\n    \"é\\\"\\n\"\n  ],\n  \"e\": {}\n}");
  EXPECT_EQ(render("{{ d|tojson(separators=(',', ':'), sort_keys=true) }}", ctx), R"({"a":[true,null,1.5,"é\"\n"],"e":{},"z":1})");
  EXPECT_EQ(render("{{ 'é'|tojson(ensure_ascii=true) }}{{ '🦙'|tojson(true) }}"), R"("\u00e9""\ud83e\udd99")");
}

TEST(Jinja, Globals) {
  EXPECT_EQ(render("{{ range(3)|list }}{{ range(1, 7, 2)|list }}"), "[0, 1, 2][1, 3, 5]");
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d') }}").size(), 10u);
  EXPECT_EQ(render("{{ dict(a=1)|tojson }}{{ namespace(a=2).a }}"), R"({"a": 1}2)");
  EXPECT_NE(error_of("{{ raise_exception('roles must alternate') }}").find("raise_exception: roles must alternate"),
            std::string::npos);
}

TEST(Jinja, ErrorsNameLineAndColumn) {
  auto has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nexpected to contain: " << part;
  };
  has(error_of("ab\n  {% include 'x' %}"), "[jinja] chat_template line 2, column 6: unsupported statement 'include'");
  has(error_of("{% for x in y %}"), "line 1, column 17: unexpected end of template, expected 'endfor' or 'else'");
  has(error_of("x\n{{ 1 | nosuch }}"), "line 2, column 8: unknown filter 'nosuch'");
  has(error_of("{{ a is nosuch }}"), "unknown test 'nosuch'");
  has(error_of("{{ x.y }}"), "line 1, column 5: 'x' is undefined (reading its attribute 'y')");
  has(error_of("{{ 1 + 'a' }}"), "unsupported operand types for +: 'int' and 'str'");
  has(error_of("{{ 'a' "), "tag is never closed");
  has(error_of("{{ 'abc }}"), "string literal is never closed");
  has(error_of("{% raw %}x{% endraw %}"), "unsupported statement 'raw'");
  has(error_of("{% for x in y recursive %}{% endfor %}"), "recursive for loops are not supported");
  has(error_of("{% set x.y = 1 %}"), "only namespace() objects take attributes");
  has(error_of("{{ f(*a) }}"), "*args and **kwargs in calls are not supported");
  has(error_of("{{ [1] < 'a' }}"), "'<' not supported between 'list' and 'str'");
  has(error_of("{{ none|length }}"), "object of type 'NoneType' has no len()");
}

TEST(Jinja, Limits) {
  EXPECT_NE(error_of(std::string(sft::jinja::kMaxTemplateBytes + 1, 'x')).find("more than the"), std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(1000, '(') + "1" + std::string(1000, ')') + " }}").find("nesting deeper than"), std::string::npos);
  std::string nested;
  for (int i = 0; i < 300; ++i) nested += "{% if true %}";
  EXPECT_NE(error_of(nested).find("nesting deeper than"), std::string::npos);
  EXPECT_NE(error_of("{{ range(1000000)|length }}").find("range() of 1000000 items"), std::string::npos);
  EXPECT_NE(error_of("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}").find("output exceeds"), std::string::npos);
  EXPECT_NE(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nested deeper than"), std::string::npos);
  EXPECT_NE(error_of("{{ 2 ** 64 }}").find("integer overflow"), std::string::npos);
}

// ---- differential tests against Jinja2 ----

// A python3 that imports jinja2 (the test virtualenv's first), or "" when there is none.
const std::string& jinja_python() {
  static const std::string python = [] {
    for (const std::string& p : {kPython, std::string("python3")}) {
      if (p == kPython && !fs::exists(kPython)) continue;
      if (run(p + " " + kRoot + "/tests/data/jinja_reference.py --version").code == 0) return p;
    }
    return std::string();
  }();
  return python;
}

struct Case {
  std::string label;
  size_t template_index;
  ordered_json context;
};

// Renders every case with Jinja2 (one python run) and with sft::jinja; returns how many agree.
// Agreement: the same text and generation spans, or both failing (the messages differ by design).
int compare_with_jinja2(const std::vector<std::string>& templates, const std::vector<Case>& cases, std::string* report) {
  ordered_json req = {{"now", kNow}, {"templates", templates}, {"cases", ordered_json::array()}};
  for (const Case& c : cases) req["cases"].push_back({{"template", c.template_index}, {"context", c.context}});
  const fs::path dir = temp_dir("jinja");
  write_file(dir / "request.json", req.dump());
  const RunResult r = run(jinja_python() + " " + kRoot + "/tests/data/jinja_reference.py " + (dir / "request.json").string() +
                          " > " + (dir / "expected.json").string());
  EXPECT_EQ(r.code, 0) << r.out;
  const ordered_json expected = ordered_json::parse(read_file(dir / "expected.json"));
  EXPECT_EQ(expected.size(), cases.size());

  std::vector<std::unique_ptr<sft::jinja::Template>> compiled;
  std::vector<std::string> parse_errors;
  for (size_t i = 0; i < templates.size(); ++i) {
    try {
      compiled.push_back(std::make_unique<sft::jinja::Template>(templates[i]));
      parse_errors.emplace_back();
    } catch (const sft::Error& e) {
      compiled.push_back(nullptr);
      parse_errors.emplace_back(e.what());
    }
  }
  sft::jinja::RenderOptions opts;
  opts.now = kNow;
  int agree = 0;
  for (size_t i = 0; i < cases.size() && i < expected.size(); ++i) {
    const Case& c = cases[i];
    const ordered_json& want = expected[i];
    std::string got_text, got_error;
    ordered_json got_spans = ordered_json::array();
    if (!compiled[c.template_index]) {
      got_error = parse_errors[c.template_index];
    } else {
      try {
        const auto res = compiled[c.template_index]->render(context_of(c.context), opts);
        got_text = res.text;
        for (const auto& [b, e] : res.generation_spans) got_spans.push_back({b, e});
      } catch (const sft::Error& e) {
        got_error = e.what();
      }
    }
    const bool want_error = want.contains("error");
    bool ok;
    if (want_error || !got_error.empty()) ok = want_error && !got_error.empty();
    else ok = want["text"].get<std::string>() == got_text && want["generation"] == got_spans;
    agree += ok;
    if (!ok && report->size() < 4000) {
      *report += "\n--- " + c.label + "\n  jinja2: " + (want_error ? "error " + want["error"].get<std::string>() : want["text"].dump()) +
                 "\n  sft:    " + (got_error.empty() ? ordered_json(got_text).dump() : "error " + got_error);
    }
  }
  return agree;
}

#define REQUIRE_JINJA2()                                                                     \
  if (jinja_python().empty()) GTEST_SKIP() << "python3 with jinja2 not found: differential test skipped " \
                                              "(pip install jinja2==3.1.6)"

// Each snippet is rendered over one context; together they exercise every supported construct.
TEST(JinjaVsJinja2, Snippets) {
  REQUIRE_JINJA2();
  const ordered_json ctx = ordered_json::parse(R"({
    "messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi \u00e9"},
                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    "s": " Hello World ", "n": 7, "f": 2.5, "l": [3, 1, 2], "e": "", "none": null, "t": true,
    "d": {"b": 1, "a": [1, {"x": "y"}], "u": "\u00e9\ud83e\udd99", "q": "say \"hi\"\n"},
    "nested": {"k": {"k2": "v"}}, "words": ["b", "A", "a"]})");
  const std::vector<std::string> snippets = {
      "{{ s|trim }}|{{ s|upper }}|{{ s|lower }}|{{ s|title }}|{{ s|capitalize }}|{{ s|length }}|{{ s|trim(' Hd') }}",
      "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.split() }}|{{ s.split('o') }}|{{ s.split('o', 1) }}|{{ s.strip(' H') }}",
      "{{ s.startswith(' He') }}{{ s.endswith(('x', 'd ')) }}{{ s.replace('l', 'L') }}{{ s.replace('l', 'L', 1) }}{{ s.find('W') }}{{ s.count('l') }}",
      "{{ l|join(', ') }}|{{ l|first }}|{{ l|last }}|{{ l|length }}|{{ l|sort }}|{{ l|sort(reverse=true) }}|{{ l|reverse|list }}|{{ l|unique|list }}",
      "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|tojson(separators=(',', ':')) }}|{{ d|tojson(sort_keys=true) }}|{{ d|tojson(ensure_ascii=true) }}",
      "{{ d|tojson(indent=0) }}|{{ {}|tojson(indent=2) }}|{{ []|tojson }}|{{ messages|tojson(indent=4) }}|{{ f|tojson }}|{{ none|tojson }}",
      "{{ d }}|{{ l }}|{{ none }}|{{ t }}|{{ f }}|{{ 1/3 }}|{{ 10/2 }}|{{ 2**10 }}|{{ 7//2 }}|{{ -7//2 }}|{{ -7%3 }}|{{ 7.5%2 }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 1e-5 }}|{{ 123456789.125 }}",
      "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|{{ d|items|list }}",
      "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}{% if not loop.first %}{{ loop.previtem.role }}{% endif %}{% if not loop.last %}{{ loop.nextitem.role }}{% endif %}{{ loop.cycle('a', 'b') }};{% endfor %}",
      "{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}|{% for x in [] %}{% else %}empty{% endfor %}",
      "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
      "{% set ns = namespace(c=0, found=false) %}{% for x in l %}{% set ns.c = ns.c + x %}{% if x == 1 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.c }}{{ ns.found }}",
      "{% set x = 1 %}{% for i in l %}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
      "{% macro f(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, 2) }}{{ f(a=3, b=4) }}{{ f() }}",
      "{% macro w(x) %}<{{ x }}{{ caller() }}>{% endmacro %}{% call w(1) %}inner{{ n }}{% endcall %}",
      "{{ messages[1:] | length }}{{ messages[::-1][0].role }}{{ l[-1] }}{{ s[1:4] }}{{ s[::-1] }}{{ 'h\u00e9llo'[1] }}{{ 'h\u00e9llo'|length }}{{ l[::2] }}{{ l[5:] }}{{ l[-100:1] }}",
      "{{ 'a' in 'cat' }}{{ 2 in l }}{{ 'a' in d }}{{ 'z' not in d }}{{ 1 < 2 < 3 }}{{ 'b' > 'a' }}{{ l == [3,1,2] }}{{ none is none }}{{ x is defined }}{{ d is mapping }}{{ l is iterable }}{{ s is string }}{{ n is number }}{{ n is integer }}{{ f is float }}{{ n is odd }}{{ n is divisibleby 7 }}{{ t is true }}{{ t is boolean }}{{ l is sequence }}{{ s is not string }}",
      "{{ 'yes' if t else 'no' }}{{ 'yes' if e else 'no' }}{{ 'x' if false }}|{{ t and 'A' }}{{ e or 'B' }}{{ not e }}{{ none or 0 }}",
      "{{ 'a' ~ 1 ~ none ~ undefined_var }}|{{ 'a' + 'b' }}|{{ [1] + [2] }}|{{ 'ab' * 3 }}|{{ 3 * [0] }}",
      "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='content')|join('/') }}|{{ messages|map(attribute='role')|list }}|{{ l|select('odd')|list }}|{{ l|map('string')|join }}|{{ l|reject('odd')|list }}|{{ messages|selectattr('role')|list|length }}",
      "{{ undefined_var|default('dflt') }}{{ e|default('dflt') }}{{ e|default('dflt', true) }}{{ none|default('x') }}{{ undefined_var|d('y') }}",
      "{{ '42'|int + 1 }}{{ '3.7'|float }}{{ 'x'|int }}{{ 3.9|int }}{{ n|string + 'a' }}{{ -n|abs }}{{ ' 12 '|int }}{{ '1_000'|int }}{{ '3.5'|int }}{{ true|int }}",
      "{{ d.get('b') }}{{ d.get('zz', 'no') }}{{ d.get('zz') }}{{ d.keys()|list }}{{ d.values()|list|length }}{{ d.a[1].x }}{{ d['a'][0] }}{{ nested.k.k2 }}{{ d.missing is defined }}{{ none.x is defined }}",
      "  {% if t %}\n    indented\n  {% endif %}\n{%- if t -%}  strip  {%- endif -%}  \n{# comment #}\nend\n  {# c2 #}  x\n{% for i in l %}\n  {{ i }}\n{% endfor %}\n",
      "{% set x %}block {{ n }}{% endset %}[{{ x }}]{% set y | upper | trim %} up {% endset %}{{ y }}",
      "{{ \"escapes: \\n \\t \\\\ \\u00e9 \\x41 \\' \\\" \\q\" }}{{ 'adj' 'acent' }}",
      "{{ strftime_now('%Y-%m-%d %H:%M %b %A %d') }}",
      "{{ range(3)|list }}{{ range(1, 7, 2)|list }}{{ range(5, 0, -2)|list }}{% for i in range(3) %}{{ i }}{% endfor %}",
      "{{ s|indent(2) }}|{{ 'a\nb\n\nc'|indent(2, true) }}|{{ 'a\nb\n\nc'|indent(2, blank=true) }}|{{ 'a\nb'|indent('> ') }}",
      "{% if messages[0].role == 'user' %}u{% elif messages[0].role == 'system' %}s{% else %}o{% endif %}{{ messages|length > 2 and messages[-1].role == 'user' }}",
      "{{ l|sort|first }}{{ words|sort }}{{ words|sort(case_sensitive=true) }}{{ messages|sort(attribute='role')|map(attribute='role')|join }}{{ words|unique(case_sensitive=true)|list }}",
      "{{ 'x'.join(['a','b']) }}{{ 'a,b,,c'.split(',') }}{{ '  a  b  '.split() }}{{ 'A b-c'.title() }}{{ \"hello-world it's\"|title }}{{ 'hELLO'.capitalize() }}{{ 'ab'.upper() }}{{ 'AB'.lower() }}",
      "{{ 3 > 2.5 }}{{ true + 1 }}{{ 1 == 1.0 }}{{ 0.1 + 0.2 }}{{ 2.0 * 3 }}{{ 10 // 3.0 }}{{ -2 ** 2 }}{{ 2 ** -1 }}{{ +n }}{{ -f }}",
      "{{ messages.0.role }}{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}{% for (a, b) in [[5, 6]] %}{{ a * b }}{% endfor %}",
      "{{ dict(a=1, b=2)|tojson }}{{ namespace(a=1).a }}{{ d|length }}{{ ''|length }}{{ '\u00e9'|length }}{% set a, b = 1, 2 %}{{ a }}{{ b }}",
      "{{ l[5] is defined }}{{ l[1:100] }}{{ s[100:] }}{{ messages[0]['content'] | trim + '!' }}{{ [1, [2, 'x']] }}{{ {'a': {'b': 'c'}} }}",
      "{{ 'it\\'s' }}|{{ \"it's\" }}|{{ ['it\\'s', 'say \"x\"', 'both \\' \"'] }}|{{ ['\\n\\t\\\\'] }}",
      "{{ '%s' }}{{ 'a{b}c' }}{{ '{{' }}{{ '%}' }}",
      "{% if not t %}a{% elif not e %}b{% endif %}{% if l|length is divisibleby(3) %}c{% endif %}{% if 'Bye' in messages|map(attribute='content') %}d{% endif %}",
      "{% filter upper %}a{{ n }}b{% endfilter %}|{%- filter trim | replace('x', 'y') -%}  x{{ s }}x  {%- endfilter %}",
      "{{ messages[-1]['content']|e }}{{ '<a href=\"x\">&'|e }}{{ s|safe }}{{ 3|string|length }}",
      // Errors on both sides (only the failure is compared).
      "{{ undefined_var.attr }}", "{{ raise_exception('boom') }}", "{{ 1 + 'a' }}", "{{ none|length }}", "{{ 1/0 }}",
      "{{ undefined_var + 1 }}", "{{ l.append(4) }}", "{% for x in none %}{% endfor %}", "{{ d|tojson(indent=[]) }}",
  };
  std::vector<Case> cases;
  for (size_t i = 0; i < snippets.size(); ++i) cases.push_back(Case{"snippet " + std::to_string(i) + ": " + snippets[i], i, ctx});
  std::string report;
  const int agree = compare_with_jinja2(snippets, cases, &report);
  EXPECT_EQ(agree, static_cast<int>(cases.size())) << report;
}

// More snippets (tests/data/fixtures/jinja/snippets.json): scoping of loop and macro bodies,
// nested loops, printing of floats and non-printable characters, whitespace around tags.
TEST(JinjaVsJinja2, SnippetFixtures) {
  REQUIRE_JINJA2();
  const ordered_json fixture = ordered_json::parse(read_file(kFixtures / "snippets.json"));
  std::vector<std::string> snippets;
  std::vector<Case> cases;
  for (const auto& snippet : fixture["snippets"]) {
    cases.push_back(Case{"snippets.json " + std::to_string(snippets.size()) + ": " + snippet.get<std::string>(),
                         snippets.size(), fixture["context"]});
    snippets.push_back(snippet.get<std::string>());
  }
  std::string report;
  EXPECT_EQ(compare_with_jinja2(snippets, cases, &report), static_cast<int>(cases.size())) << report;
}

// Random templates from a small grammar (text with spaces, tabs and newlines; output, if, for,
// set and comment tags with random `-`/`+` whitespace modifiers; expressions from a pool),
// rendered by both: whitespace control and scoping in combinations no real template has.
TEST(JinjaVsJinja2, RandomTemplates) {
  REQUIRE_JINJA2();
  std::mt19937 rng(7);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  const std::vector<std::string> texts = {"a", " ", "  ", "\n", "\t", " \n  ", "\n\n", "x y", "\n  \t", "é"};
  const std::vector<std::string> exprs = {"n", "s", "l|length", "x", "loop.index", "m.role", "s|trim", "n + 1",
                                          "'q' ~ n", "l[0]", "s[1:]", "v", "ns.c", "l|join(',')", "m"};
  const std::vector<std::string> conds = {"n", "not n", "s", "x is defined", "n > 3", "loop.first", "m is mapping", "v"};
  auto open_mod = [&]() { return pick({"", "", "-", "+"}); };
  auto close_mod = [&]() { return pick({"", "", "-", "+"}); };
  std::function<std::string(int)> gen = [&](int depth) {
    std::string out;
    const int items = std::uniform_int_distribution<int>(1, 5)(rng);
    for (int i = 0; i < items; ++i) {
      switch (rng() % (depth < 3 ? 7 : 4)) {
        case 0: out += pick(texts); break;
        case 1: out += "{{" + pick({"", "-"}) + " " + pick(exprs) + " " + pick({"", "-"}) + "}}"; break;
        case 2: out += "{#" + pick({"", "-"}) + " c " + pick({"", "-"}) + "#}"; break;
        case 3:
          out += "{%" + open_mod() + " set v = " + pick(exprs) + " " + pick({"", "-"}) + "%}";
          break;
        case 4:
          out += "{%" + open_mod() + " if " + pick(conds) + " " + close_mod() + "%}" + gen(depth + 1);
          if (rng() % 2) out += "{%" + open_mod() + " else " + close_mod() + "%}" + gen(depth + 1);
          out += "{%" + open_mod() + " endif " + close_mod() + "%}";
          break;
        case 5:
          out += "{%" + open_mod() + " for m in messages " + close_mod() + "%}" + gen(depth + 1) + "{% set ns.c = ns.c + 1 %}" +
                 "{%" + open_mod() + " endfor " + close_mod() + "%}";
          break;
        default: out += pick(texts) + "{%" + open_mod() + " if n %}" + gen(depth + 1) + "{% endif " + close_mod() + "%}" + pick(texts);
      }
    }
    return out;
  };
  const ordered_json ctx = {{"n", 5}, {"s", " hi "}, {"l", {1, 2}}, {"messages", {{{"role", "user"}}, {{"role", "assistant"}}}}};
  std::vector<std::string> templates;
  std::vector<Case> cases;
  const char* count_env = std::getenv("SFT_JINJA_RANDOM_TEMPLATES");  // default 400
  const int count = count_env ? std::atoi(count_env) : 400;
  for (int k = 0; k < count; ++k) {
    const std::string t = "{% set ns = namespace(c=0) %}" + gen(0);
    cases.push_back(Case{"random template " + std::to_string(k) + ": " + ordered_json(t).dump(), templates.size(), ctx});
    templates.push_back(t);
  }
  std::string report;
  EXPECT_EQ(compare_with_jinja2(templates, cases, &report), static_cast<int>(cases.size())) << report;
}

struct Corpus {
  std::vector<std::string> names, templates;
  ordered_json manifest, conversations;
};

Corpus load_corpus() {
  Corpus c;
  c.manifest = ordered_json::parse(read_file(kFixtures / "manifest.json"));
  c.conversations = ordered_json::parse(read_file(kFixtures / "conversations.json"));
  for (const auto& m : c.manifest) {
    c.names.push_back(m["file"].get<std::string>());
    c.templates.push_back(read_file(kFixtures / "templates" / m["file"].get<std::string>()));
  }
  return c;
}

// HF's apply_chat_template variables: messages, tools, documents, add_generation_prompt and the
// special tokens.
ordered_json chat_context(const ordered_json& manifest_entry, const ordered_json& conv, bool add_generation_prompt) {
  return {{"messages", conv["messages"]},
          {"tools", conv.contains("tools") ? conv["tools"] : ordered_json(nullptr)},
          {"documents", nullptr},
          {"add_generation_prompt", add_generation_prompt},
          {"bos_token", manifest_entry["bos_token"]},
          {"eos_token", manifest_entry["eos_token"]}};
}

// Per template: how many cases agree with Jinja2; fails listing the disagreements.
void check_corpus(const Corpus& corpus, const ordered_json& conversations, const std::string& what) {
  std::vector<Case> cases;
  for (size_t t = 0; t < corpus.templates.size(); ++t)
    for (const auto& conv : conversations)
      for (bool agp : {false, true})
        cases.push_back(Case{corpus.names[t] + " / " + conv["name"].get<std::string>() + " / add_generation_prompt=" +
                                 (agp ? "true" : "false"),
                             t, chat_context(corpus.manifest[t], conv, agp)});
  std::string report;
  const int agree = compare_with_jinja2(corpus.templates, cases, &report);
  std::string version = run(jinja_python() + " " + kRoot + "/tests/data/jinja_reference.py --version").out;
  while (!version.empty() && version.back() == '\n') version.pop_back();
  std::cout << "[ " << what << " ] " << agree << "/" << cases.size() << " renders equal to Jinja2 " << version << " over "
            << corpus.templates.size() << " templates x " << conversations.size() << " conversations x 2\n";
  EXPECT_EQ(agree, static_cast<int>(cases.size())) << report;
}

TEST(JinjaVsJinja2, RealTemplates) {
  REQUIRE_JINJA2();
  const Corpus corpus = load_corpus();
  ASSERT_GE(corpus.templates.size(), 20u);
  check_corpus(corpus, corpus.conversations, "corpus");
}

// Random conversations (roles, lengths, unicode, whitespace, Jinja-looking text, tools) over
// every template.
TEST(JinjaVsJinja2, RandomConversations) {
  REQUIRE_JINJA2();
  const Corpus corpus = load_corpus();
  std::mt19937 rng(1234);
  const std::vector<std::string> pieces = {"hello", " ", "\n", "\t", "é", "你好", "🦙", "{{ x }}", "{% if %}", "'", "\"",
                                           "\\", "</s>", "<|im_end|>", "  ", "\r\n", "0", "word", "[INST]", "-"};
  auto text = [&](int max_pieces) {
    std::string s;
    const int n = std::uniform_int_distribution<int>(0, max_pieces)(rng);
    for (int i = 0; i < n; ++i) s += pieces[std::uniform_int_distribution<size_t>(0, pieces.size() - 1)(rng)];
    return s;
  };
  const ordered_json tools = corpus.conversations.back()["tools"];
  ordered_json convs = ordered_json::array();
  for (int k = 0; k < 24; ++k) {
    ordered_json msgs = ordered_json::array();
    if (rng() % 3 == 0) msgs.push_back({{"role", "system"}, {"content", text(6)}});
    const int turns = std::uniform_int_distribution<int>(1, 6)(rng);
    for (int t = 0; t < turns; ++t) msgs.push_back({{"role", t % 2 ? "assistant" : "user"}, {"content", text(8)}});
    ordered_json conv = {{"name", "random " + std::to_string(k)}, {"messages", msgs}};
    if (rng() % 4 == 0) conv["tools"] = tools;
    convs.push_back(conv);
  }
  check_corpus(corpus, convs, "random");
}

// ---- fuzz: mutated templates never crash the interpreter ----

TEST(Jinja, FuzzMutatedTemplates) {
  const Corpus corpus = load_corpus();
  const ordered_json conv = corpus.conversations[6];
  std::mt19937 rng(99);
  const std::vector<std::string> inserts = {"{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "|", "if ",
                                            "endif", "for ", "endfor", "'", "\"", ".", ",", "not ", " is ", "~", "**",
                                            "{% endfor %}", "{% else %}", "\\", "9999999999999999999", ":", "=", "\xff", "0", "a", " "};
  // SFT_JINJA_FUZZ_ITERS scales the run (e.g. 5000 under the sanitizer build).
  const char* iters_env = std::getenv("SFT_JINJA_FUZZ_ITERS");
  const int iters = iters_env ? std::atoi(iters_env) : 120;
  int rendered = 0, rejected = 0;
  for (size_t t = 0; t < corpus.templates.size(); ++t) {
    for (int k = 0; k < iters; ++k) {
      std::string src = corpus.templates[t];
      const int edits = std::uniform_int_distribution<int>(1, k % 4 == 0 ? 4 : 1)(rng);
      for (int e = 0; e < edits && !src.empty(); ++e) {
        const size_t at = std::uniform_int_distribution<size_t>(0, src.size() - 1)(rng);
        switch (rng() % 3) {
          case 0: src.erase(at, std::uniform_int_distribution<size_t>(1, 3)(rng)); break;
          case 1: src.insert(at, inserts[rng() % inserts.size()]); break;
          default: src.insert(at, src.substr(std::uniform_int_distribution<size_t>(0, src.size() - 1)(rng), 30));
        }
      }
      try {
        sft::jinja::RenderOptions opts;
        opts.now = kNow;
        sft::jinja::Template(src).render(context_of(chat_context(corpus.manifest[t], conv, k % 2 == 0)), opts);
        ++rendered;
      } catch (const sft::Error&) {
        ++rejected;
      }
    }
  }
  std::cout << "[ fuzz ] " << rendered << " mutated templates rendered, " << rejected << " rejected with sft::Error\n";
  EXPECT_GT(rejected, 0);
}

}  // namespace
