r"""Host input-pipeline throughput on real photos, per CPU core, against a PyTorch-style loader.

  python -m benchmarks.input --config=benchmarks/configs/input.py \
      --config.seconds=20 --config.resize_method=fast --config.json=/tmp/bench_input.json

Run from the repository root. What is measured: benchmarks/input_lib.py; the JSON fields:
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

from absl import app
from ml_collections import config_flags

from alexnet_jax.common import exits, jsonio

_CONFIG = config_flags.DEFINE_config_file(
    'config', None,
    'Benchmark settings (default: benchmarks/configs/input.py); '
    'any field can be overridden: --config.seconds=5', lock_config=True)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from benchmarks import input_lib  # after flags: keeps --help fast

  config = _CONFIG.value
  try:
    report = input_lib.run(config,
                           command=' '.join(['python -m benchmarks.input', *sys.argv[1:]]))
  except FileNotFoundError as e:     # no photos: the user's to fix, no traceback
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(input_lib.format_table(report))
  if config.json:
    jsonio.write_json(config.json, report, indent=2)
    print(f'wrote {config.json}')
  return 0


if __name__ == '__main__':
  exits.run(main, default_config='benchmarks/configs/input.py')
