#!/usr/bin/env python3
"""FastChat's own data code as the reference for sft's data side (tests/data).

Runs fschat==0.2.36 (installed without its serving extras) with HF's slow LlamaTokenizer:
  preprocess  fastchat.train.train.preprocess() on each sample of a file (vicuna_v1.1), with the
              mismatch warning captured; writes JSONL {index, rendered, input_ids, labels,
              mismatch, error} with FastChat's padding stripped.
  render      fastchat.conversation get_prompt() of each sample under several templates, with
              the template's system message and with a sample-specific one; writes JSONL.
  bench       times json.load + preprocess() over the first N samples in one call, as FastChat's
              SupervisedDataset does, and prints samples/s and MB/s (MB pro rata of file bytes).
Alpaca files become conversations as fastchat/data/convert_alpaca.py does.
"""
import argparse
import json
import sys
import time


def load_samples(path, fmt):
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    data = json.loads(text)
    if fmt == "alpaca":  # fastchat/data/convert_alpaca.py
        out = []
        for i, c in enumerate(data):
            if len(c["input"].strip()) > 1:
                q, a = c["instruction"] + "\nInput:\n" + c["input"], c["output"]
            else:
                q, a = c["instruction"], c["output"]
            out.append({"id": f"alpaca_{i}",
                        "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        data = out
    return data, len(text.encode("utf-8"))


def load_tokenizer(tokenizer_dir, model_max_length):
    import transformers
    # As fastchat/train/train.py: use_fast=False, right padding, pad = unk.
    tok = transformers.AutoTokenizer.from_pretrained(
        tokenizer_dir, model_max_length=model_max_length, padding_side="right", use_fast=False)
    tok.pad_token = tok.unk_token
    return tok


def rendered_vicuna(source):
    """The string preprocess() tokenizes (its steps 1-3), for the decode check."""
    from fastchat.model.model_adapter import get_conversation_template
    conv = get_conversation_template("vicuna")
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    if roles[source[0]["from"]] != conv.roles[0]:
        source = source[1:]
    conv.messages = []
    for j, sentence in enumerate(source):
        role = roles[sentence["from"]]
        assert role == conv.roles[j % 2]
        conv.append_message(role, sentence["value"])
    return conv.get_prompt()


def cmd_preprocess(args):
    import fastchat.train.train as fc
    tok = load_tokenizer(args.tokenizer, args.model_max_length)
    warnings = []
    fc.rank0_print = lambda *a: warnings.append(" ".join(str(x) for x in a))
    data, _ = load_samples(args.data, args.format)
    with open(args.out, "w", encoding="utf-8") as out:
        for i, sample in enumerate(data):
            rec = {"index": i}
            warnings.clear()
            try:
                res = fc.preprocess([sample["conversations"]], tok)
                rendered = rendered_vicuna(sample["conversations"])
                n = min(len(tok(rendered).input_ids), args.model_max_length)  # strip FastChat's padding
                rec["rendered"] = rendered
                rec["input_ids"] = res["input_ids"][0][:n].tolist()
                rec["labels"] = res["labels"][0][:n].tolist()
                rec["mismatch"] = any("tokenization mismatch" in w for w in warnings)
            except Exception as e:  # FastChat aborts on these (KeyError, AssertionError, IndexError)
                rec["error"] = f"{type(e).__name__}: {e}"
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(json.dumps({"legacy": tok.legacy, "samples": len(data)}))


# sft's template name -> FastChat's registered template with the same fields.
RENDER_TEMPLATES = {"vicuna_v1.1": "vicuna_v1.1", "alpaca": "alpaca", "llama-2": "llama-2",
                    "mistral": "mistral", "zephyr": "zephyr", "chatml": "qwen-7b-chat"}


def cmd_render(args):
    from fastchat.conversation import get_conv_template
    data, _ = load_samples(args.data, args.format)
    with open(args.out, "w", encoding="utf-8") as out:
        for name, fc_name in RENDER_TEMPLATES.items():
            for i, sample in enumerate(data):
                for system in (None, f"You are test system {i}.\nBe brief."):
                    conv = get_conv_template(fc_name)
                    if system is not None:
                        conv.set_system_message(system)
                    for j, m in enumerate(sample["conversations"]):
                        conv.append_message(conv.roles[j % 2], m["value"])
                    out.write(json.dumps({"template": name, "index": i, "system": system,
                                          "text": conv.get_prompt()}, ensure_ascii=False) + "\n")


def cmd_bench(args):
    import fastchat.train.train as fc
    tok = load_tokenizer(args.tokenizer, args.model_max_length)
    fc.rank0_print = lambda *a: None
    t0 = time.perf_counter()
    data, nbytes = load_samples(args.data, args.format)
    t_load = time.perf_counter() - t0
    n = min(args.max_samples, len(data))
    sources = [s["conversations"] for s in data[:n]]
    t0 = time.perf_counter()
    fc.preprocess(sources, tok)
    t_pre = time.perf_counter() - t0
    mb = nbytes / 1e6 * n / len(data)
    secs = t_load * n / len(data) + t_pre
    print(json.dumps({"samples": n, "file_samples": len(data), "mb": mb, "load_s_full_file": t_load,
                      "preprocess_s": t_pre, "samples_per_s": n / secs, "mb_per_s": mb / secs}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["preprocess", "render", "bench"])
    p.add_argument("--data", required=True)
    p.add_argument("--format", choices=["sharegpt", "alpaca"], default="sharegpt")
    p.add_argument("--tokenizer")
    p.add_argument("--model_max_length", type=int, default=4096)
    p.add_argument("--max_samples", type=int, default=2000)
    p.add_argument("--out")
    args = p.parse_args()
    {"preprocess": cmd_preprocess, "render": cmd_render, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
