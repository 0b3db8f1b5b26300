#!/usr/bin/env python3
"""Renders chat templates with the real Jinja2, set up the way HF transformers'
apply_chat_template sets it up (utils/chat_template_utils.py, _compile_jinja_template): an
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols extension, a
{% generation %} tag that records the rendered span, tojson as json.dumps(ensure_ascii=False,
indent, separators, sort_keys), and the raise_exception / strftime_now globals. strftime_now
formats the fixed time given in the request, so both sides render the same date.

Usage: jinja_reference.py REQUEST.json  -> prints a JSON list, one entry per case:
  {"text": str, "generation": [[begin, end], ...] (UTF-8 byte offsets)} or {"error": str}
REQUEST: {"now": unix_seconds, "templates": [source, ...], "cases": [{"template": i, "context": {...}}]}
`--version` prints the Jinja2 version.
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTracker(Extension):
    """HF's AssistantTracker: {% generation %}body{% endgeneration %} renders body and records
    where it landed in the output (start = length of everything rendered before it)."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self.blocks = None
        self.spans = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation", []), [], [], body).set_lineno(lineno)

    def _generation(self, caller):
        rv = caller()
        if self.blocks is not None:
            start = len("".join(self.blocks))
            self.spans.append((start, start + len(rv)))
        return rv


def make_env(now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.fromtimestamp(now).strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def byte_offset(text, char_index):
    return len(text[:char_index].encode("utf-8"))


def render(env, compiled, context):
    tracker = env.extensions[GenerationTracker.identifier]
    blocks, spans = [], []
    tracker.blocks, tracker.spans = blocks, spans
    try:
        for block in compiled.generate(**context):
            blocks.append(block)
    finally:
        tracker.blocks = tracker.spans = None
    text = "".join(blocks)
    return {"text": text, "generation": [[byte_offset(text, b), byte_offset(text, e)] for b, e in spans]}


def main():
    if sys.argv[1:] == ["--version"]:
        print(jinja2.__version__)
        return
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    env = make_env(request.get("now", 0))
    compiled = []
    for source in request["templates"]:
        try:
            compiled.append(env.from_string(source))
        except Exception as e:  # a template Jinja2 itself cannot parse
            compiled.append(e)
    results = []
    for case in request["cases"]:
        t = compiled[case["template"]]
        if isinstance(t, Exception):
            results.append({"error": f"syntax: {t}"})
            continue
        try:
            results.append(render(env, t, case["context"]))
        except Exception as e:
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
