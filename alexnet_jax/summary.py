r"""Prints the model: parameters and their sharding, cost, mesh, and where devices talk.

  python -m alexnet_jax.summary --config=configs/paper.py
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m alexnet_jax.summary --config=configs/paper.py --json=-

The communication table comes from the compiled HLO of one real training step
(the same jitted function the training loop runs, from `steps.build`): every
collective, the mesh axis it runs over, and the bytes each device receives.
Nothing is executed; only shapes are built and the step is compiled. --json=- prints one
JSON object instead of the tables; --json=FILE writes it there besides the tables. Exit
status 2 (alexnet_jax/common/exits.py) for a bad flag or config.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from alexnet_jax.common import exits, logs
from alexnet_jax.model import summary

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (see configs/).',
                                          lock_config=True)
_JSON = flags.DEFINE_string('json', None, 'Write the summary as one JSON object: "-" on '
                            'stdout instead of the tables, or to this file besides them.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Global batch for the compiled step '
                              '(default: the config\'s).')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/paper.py')
  logs.setup()
  try:
    s = summary.summarize(_CONFIG.value, _BATCH.value)
  except ValueError as e:
    return exits.user_fault(e)
  if _JSON.value == '-':
    return exits.emit_json(s, '-')
  sys.stdout.write(summary.format_tables(s) + '\n')
  if _JSON.value:
    status = exits.emit_json(s, _JSON.value)
    if status != exits.OK:
      return status
    print(f'written: {_JSON.value}')
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
