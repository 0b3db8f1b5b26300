#!/usr/bin/env python3
"""The reference of tests/data/test_jinja_hf.cpp and test_template_ids.cpp: HF transformers itself
(.venv-template, scripts/setup_template_venv.sh), not a copy of its Jinja set-up.

Usage: hf_apply_chat_template.py REQUEST.json  -> prints a JSON list, one entry per case.
REQUEST: {"now": optional unix_seconds, "templates": [source, ...], "tokenizer": optional dir with a
tokenizer.json, "cases": [{"template": i, "messages": [...], "tools": [...] or null,
"add_generation_prompt": bool, "bos_token": str, "eos_token": str}],
"encode": optional [{"text": str, "add_special_tokens": bool, "tokenizer": optional dir}, ...]}
Each case gives {"text": tokenizer.apply_chat_template(messages, tools=..., tokenize=False,
add_generation_prompt=...), "generation": [[begin, end], ...] (UTF-8 byte offsets of the
{% generation %} blocks, from HF's render_jinja_template(return_assistant_tokens_mask=True)),
and, with "tokenizer", "input_ids" and "assistant_masks" of apply_chat_template(tokenize=True,
return_dict=True, return_assistant_tokens_mask=True) when the template has generation blocks},
or {"error": str}. With "encode": the result is {"cases": [...], "encoded": [ids, ...]}, each
tokenizer(text, add_special_tokens=...).input_ids of the tokenizer.json of the entry's (else the
request's) "tokenizer" directory.
Without a "tokenizer" the tokenizer is a one-token WordLevel model (rendering never looks at the
vocabulary); the template's bos/eos tokens are set on it as special tokens, as a model's
tokenizer_config.json sets them. strftime_now() sees the request's fixed time (local time) when
it gives one, else the current time, as sft's ModelChatTemplate::render.
`--version` prints the transformers version.
"""
import json
import os
import re
import sys
from datetime import datetime

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import chat_template_utils  # noqa: E402


def fix_time(now):
    class FixedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(now, tz)

    chat_template_utils.datetime = FixedDatetime  # strftime_now reads the module's datetime at call time


def make_tokenizer(tokenizer_dir, bos, eos):
    if tokenizer_dir:
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tokenizer_dir, "tokenizer.json"))
    else:
        from tokenizers import Tokenizer, models

        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tok.bos_token = bos
    tok.eos_token = eos
    return tok


def byte_spans(text, spans):
    return [[len(text[:b].encode("utf-8")), len(text[:e].encode("utf-8"))] for b, e in spans]


def main():
    if sys.argv[1:] == ["--version"]:
        print(transformers.__version__)
        return
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    if "now" in request:
        fix_time(request["now"])
    tokenizer_dir = request.get("tokenizer")
    tokenizers = {}
    results = []
    for case in request["cases"]:
        key = (case["bos_token"], case["eos_token"])
        if key not in tokenizers:
            tokenizers[key] = make_tokenizer(tokenizer_dir, *key)
        tok = tokenizers[key]
        source = request["templates"][case["template"]]
        tools = case.get("tools")
        agp = case["add_generation_prompt"]
        try:
            text = tok.apply_chat_template(case["messages"], tools=tools, chat_template=source, tokenize=False,
                                           add_generation_prompt=agp)
            out = {"text": text, "generation": []}
            if re.search(r"\{\%-?\s*generation\s*-?\%\}", source):
                template_kwargs = dict(tok.special_tokens_map)
                rendered, spans = chat_template_utils.render_jinja_template(
                    conversations=[case["messages"]], tools=tools, chat_template=source,
                    return_assistant_tokens_mask=True, add_generation_prompt=agp, **template_kwargs)
                out["generation"] = byte_spans(rendered[0], spans[0])
                out["generation_text_equal"] = rendered[0] == text
                if tokenizer_dir:
                    enc = tok.apply_chat_template(case["messages"], tools=tools, chat_template=source, tokenize=True,
                                                  return_dict=True, return_assistant_tokens_mask=True,
                                                  add_generation_prompt=agp)
                    out["input_ids"] = list(enc["input_ids"])
                    out["assistant_masks"] = list(enc["assistant_masks"])
            results.append(out)
        except Exception as e:  # the template raised (raise_exception) or HF refused the input
            results.append({"error": f"{type(e).__name__}: {e}"})
    if "encode" in request:
        encoded, loaded = [], {}
        for e in request["encode"]:
            path = os.path.join(e.get("tokenizer", tokenizer_dir), "tokenizer.json")
            if path not in loaded:
                loaded[path] = PreTrainedTokenizerFast(tokenizer_file=path)
            encoded.append(loaded[path](e["text"], add_special_tokens=e["add_special_tokens"])["input_ids"])
        json.dump({"cases": results, "encoded": encoded}, sys.stdout, ensure_ascii=False)
    else:
        json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
