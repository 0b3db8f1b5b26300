// `sft data stats|preview|dump|validate`: look at a data file the way `sft train` will see it
// (same reader, template, tokenizer, truncation). stats: counts, lengths, label share, padding
// waste vs packing; preview: samples with trained tokens in colour (TTY) or between « »; dump:
// JSONL of ids and unshifted labels per input sample; validate: every bad sample, exit status 1.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/check.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "core/file_hash.h"
#include "tokenizer/tokenizer.h"
#include "train/memory_check.h"

namespace sft {

namespace {

struct DataArgs {
  std::string action, data_path, tokenizer, model_name_or_path, conversation_template = "vicuna_v1.1";
  std::string data_format = "auto", tokenizer_kind = "auto", strict = "False", packing = "True", lazy = "False";
  std::string index = "0", output, color = "auto";
  int64_t model_max_length = 512, batch_size = 8, num_samples = 0, threads = 0, seed = 42;
};

bool parse_bool(const std::string& flag, const std::string& v) {
  if (v == "True" || v == "true" || v == "1") return true;
  if (v == "False" || v == "false" || v == "0") return false;
  fail("data", "{} expects True or False, got '{}'", flag, v);
}

// "3", "0,5,9", "10-19" (file indices).
std::vector<int64_t> parse_indices(const std::string& spec) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string part = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    try {
      size_t dash = part.find('-');
      if (dash == std::string::npos) {
        out.push_back(std::stoll(part));
      } else {
        for (int64_t i = std::stoll(part.substr(0, dash)), e = std::stoll(part.substr(dash + 1)); i <= e; ++i)
          out.push_back(i);
      }
    } catch (const std::exception&) {
      fail("data", "--index: '{}' is not an index or a range like 3-7", part);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return v < 0 ? "-" + out : out;
}

template <typename... Args>
void append_line(std::string& out, fmt::format_string<Args...> f, Args&&... args) {
  out += fmt::format(f, std::forward<Args>(args)...);
  out += '\n';
}

double pct(int64_t a, int64_t b) { return b ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0; }

void print_stats(const Dataset& ds, const Tokenizer& tok, const DataArgs& a) {
  const DataStats& st = ds.stats();
  std::vector<int64_t> lens(static_cast<size_t>(ds.size()));
  for (int64_t i = 0; i < ds.size(); ++i) lens[i] = ds.length(i);
  std::vector<int64_t> sorted = lens;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  append_line(out, "file        {} ({}, {}, {} bytes, XXH3 {})", ds.path(), data_format_name(ds.format()),
       st.json_lines ? "JSON Lines" : "JSON array", with_commas(st.bytes), xxh3_hex(st.xxh3));
  append_line(out, "memory      {} for the tokenized data (estimated before loading: {}, and {} while loading)",
       human_bytes(st.memory_bytes), human_bytes(st.estimated_bytes), human_bytes(st.estimated_peak_bytes));
  append_line(out, "template    {}   tokenizer {} ({} ids)   model_max_length {}", ds.template_description(), a.tokenizer,
       with_commas(tok.vocab_size()), ds.model_max_length());
  append_line(out, "samples     {} in the file: {} kept, {} invalid, {} dropped (no trainable token)", with_commas(st.samples),
       with_commas(st.kept), with_commas(st.invalid), with_commas(st.dropped));
  append_line(out, "truncated   {} kept samples cut to {} tokens (longest sample: {} tokens)", with_commas(st.truncated),
       ds.model_max_length(), with_commas(st.longest));
  if (st.leading_assistant_dropped)
    append_line(out, "repaired    {} samples started with an assistant turn, which was dropped (as FastChat)",
         with_commas(st.leading_assistant_dropped));
  if (!sorted.empty()) {
    append_line(out, "tokens      {} (per sample: mean {:.1f}, min {}, median {}, max {}); trainable {} ({:.1f}%)",
         with_commas(st.tokens), static_cast<double>(st.tokens) / static_cast<double>(sorted.size()), sorted.front(),
         sorted[sorted.size() / 2], sorted.back(), with_commas(st.trainable_tokens), pct(st.trainable_tokens, st.tokens));
    // Length histogram in power-of-two buckets.
    std::map<int, int64_t> hist;
    for (int64_t l : lens) hist[l <= 1 ? 0 : 64 - __builtin_clzll(static_cast<uint64_t>(l - 1))]++;
    int64_t most = 0;
    for (auto& [b, n] : hist) most = std::max(most, n);
    append_line(out, "lengths     (tokens after truncation)");
    for (int b = hist.begin()->first; b <= hist.rbegin()->first; ++b) {
      const int64_t n = hist.count(b) ? hist[b] : 0;
      const int64_t lo = b == 0 ? 0 : (int64_t{1} << (b - 1)) + 1, hi = int64_t{1} << b;
      append_line(out, "  {:>6} - {:<6} {:>9}  {}", lo, hi, with_commas(n), std::string(static_cast<size_t>(40 * n / most), '#'));
    }
    // Token slots filled by real tokens under FastChat padding, per-batch padding and packing.
    const int64_t L = ds.model_max_length();
    LoaderOptions lo;
    lo.max_length = L;
    lo.seed = static_cast<uint64_t>(a.seed);
    lo.packing = false;
    int64_t padded_slots = 0;
    const auto rows = plan_epoch(ds, lo, 0);
    for (size_t r = 0; r < rows.size(); r += static_cast<size_t>(a.batch_size)) {
      int64_t longest = 0, n = 0;
      for (size_t k = r; k < std::min(rows.size(), r + static_cast<size_t>(a.batch_size)); ++k, ++n)
        longest = std::max(longest, ds.length(rows[k][0]));
      padded_slots += n * longest;
    }
    lo.packing = true;
    const int64_t packed_rows = static_cast<int64_t>(plan_epoch(ds, lo, 0).size());
    append_line(out, "efficiency  share of token slots that hold sample tokens, at {} tokens per row:", L);
    const auto row = [&](const std::string& label, int64_t slots, int64_t n_rows) {
      append_line(out, "  {:<50} {:5.1f}%{}", label, pct(st.tokens, slots),
                  n_rows ? fmt::format("  ({} rows)", with_commas(n_rows)) : "");
    };
    row(fmt::format("FastChat padding (every sample padded to {}):", L), ds.size() * L, ds.size());
    row(fmt::format("padding to the longest of each batch of {}:", a.batch_size), padded_slots, 0);
    row(fmt::format("packing (default; best-fit rows of {} tokens):", L), packed_rows * L, packed_rows);
  }
  std::map<IssueKind, std::pair<int64_t, int64_t>> by_kind;  // count, first index
  for (const SampleIssue& i : ds.issues()) {
    auto [it, fresh] = by_kind.try_emplace(i.kind, 0, i.index);
    ++it->second.first;
  }
  if (!by_kind.empty()) append_line(out, "skipped     by reason (sft data validate lists every one):");
  for (const auto& [kind, v] : by_kind)
    append_line(out, "  {:<28} {:>9}  (first: sample {})", issue_kind_name(kind), with_commas(v.first), v.second);
  const double secs = std::max(st.seconds, 1e-9);
  append_line(out, "time        {:.2f} s: {:.0f} samples/s, {:.1f} MB/s on {} threads", st.seconds,
              static_cast<double>(st.samples) / secs, static_cast<double>(st.bytes) / 1e6 / secs, omp_get_max_threads());
  std::fputs(out.c_str(), stdout);
}

void print_preview(const Dataset& ds, const Tokenizer& tok, const DataArgs& a) {
  const bool color = a.color == "always" || (a.color == "auto" && isatty(fileno(stdout)));
  const std::string on = color ? "\x1b[1;32m" : "«", off = color ? "\x1b[0m" : "»";
  std::vector<int64_t> wanted;
  if (a.num_samples > 0) {
    for (int64_t i = 0; i < a.num_samples && i < ds.stats().samples; ++i) wanted.push_back(i);
  } else {
    wanted = parse_indices(a.index);
  }
  std::map<int64_t, int64_t> row_of;
  for (int64_t r = 0; r < ds.size(); ++r) row_of[ds.source_index(r)] = r;
  std::map<int64_t, const SampleIssue*> issue_of;
  for (const SampleIssue& i : ds.issues()) issue_of[i.index] = &i;
  std::string out = fmt::format("template {}; trained tokens are shown {}\n", ds.template_description(),
                                color ? "in green" : "between « and »");
  for (int64_t index : wanted) {
    if (index < 0 || index >= ds.stats().samples) fail("data", "--index {}: the file has {} samples", index, ds.stats().samples);
    out += fmt::format("\n=== sample {}", index);
    if (issue_of.count(index)) {
      out += fmt::format(": skipped: {}\n", describe_issue(ds.path(), *issue_of[index]));
      continue;
    }
    const int64_t r = row_of.at(index);
    const auto ids = ds.ids(r);
    const auto train = ds.train(r);
    int64_t n_train = 0;
    for (uint8_t t : train) n_train += t;
    out += fmt::format(": {} tokens, {} trained ({:.1f}%){} ===\n", ids.size(), n_train,
                       pct(n_train, static_cast<int64_t>(ids.size())),
                       ds.full_length(r) > static_cast<int64_t>(ids.size())
                           ? fmt::format(", truncated from {}", ds.full_length(r)) : "");
    // Text of each run of equally labelled tokens: the growth of the decoded prefix (after a
    // leading BOS, which HF's decode would join with a space), so spaces that SentencePiece
    // attaches to the next token show where they are.
    std::string prev;
    size_t first = 0;
    if (!ids.empty() && ids[0] == tok.bos_id()) {
      out += train[0] ? on + tok.id_to_token(ids[0]) + off : tok.id_to_token(ids[0]);
      first = 1;
    }
    for (size_t b = first; b < ids.size();) {
      size_t e = b;
      while (e < ids.size() && train[e] == train[b]) ++e;
      const std::string upto = tok.decode(ids.subspan(first, e - first));
      const std::string piece = upto.starts_with(prev) ? upto.substr(prev.size()) : tok.decode(ids.subspan(b, e - b));
      out += train[b] ? on + piece + off : piece;
      prev = upto;
      b = e;
    }
    out += "\n";
  }
  std::fputs(out.c_str(), stdout);
}

int write_dump(const Dataset& ds, const DataArgs& a) {
  std::FILE* f = a.output.empty() || a.output == "-" ? stdout : std::fopen(a.output.c_str(), "wb");
  if (!f) fail("data", "{}: cannot open for writing", a.output);
  std::string buf;
  size_t next_issue = 0;
  const auto& issues = ds.issues();
  const auto flush_issues_before = [&](int64_t index) {
    for (; next_issue < issues.size() && issues[next_issue].index < index; ++next_issue) {
      const SampleIssue& i = issues[next_issue];
      buf += nlohmann::json{{"index", i.index}, {"dropped", std::string(issue_kind_name(i.kind)) + ": " + i.detail}}.dump() + "\n";
    }
  };
  for (int64_t r = 0; r <= ds.size(); ++r) {
    flush_issues_before(r < ds.size() ? ds.source_index(r) : INT64_MAX);
    if (r == ds.size()) break;
    fmt::format_to(std::back_inserter(buf), "{{\"index\": {}, \"input_ids\": [{}], \"labels\": [{}]}}\n",
                   ds.source_index(r), fmt::join(ds.ids(r), ", "), fmt::join(ds.labels(r), ", "));
    if (buf.size() > (1 << 22)) std::fwrite(buf.data(), 1, buf.size(), f), buf.clear();
  }
  std::fwrite(buf.data(), 1, buf.size(), f);
  const bool ok = std::fflush(f) == 0 && (f == stdout || std::fclose(f) == 0);
  if (!ok) fail("data", "{}: write failed", a.output.empty() ? "stdout" : a.output);
  return 0;
}

int print_validate(const Dataset& ds) {
  std::string out;
  for (const SampleIssue& i : ds.issues()) out += describe_issue(ds.path(), i) + "\n";
  const DataStats& st = ds.stats();
  out += fmt::format("{}: {} samples, {} valid, {} invalid, {} without a trainable token after truncation to {}\n",
                     ds.path(), st.samples, st.kept, st.invalid, st.dropped, ds.model_max_length());
  std::fputs(out.c_str(), stdout);
  return ds.issues().empty() ? 0 : 1;
}

}  // namespace

int run_data(int argc, char** argv) {
  CLI::App app{"sft data: inspect a chat data file as `sft train` sees it", "sft data"};
  DataArgs a;
  app.add_option("action", a.action, "stats | preview | dump | validate")
      ->required()
      ->check(CLI::IsMember({"stats", "preview", "dump", "validate"}));
  app.add_option("--data_path", a.data_path, "ShareGPT JSON/JSONL, OpenAI messages or Alpaca file")->required();
  auto* tok_opt = app.add_option("--tokenizer", a.tokenizer, "model directory with tokenizer.model and/or tokenizer.json");
  auto* model_opt = app.add_option("--model_name_or_path", a.model_name_or_path, "same as --tokenizer (a model directory)");
  const std::vector<std::string_view> builtin = template_names();
  std::vector<std::string> names(builtin.begin(), builtin.end());
  names.push_back("auto");
  app.add_option("--conversation_template", a.conversation_template,
                 "chat template: a built-in one, or auto (the model's own chat_template)")
      ->capture_default_str()
      ->check(CLI::IsMember(names));
  app.add_option("--model_max_length", a.model_max_length, "tokens per sample (longer ones are truncated)")
      ->capture_default_str();
  app.add_option("--data_format", a.data_format, "auto | sharegpt | messages | alpaca")->capture_default_str();
  app.add_option("--tokenizer_kind", a.tokenizer_kind, "auto (tokenizer.model first) | sentencepiece | json")
      ->capture_default_str();
  app.add_option("--strict_data", a.strict, "stop at the first bad sample (True | False)")->capture_default_str();
  app.add_option("--packing", a.packing, "accepted as in sft train; stats shows padding and packing")->capture_default_str();
  app.add_option("--lazy_preprocess", a.lazy, "accepted for FastChat compatibility; no effect")->capture_default_str();
  app.add_option("--per_device_train_batch_size", a.batch_size, "stats: batch size for the padding estimate")
      ->capture_default_str();
  app.add_option("--seed", a.seed, "stats: shuffle seed for the padding estimate")->capture_default_str();
  app.add_option("--index", a.index, "preview: sample indices, e.g. 0,5,9 or 10-19")->capture_default_str();
  app.add_option("--num_samples", a.num_samples, "preview: the first N samples (instead of --index)");
  app.add_option("--output", a.output, "dump: output file (default stdout)");
  app.add_option("--color", a.color, "preview: auto | always | never")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "always", "never"}));
  app.add_option("--threads", a.threads, "tokenizer threads (default: all cores)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (tok_opt->count() == 0) a.tokenizer = a.model_name_or_path;
  if (a.tokenizer.empty() || (tok_opt->count() && model_opt->count() && a.tokenizer != a.model_name_or_path))
    fail("data", "give the tokenizer's model directory with --tokenizer DIR (or --model_name_or_path DIR)");
  parse_bool("--packing", a.packing);
  parse_bool("--lazy_preprocess", a.lazy);
  SFT_CHECK(a.batch_size >= 1, "data", "--per_device_train_batch_size must be at least 1");
  if (a.threads > 0) omp_set_num_threads(static_cast<int>(a.threads));
  auto tok = load_tokenizer(a.tokenizer, parse_tokenizer_kind(a.tokenizer_kind));
  DataOptions opt;
  opt.conversation_template = a.conversation_template;
  opt.model_dir = a.tokenizer;  // the model directory: its chat template for "auto"
  opt.model_max_length = a.model_max_length;
  opt.format = parse_data_format(a.data_format);
  opt.strict = parse_bool("--strict_data", a.strict);
  opt.memory_budget = available_memory_bytes();  // checked before the bulk of the file is read
  if (opt.memory_budget >= 0) opt.memory_budget_note = fmt::format("free memory {}", human_bytes(opt.memory_budget));
  const Dataset ds = load_dataset(a.data_path, *tok, opt);
  if (a.action == "stats") print_stats(ds, *tok, a);
  else if (a.action == "preview") print_preview(ds, *tok, a);
  else if (a.action == "dump") return write_dump(ds, a);
  else return print_validate(ds);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace sft
