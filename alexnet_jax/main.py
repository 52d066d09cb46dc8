r"""Trains and evaluates AlexNet; re-running the same command resumes.

  python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet
  python -m alexnet_jax.main --config=configs/paper.py --workdir=DIR --config.batch_size=256
  python -m alexnet_jax.main --config=configs/paper.py:towers=1 --workdir=DIR

Multi-host: the same command on every host, with --coordinator_address/--num_processes/
--process_id, or --distributed where jax.distributed.initialize() finds them itself (a
TPU pod slice, SLURM); the workdir on storage every host reaches (docs/multihost.md).

Exit codes: 0 finished (or stopped by SIGTERM/Ctrl-C after checkpointing; a signal to any
one process of a multi-process run stops them all at the same step); 2 a bad
config value, a missing or unreadable dataset, too many undecodable images; 3 training
diverged; 4 the workdir is in use by another live run or cannot be written; 5 a
checkpoint could not be written, or none of the workdir's checkpoints restores.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from alexnet_jax.common import logs

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
  import jax
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
  from alexnet_jax.run import checkpoints, lock, train

  config = _CONFIG.value
  if config.dataset.name == 'imagenet2012':
    message = sources.missing_message(config)
    if message:
      print(message, file=sys.stderr)
      return 2
  _initialize_distributed()
  # The faults a user fixes (no traceback), each with its exit status; the first match wins.
  exit_statuses = ((train.DivergedError, 3), (lock.WorkdirError, 4),
                   *checkpoints.EXIT_STATUSES)
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except Exception as e:
    return logs.user_fault(e, exit_statuses, log=True)
  return 0


if __name__ == '__main__':
  app.run(main)
