// The Jinja builtins chat templates call: filters (trim, tojson, length, join, map, selectattr,
// ...), tests (defined, none, string, mapping, ...), Python methods on str and dict (strip,
// split, startswith, items, get, ...) and HF's globals (range, namespace, dict,
// raise_exception, strftime_now). An unknown name is an error naming it, never a no-op.
// Reference: Jinja2 "List of Builtin Filters/Tests/Global Functions"; Python str/dict methods.
#pragma once
#include <optional>
#include <string>

#include "data/jinja_eval.h"

namespace sft::jinja {

Value apply_filter(Evaluator& ev, const std::string& name, const Value& input, const CallArgs& args, SourcePos pos);
bool apply_test(Evaluator& ev, const std::string& name, const Value& input, const CallArgs& args, SourcePos pos);
// obj.name(args) for a Python method of str, dict or list; nullopt when `obj` has no such method.
std::optional<Value> call_method(Evaluator& ev, const Value& obj, const std::string& name, const CallArgs& args,
                                 SourcePos pos);
// The global functions, looked up after the context.
Dict make_globals();

}  // namespace sft::jinja
