r"""Evaluates a run's checkpoint: centre crop and the paper's 10 crops, top-1 and top-5.

  python -m alexnet_jax.evaluate --workdir=/tmp/alexnet
  python -m alexnet_jax.evaluate --workdir=DIR --checkpoint=latest --crops=10 --split=validation

The model and preprocessing are rebuilt from the run's config.json; every
example of the split is counted exactly once (the last batch is padded and
masked). Results are printed and written to DIR/eval_<split>_<checkpoint>.json.
The workdir may be local or on an object store (gs://...).
"""

from __future__ import annotations

import json

from absl import app, flags
from etils import epath

from alexnet_jax.common import logs

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training run\'s workdir.')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                                'best: best validation top-1; latest: last saved step.')
_CROPS = flags.DEFINE_list('crops', ['1', '10'], '1 (centre crop) and/or 10 (paper).')
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: the config\'s).')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Global eval batch (default: config\'s).')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the workdir of a training run')
  if not set(_CROPS.value) <= {'1', '10'}:
    raise app.UsageError(f'--crops={",".join(_CROPS.value)}: allowed values are 1 and 10')
  crops = tuple(int(c) for c in _CROPS.value)
  logs.setup()
  from alexnet_jax.run import checkpoints  # after flags: keeps --help fast
  from alexnet_jax.run import evaluate as evaluation
  try:
    r = evaluation.evaluate_checkpoint(_WORKDIR.value, which=_CHECKPOINT.value, crops=crops,
                                       split=_SPLIT.value, batch_size=_BATCH.value)
  except Exception as e:
    return logs.user_fault(e, checkpoints.EXIT_STATUSES)
  print(f'{r["checkpoint"]} checkpoint (step {r["step"]}), split {r["split"]}:')
  print(f'  {"crops":<8}{"top-1":>8}{"top-5":>8}{"error@1":>9}{"error@5":>9}{"images":>9}')
  for n in crops:
    m = r[f'crops_{n}']
    print(f'  {n:<8}{m["top1"]:>8.4f}{m["top5"]:>8.4f}{1 - m["top1"]:>9.4f}'
          f'{1 - m["top5"]:>9.4f}{int(m["count"]):>9}')
  out = epath.Path(_WORKDIR.value) / f'eval_{r["split"]}_{r["checkpoint"]}.json'
  out.write_text(json.dumps(r, indent=1))
  print(f'written: {out}')
  return 0


if __name__ == '__main__':
  app.run(main)
