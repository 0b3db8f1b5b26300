#!/usr/bin/env python3
"""Reads a TensorBoard event file with TensorBoard's own loader (which checks both TFRecord CRCs)
and prints every event as JSON lines: {"step", "file_version"?, "session_log"?, "scalars": {tag: v}}."""
import json
import sys

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

for raw in RawEventFileLoader(sys.argv[1]).Load():
    ev = event_pb2.Event.FromString(raw)
    out = {"step": ev.step, "wall_time": ev.wall_time}
    if ev.HasField("file_version"):
        out["file_version"] = ev.file_version
    if ev.HasField("session_log"):
        out["session_log"] = int(ev.session_log.status)
    if ev.HasField("summary"):
        out["scalars"] = {v.tag: v.simple_value for v in ev.summary.value}
    print(json.dumps(out))
