r"""Times the jitted training step (and the forward pass) against the same AlexNet in PyTorch.

  python -m benchmarks.step --config=benchmarks/configs/step.py \
      --config.models=paper,one_tower --config.dtypes=float32 --config.batch_sizes=32 \
      --config.runs=5 --config.loop=True --config.json=/tmp/bench_step.json

Run from the repository root (model configs come from configs/). What is measured:
benchmarks/step_lib.py; the JSON fields: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

from absl import app
from ml_collections import config_flags

from alexnet_jax.common import exits, jsonio

_CONFIG = config_flags.DEFINE_config_file(
    'config', None,
    'Benchmark cases (default: benchmarks/configs/step.py); '
    'any field can be overridden: --config.models=paper --config.runs=3',
    lock_config=True)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from benchmarks import step_lib  # after flags: keeps --help fast

  config = _CONFIG.value
  try:
    step_lib.check(config)
  except (ValueError, KeyError) as e:   # a bad --config value: the user's to fix
    print(f'error: {e}', file=sys.stderr)
    return 2
  on_case = (lambda partial: jsonio.write_json(config.json, partial)) if config.json else None
  report = step_lib.run(config, command=' '.join(['python -m benchmarks.step', *sys.argv[1:]]),
                        on_case=on_case)
  print(step_lib.format_table(report['results']))
  print(step_lib.LEGEND)
  if config.json:
    jsonio.write_json(config.json, report)
    print(f'wrote {config.json}')
  return 0


if __name__ == '__main__':
  exits.run(main, default_config='benchmarks/configs/step.py')
