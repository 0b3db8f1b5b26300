#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) from the shipped assets
and test fixtures, cut to small files; run once when a format changes (the output is committed).
The seeds that need a real save (hf_index, checkpoint) come from the targets themselves:
scripts/fuzz.sh --seeds."""
import json, os, shutil, struct, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "tests/fuzz/corpus")
SEP = "\n=====\n"

def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def read(path):
    with open(os.path.join(root, path), "rb") as f:
        return f.read()

# safetensors: the reference writer's fixture, plus small hand-made files
put("safetensors", "reference_writer.safetensors", read("tests/io/fixtures/reference_writer.safetensors"))
def st(header, payload):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + payload
put("safetensors", "two_tensors.safetensors", st({"__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]}}, bytes(12)))
put("safetensors", "scalar_empty.safetensors", st({"s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},
    "e": {"dtype": "F16", "shape": [0, 3], "data_offsets": [8, 8]}}, bytes(8)))

# config.json: every architecture and rope_scaling shape
base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}
put("llama_config", "llama2.json", json.dumps(base, indent=2))
put("llama_config", "rope_linear.json", json.dumps({**base, "rope_scaling": {"type": "linear", "factor": 2.0}}))
put("llama_config", "rope_dynamic.json", json.dumps({**base, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0,
    "original_max_position_embeddings": 2048}}))
put("llama_config", "llama3.json", json.dumps({**base, "vocab_size": 128256, "num_key_value_heads": 8,
    "rope_theta": 500000.0, "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000, "torch_dtype": "bfloat16",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}, "head_dim": 128, "attention_bias": False}))
put("llama_config", "mistral.json", json.dumps({**base, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "num_key_value_heads": 8, "sliding_window": 4096, "rope_theta": 1e6}))
put("llama_config", "qwen2.json", json.dumps({**base, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "use_sliding_window": False, "sliding_window": 32768,
    "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16"}))
put("llama_config", "tiny.json", json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 50, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 64, "rope_scaling": None, "pad_token_id": 0, "dtype": "float32"}))
put("llama_config", "rope_reference.json", read("tests/io/fixtures/rope_reference.json")[:8000])

# tokenizer.json: small byte-level BPE (with and without added tokens), SentencePiece-style BPE
split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
def byte_map():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
bm = byte_map()
vocab = {bm[b]: b for b in range(256)}
vocab.update({"he": 256, "ll": 257, "hell": 258, "hello": 259, "xyz": 260})
bl_model = {"type": "BPE", "unk_token": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": vocab, "merges": ["h e", "l l", "he ll", "hell o"]}
pre = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
added = [{"id": 261, "content": "<|eot|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
         {"id": 262, "content": "<tool>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": False},
         {"id": 263, "content": "xyzzy", "single_word": True, "lstrip": False, "rstrip": False, "normalized": True, "special": False}]
bl = {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": pre,
      "post_processor": {"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": "<|eot|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
          "special_tokens": {"<|eot|>": {"id": "<|eot|>", "ids": [261], "tokens": ["<|eot|>"]}}},
      "decoder": {"type": "ByteLevel"}, "model": bl_model}
put("tokenizer_json", "byte_level.json", json.dumps(bl) + SEP + json.dumps({"eos_token": "<|eot|>"}) + SEP + "hello <tool> xyzzy!")
plain = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
         "decoder": {"type": "ByteLevel"}, "model": {**bl_model, "merges": [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]]}}
put("tokenizer_json", "byte_level_plain.json", json.dumps(plain))
sv = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256): sv["<0x%02X>" % b] = 3 + b
sv.update({"\u2581": 259, "a": 260, "\u2581a": 261})
spm = {"added_tokens": [{"id": 1, "content": "<s>", "special": True, "normalized": False},
                        {"id": 2, "content": "</s>", "special": True, "normalized": False}],
       "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": None, "post_processor": None,
       "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                   {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
       "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True, "vocab": sv, "merges": ["\u2581 a"]}}
spm_cfg = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "add_bos_token": True, "add_eos_token": True}
put("tokenizer_json", "spm_style.json", json.dumps(spm) + SEP + json.dumps(spm_cfg) + SEP + "a \u00e9 a")
for name in ("llama3", "llama2"):
    cfg = os.path.join(root, "..", "shared", "tokenizers", name, "tokenizer_config.json")

# tokenizer_config.json / special_tokens_map.json / added_tokens.json beside tokenizer.model
tc = read("assets/tokenizer/llama2/tokenizer_config.json").decode()
sm = read("assets/tokenizer/llama2/special_tokens_map.json").decode()
put("tokenizer_config", "llama2", tc + SEP + sm)
put("tokenizer_config", "added", json.dumps({"add_bos_token": True, "add_eos_token": True, "pad_token": "<pad>",
    "additional_special_tokens": ["<tool>"], "legacy": False, "added_tokens_decoder": {
        "32000": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
        "32001": {"content": "<tool>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False, "special": False}}})
    + SEP + json.dumps({"bos_token": {"content": "<s>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
                        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    + SEP + json.dumps({"<extra>": 32002}))

# sentencepiece: the head of the shipped model (its fields and first pieces) and a cut one
model = read("assets/tokenizer/llama2/tokenizer.model")
put("sentencepiece", "llama2_head.model", model[:2048])
put("sentencepiece", "llama2_tail.model", model[-1024:])

# data files: the shipped demos (first samples), every format, JSON Lines
def first(path, n):
    return json.loads(read(path))[:n]
put("data", "sharegpt.json", b"\x00" + json.dumps(first("assets/data/dummy_conversation.json", 3), ensure_ascii=False).encode())
put("data", "toolcall.json", b"\x01" + json.dumps(first("assets/data/glaive_toolcall_en_demo_30.json", 2), ensure_ascii=False).encode())
msgs = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                       "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "2"},
                      {"role": "assistant", "content": "Hello!"}],
         "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}]
put("data", "messages.jsonl", b"\x82" + "\n".join(json.dumps(m) for m in msgs * 2).encode() + b"\n")
alp = [{"instruction": "Add", "input": "2+2", "output": "4", "system": "math",
        "history": [["hi", "hello"]]}, {"instruction": "Say hi", "output": "hi"}]
put("data", "alpaca.json", b"\x07" + json.dumps(alp).encode())
put("data", "sharegpt.jsonl", b"\xc5" + b"\n".join(json.dumps(c, ensure_ascii=False).encode()
    for c in first("assets/data/dummy_conversation.json", 2)) + b"\n")

# jinja: the real chat templates of the fixtures and the snippets
tdir = os.path.join(root, "tests/data/fixtures/jinja/templates")
for f in sorted(os.listdir(tdir)):
    put("jinja", f, read(os.path.join("tests/data/fixtures/jinja/templates", f)))
snips = json.loads(read("tests/data/fixtures/jinja/snippets.json"))
items = snips if isinstance(snips, list) else snips.get("snippets", [])
for i, s in enumerate(items[:40]):
    src = s if isinstance(s, str) else s.get("template") or s.get("source") or ""
    if src: put("jinja", "snippet_%02d.jinja" % i, src)

# chat_template: tokenizer_config.json with a chat_template (string, list of named ones, the .jinja file)
for f in sorted(os.listdir(tdir))[:6]:
    src = read(os.path.join("tests/data/fixtures/jinja/templates", f)).decode()
    put("chat_template", f + ".json", json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": src}))
put("chat_template", "named_list.json", json.dumps({"eos_token": {"content": "</s>"}, "chat_template": [
    {"name": "default", "template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"},
    {"name": "tool_use", "template": "{{ tools | tojson }}{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"}]}))
put("chat_template", "jinja_file", json.dumps({"eos_token": "</s>"}) + SEP +
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}{{ eos_token if m.role == 'assistant' }}{% endfor %}")

# --config YAML / JSON
put("options", "config.yaml", "model_name_or_path: m\ndata_path: d.json\noutput_dir: out\nlearning_rate: 2e-5\n"
    "num_train_epochs: 3\nper_device_train_batch_size: 2\nbf16: True\nlr_scheduler_type: cosine\nwarmup_ratio: 0.03\n")
put("options", "config.json", json.dumps({"model_name_or_path": "m", "max_steps": 10, "gradient_checkpointing": True,
    "save_total_limit": 2, "model_max_length": 2048, "report_to": "none"}))
put("options", "anchors.yaml", "base: &b 1\nseed: *b\n? [a, b]\n: c\nlist: [1, {x: 2}]\n")

# tokenize: UTF-8 edge cases
cases = {"ascii": b"Hello, world! 123", "multi": "h\u00e9llo \u2713 \U0001F600 \u4e2d\u6587 \u0645".encode(),
         "invalid": b"\xc3\x28 \xa0\xa1 \xe2\x28\xa1 \xf0\x28\x8c\xbc", "overlong": b"\xc0\xaf \xe0\x80\xaf",
         "surrogate": b"\xed\xa0\x80\xed\xbf\xbf", "nul": b"a\x00b", "specials": b"<s>[INST] hi [/INST]</s><unk>",
         "spaces": b"   \t\n\n  x  \r\n", "bom": b"\xef\xbb\xbfhi", "max": b"\xf4\x8f\xbf\xbf \xf4\x90\x80\x80"}
for k, v in cases.items(): put("tokenize", k, v)
print("seeds written under", out)
