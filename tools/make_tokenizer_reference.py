#!/usr/bin/env python3
# Reference ids and decoded texts for the C++ tokenizer tests (tests/tokenizer), computed with the
# pinned HF libraries: transformers' slow LlamaTokenizer for tokenizer.model (legacy True/False,
# with added tokens) and HF `tokenizers` for tokenizer.json (LLaMA-2 converted from the slow
# tokenizer, a Metaspace variant, LLaMA-3). Writes tokenizer directories and one JSON per tokenizer.
#
# usage: make_tokenizer_reference.py --out DIR [--llama2 DIR] [--shared DIR]
#   --llama2: a directory with the LLaMA-2 tokenizer.model (default assets/tokenizer/llama2)
#   --shared: ../shared (optional): adds LLaMA-3, real chat data and the tokenizer test vectors.
import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTOR_SEP = "\n__ggml_vocab_test__\n"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def repair_llama3(src_json, dst_dir, pairs):
    """Rebuilds the merges of a byte-level tokenizer.json from its vocab ranks, as transformers'
    TikTokenConverter does for Meta's LLaMA-3 (the shared copy lost its merges in export: 278047 of
    280147 are ["undefined", "undefined"]). pairs: ["a", "b"] merges (tokenizers >= 0.20) instead of
    "a b" strings (all tokenizers 0.19 reads)."""
    j = json.load(open(src_json, encoding="utf-8"))
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_decoder[c] for c in tok): rank for tok, rank in j["model"]["vocab"].items()}
    enc = bytes_to_unicode()
    to_str = lambda b: "".join(enc[x] for x in b)
    merges = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = [(token[:i], token[i:], rank) for i in range(1, len(token))
                 if token[:i] in ranks and token[i:] in ranks]
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    j["model"]["merges"] = [[to_str(a), to_str(b)] if pairs else to_str(a) + " " + to_str(b) for a, b, _ in merges]
    os.makedirs(dst_dir, exist_ok=True)
    json.dump(j, open(os.path.join(dst_dir, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    cfg = os.path.join(os.path.dirname(src_json), "tokenizer_config.json")
    if os.path.exists(cfg):
        shutil.copyfile(cfg, os.path.join(dst_dir, "tokenizer_config.json"))


def fuzz_corpus(n, seed=1234):
    rng = random.Random(seed)
    pool = (list("abcXYZ019 ,.!?'\"-_") + [" ", "  ", "\t", "\n", "\r\n", "▁", "é", "ß", "ж", "中", "文", "ក", "ា", "😀",
            "\u200d", "👍🏽", "\U00020001", "½", "٣", "'s", "'LL", "<s>", "</s>", "<unk>", "<|eot_id|>",
            "<|begin_of_text|>", "<|im_start|>", "<tool>", "xyzzy", "<0x41>", "Hello", " world", "don't"])
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def read_vectors(shared):
    out = []
    d = os.path.join(shared, "data", "tokenizer-vectors")
    for name in ("llama-spm", "llama2-special", "llama-bpe"):
        p = os.path.join(d, name + ".inp")
        if os.path.exists(p):
            out += open(p, encoding="utf-8").read().split(VECTOR_SEP)[:-1]
    return out


def real_texts(shared, limit):
    texts = []
    p = os.path.join(shared, "data", "dummy_conversation.json")
    if os.path.exists(p):
        for s in json.load(open(p, encoding="utf-8")):
            texts += [m["value"] for m in s["conversations"]]
    p = os.path.join(shared, "data", "alpaca_en_demo.json")
    if os.path.exists(p):
        for s in json.load(open(p, encoding="utf-8")):
            texts += [s["instruction"], s["input"], s["output"]]
    return texts[:limit]


def slow_reference(tok, texts):
    return {
        "ids": [tok(t).input_ids for t in texts],
        "ids_plain": [tok(t, add_special_tokens=False).input_ids for t in texts],
        "decoded": [tok.decode(tok(t).input_ids, clean_up_tokenization_spaces=False) for t in texts],
        "decoded_skip": [tok.decode(tok(t).input_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                         for t in texts],
    }


def fast_reference(tok, texts):
    ids = [tok.encode(t, add_special_tokens=True).ids for t in texts]
    return {
        "ids": ids,
        "ids_plain": [tok.encode(t, add_special_tokens=False).ids for t in texts],
        "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids],
        "decoded_skip": [tok.decode(i, skip_special_tokens=True) for i in ids],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama2", default=os.path.join(ROOT, "assets", "tokenizer", "llama2"))
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()

    corpus = json.load(open(os.path.join(ROOT, "tests", "tokenizer", "corpus.json"), encoding="utf-8"))
    texts = corpus + fuzz_corpus(300)
    if args.shared and os.path.isdir(args.shared):
        texts += read_vectors(args.shared) + real_texts(args.shared, 3000)

    stamp_src = hashlib.sha256()
    for p in (__file__, os.path.join(args.llama2, "tokenizer.model")):
        stamp_src.update(open(p, "rb").read())
    stamp_src.update(json.dumps([texts, args.shared is not None]).encode())
    stamp = stamp_src.hexdigest()
    stamp_path = os.path.join(args.out, "stamp")
    # Test processes run in parallel (ctest -j) and each may call this: one builds, the others
    # wait on the lock and then find the stamp up to date.
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    lock = open(os.path.abspath(args.out) + ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print("reference up to date:", args.out)
        return
    from tokenizers import Tokenizer
    from transformers import AddedToken, LlamaTokenizer, LlamaTokenizerFast

    shutil.rmtree(args.out, ignore_errors=True)
    tok_dir = lambda name: os.path.join(args.out, "tok", name)
    results = {}

    def save_config(dst, **changes):
        cfg_path = os.path.join(dst, "tokenizer_config.json")
        cfg = json.load(open(cfg_path))
        cfg.update(changes)
        for k in [k for k, v in changes.items() if v is None]:
            del cfg[k]
        json.dump(cfg, open(cfg_path, "w"), indent=2)

    # --- tokenizer.model: slow LlamaTokenizer ---
    for name, legacy in (("llama2-legacy", True), ("llama2-nonlegacy", False), ("llama2-nolegacykey", None)):
        dst = tok_dir(name)
        shutil.copytree(args.llama2, dst)
        save_config(dst, legacy=legacy)  # None removes the key: HF then defaults to legacy behaviour
    for name, legacy in (("llama2-added", False), ("llama2-added-legacy", True)):
        t = LlamaTokenizer.from_pretrained(args.llama2, legacy=legacy)
        t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        t.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True), AddedToken("xyzzy", single_word=True)])
        t.save_pretrained(tok_dir(name))
    for name in ("llama2-legacy", "llama2-nonlegacy", "llama2-nolegacykey", "llama2-added", "llama2-added-legacy"):
        tok = LlamaTokenizer.from_pretrained(tok_dir(name))
        results[name] = dict(kind="sentencepiece", legacy=tok.legacy, **slow_reference(tok, texts))

    # --- tokenizer.json converted from the slow tokenizer (transformers 4.40 LlamaConverter) ---
    fast = LlamaTokenizerFast.from_pretrained(tok_dir("llama2-legacy"), from_slow=True)
    fast.save_pretrained(tok_dir("llama2-fast"))
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True), AddedToken("xyzzy", single_word=True),
                     AddedToken("Wörld", normalized=True)])
    fast.save_pretrained(tok_dir("llama2-fast-added"))
    # Newer converters (legacy=False) use a Metaspace pre-tokenizer (prepend_scheme "first").
    meta_dir = tok_dir("llama2-fast-metaspace")
    shutil.copytree(tok_dir("llama2-fast"), meta_dir)
    j = json.load(open(os.path.join(meta_dir, "tokenizer.json"), encoding="utf-8"))
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    j["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    json.dump(j, open(os.path.join(meta_dir, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    for name in ("llama2-fast", "llama2-fast-added", "llama2-fast-metaspace"):
        os.remove(os.path.join(tok_dir(name), "tokenizer.model"))  # so that auto picks tokenizer.json
        tok = Tokenizer.from_file(os.path.join(tok_dir(name), "tokenizer.json"))
        results[name] = dict(kind="json", **fast_reference(tok, texts))

    # --- LLaMA-3 tokenizer.json ---
    if args.shared and os.path.isdir(os.path.join(args.shared, "tokenizers", "llama3")):
        src = os.path.join(args.shared, "tokenizers", "llama3", "tokenizer.json")
        try:
            Tokenizer.from_file(src)
            shared_loads = True
        except Exception:
            shared_loads = False
        repair_llama3(src, tok_dir("llama3"), pairs=False)
        tok = Tokenizer.from_file(os.path.join(tok_dir("llama3"), "tokenizer.json"))
        results["llama3"] = dict(kind="json", shared_loads=shared_loads, **fast_reference(tok, texts))
        # The same merges as ["a", "b"] pairs (the newer encoding): C++ must give the same ids.
        repair_llama3(src, tok_dir("llama3-pairs"), pairs=True)
        results["llama3-pairs"] = dict(results["llama3"])

    for name, r in results.items():
        r["dir"] = tok_dir(name)
        r["texts"] = texts
        json.dump(r, open(os.path.join(args.out, name + ".json"), "w", encoding="utf-8"))
    json.dump(sorted(results), open(os.path.join(args.out, "index.json"), "w"))
    open(stamp_path, "w").write(stamp)
    print(f"wrote {len(results)} references x {len(texts)} texts to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
