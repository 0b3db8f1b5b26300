#!/usr/bin/env python3
"""Prints, as JSON, the learning rate HF transformers' schedulers give each optimizer step: for each
case (kind, total, warmup) the value of scheduler.get_last_lr() before each scheduler.step()."""
import json

import torch
from transformers import get_scheduler

CASES = [("linear", 20, 0), ("linear", 20, 3), ("cosine", 37, 4), ("cosine", 10, 0),
         ("constant", 5, 2), ("constant_with_warmup", 12, 5), ("cosine", 3, 1), ("linear", 7, 7)]

out = []
for kind, total, warmup in CASES:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
    sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)
    lrs = []
    for _ in range(total + 2):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    out.append({"kind": kind, "total": total, "warmup": warmup, "lr_max": 2e-5, "lrs": lrs})
print(json.dumps(out))
