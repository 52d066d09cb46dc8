r"""Trains and evaluates AlexNet; re-running the same command resumes.

  python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet
  python -m alexnet_jax.main --config=configs/paper.py --workdir=DIR --config.batch_size=256
  python -m alexnet_jax.main --config=configs/paper.py:towers=1 --workdir=DIR

Multi-host: the same command on every host, with --coordinator_address/--num_processes/
--process_id, or --distributed where jax.distributed.initialize() finds them itself (a
TPU pod slice, SLURM); the workdir on storage every host reaches (docs/multihost.md).

Exit statuses (the table: alexnet_jax/common/exits.py): 0 finished (or stopped by
SIGTERM/Ctrl-C after checkpointing; a signal to any one process of a multi-process run
stops them all at the same step); 2 a bad flag, an unknown config field or a value of the
wrong type (one `error:` line naming the field), a refused config value, a missing or
unreadable dataset, too many undecodable images; 3 training diverged; 4 the workdir is in
use by another live run or cannot be written; 5 a checkpoint could not be written, or none
of the workdir's checkpoints restores.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from alexnet_jax.common import exits, logs

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/default.py or configs/paper.py:towers=1. Any '
    'field can be overridden: --config.model.lrn=none', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events and '
                               'metrics.jsonl go; an existing run there is resumed.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() '
                                 'with no arguments (TPU pods, SLURM, ...).')


def _initialize_distributed() -> None:
  import jax  # after flags: keeps --help fast
  if _COORDINATOR.value:
    # Gloo for cross-process collectives on CPU (it only affects the CPU backend). Not
    # guarded by jax.default_backend(): that would start the backend, and initialize()
    # must come first.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError('both --config and --workdir are required, e.g.\n'
                         '  python -m alexnet_jax.main --config=configs/default.py '
                         '--workdir=/tmp/alexnet')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logs.setup()
  # after flags: keeps --help fast
  from alexnet_jax.data import sources
  from alexnet_jax.run import train

  config = _CONFIG.value
  # A TFDS dataset that is not prepared (ImageNet, cifar10, ...): what to run, once, before
  # JAX starts or the workdir is made.
  message = sources.missing_message(config)
  if message:
    print(message, file=sys.stderr)
    return exits.USAGE
  _initialize_distributed()
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except Exception as e:
    return exits.user_fault(e, log=True)   # the faults a user fixes: one line, no traceback
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
