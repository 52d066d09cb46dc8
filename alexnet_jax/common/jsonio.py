"""Writing a JSON report: one format for the figures' data and the benchmarks' results."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, value: Any, *, indent: int = 1) -> str:
  """Writes `value` to `path` (its folder made first), ending with a newline so the file
  diffs and concatenates cleanly; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(value, f, indent=indent)
    f.write('\n')
  return path
