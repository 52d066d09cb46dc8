r"""Evaluates a run's checkpoint: centre crop and the paper's 10 crops, top-1 and top-5.

  python -m alexnet_jax.evaluate --workdir=/tmp/alexnet
  python -m alexnet_jax.evaluate --workdir=DIR --checkpoint=latest --crops=10 --split=validation

The model and preprocessing are rebuilt from the run's config.json; every
example of the split is counted exactly once (the last batch is padded and
masked). Results are printed and written to DIR/eval_<split>_<checkpoint>.json.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import checkpoints, models, sharding, statistics, train


def _define_flags() -> None:
  """Command-line flags, defined only when this module is the program (so that
  importing it next to the other entry points never defines a flag twice)."""
  global _WORKDIR, _CHECKPOINT, _CROPS, _SPLIT, _BATCH
  _WORKDIR = flags.DEFINE_string('workdir', None, 'A training run\'s workdir.')
  _CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                                  'best: best validation top-1; latest: last saved step.')
  _CROPS = flags.DEFINE_list('crops', ['1', '10'], '1 (centre crop) and/or 10 (paper).')
  _SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: the config\'s).')
  _BATCH = flags.DEFINE_integer('batch_size', None, 'Global eval batch (default: config\'s).')


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a training run\'s workdir')
  return ml_collections.ConfigDict(checkpoints.read_config(workdir))


def evaluate_checkpoint(workdir: str, *, which: str = 'best', crops: tuple[int, ...] = (1, 10),
                        split: str | None = None, batch_size: int | None = None) -> dict:
  """{crops: metrics} for one checkpoint of the run in `workdir`."""
  workdir = checkpoints.absolute(workdir)
  config = load_run_config(workdir)
  if batch_size:
    config.eval_batch_size = batch_size
  split = split or config.dataset.eval_split
  mesh = sharding.make_mesh(config.mesh)
  spec = models.ModelSpec.from_config(config.model)
  sharding.check_mesh_fits_model(mesh, spec)
  tx = train.make_optimizer(config)
  abstract = train.abstract_train_state(config, spec, mesh, tx).params
  params, step = checkpoints.load_params(workdir, abstract, which=which)
  mean = statistics.load_or_compute_mean_image(config)
  replicated = NamedSharding(mesh, P())
  mean = jax.device_put(train.mean_or_zeros(mean), replicated)
  results = {'step': int(step), 'checkpoint': which, 'split': split}
  with jax.set_mesh(mesh):
    for n in crops:
      config.input.eval_crops = n
      step_fn = jax.jit(train.make_eval_step(config, spec))
      m = train.evaluate(step_fn, params, config, mesh, mean, split)
      logging.info('%d crop(s): top1 %.4f top5 %.4f (%d images)', n, m['top1'], m['top5'],
                   m['count'])
      results[f'crops_{n}'] = m
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the workdir of a training run')
  crops = tuple(int(c) for c in _CROPS.value)
  if not set(crops) <= {1, 10}:
    raise app.UsageError(f'--crops={",".join(_CROPS.value)}: allowed values are 1 and 10')
  try:
    r = evaluate_checkpoint(_WORKDIR.value, which=_CHECKPOINT.value, crops=crops,
                            split=_SPLIT.value, batch_size=_BATCH.value)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{r["checkpoint"]} checkpoint (step {r["step"]}), split {r["split"]}:')
  print(f'  {"crops":<8}{"top-1":>8}{"top-5":>8}{"error@1":>9}{"error@5":>9}{"images":>9}')
  for n in crops:
    m = r[f'crops_{n}']
    print(f'  {n:<8}{m["top1"]:>8.4f}{m["top5"]:>8.4f}{1 - m["top1"]:>9.4f}'
          f'{1 - m["top5"]:>9.4f}{int(m["count"]):>9}')
  out = os.path.join(_WORKDIR.value, f'eval_{r["split"]}_{r["checkpoint"]}.json')
  with open(out, 'w') as f:
    json.dump(r, f, indent=1)
  print(f'written: {out}')
  return 0


if __name__ == '__main__':
  _define_flags()
  app.run(main)
