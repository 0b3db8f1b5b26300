#!/usr/bin/env python3
"""Writes tests/io/fixtures/reference_writer.safetensors with huggingface/safetensors' own writer
(safetensors.torch.save_file, metadata {"format": "pt"}), so test_io can check that
write_safetensors() produces the same bytes for the same tensors and that the reader accepts it.
The tensor values are simple formulas the C++ test recomputes (see test_safetensors.cpp).

Run: .venv/bin/python tools/make_safetensors_reference.py
"""
import os

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "io", "fixtures", "reference_writer.safetensors")


def main():
    tensors = {
        "model.b.weight": torch.arange(15, dtype=torch.float32).reshape(3, 5) * 0.25 - 1.0,  # F32 (3, 5)
        "model.a.bias": (torch.arange(4, dtype=torch.float32) * 0.5).to(torch.bfloat16),    # BF16 (4,)
        "Z.norm": (torch.arange(4, dtype=torch.float32) - 1.5).to(torch.float16).reshape(2, 2),  # F16 (2, 2)
        "positions": torch.tensor([1, -2, 3000000000], dtype=torch.int64),                   # I64 (3,)
        "count": torch.tensor(7, dtype=torch.int32),                                          # I32 ()
        "empty": torch.zeros(0, 4, dtype=torch.float32),                                      # F32 (0, 4)
    }
    save_file(tensors, OUT, metadata={"format": "pt"})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
