"""Evaluation: a whole split through the jitted eval step, and a saved run's checkpoint.

Every example of a split counts exactly once: the last batch is padded and the
padding masked (flax's imagenet example drops it). The training loop and the
`evaluate` command share `evaluate_split`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding

from alexnet_jax.common import config_lib
from alexnet_jax.data import pipeline, statistics
from alexnet_jax.model import sharding, steps
from alexnet_jax.run import checkpoints


def to_global(batch: dict, batch_sharding: NamedSharding) -> dict:
  """This process's rows -> one array over the mesh, split on 'data'."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
          for k, v in batch.items()}


def prefetch(iterator: Iterator[dict], batch_sharding: NamedSharding,
             size: int) -> Iterator[dict]:
  """Keeps `size` batches already on their way to the devices (transfers are async)."""
  queue = collections.deque()
  for batch in iterator:
    queue.append(to_global(batch, batch_sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def evaluate_split(built: steps.Steps, params: Any, config: ml_collections.ConfigDict,
                   mean: jax.Array, split: str,
                   skips: pipeline.SkipReport | None = None) -> dict[str, float]:
  """Top-1/top-5/loss over the whole split: padded rows are masked, none dropped (images
  that cannot be decoded are skipped and reported to `skips`)."""
  local_batch = config.eval_batch_size // jax.process_count()
  it = pipeline.create_eval_iterator(config, split, local_batch_size=local_batch,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count(), skips=skips)
  sums = None
  start = time.time()
  for batch in prefetch(it, built.batch, config.input.prefetch):
    out = built.eval(params, batch, mean)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  if sums is None:
    raise ValueError(f'eval split {split!r} is empty')
  sums = jax.device_get(sums)
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / count, 'top1': float(sums['top1']) / count,
          'top5': float(sums['top5']) / count, 'count': count,
          'images_per_sec': count / max(time.time() - start, 1e-9)}


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json a training run wrote into its workdir (local or gs://), over
  config_lib.base(): fields added since the run was written take their defaults."""
  try:
    config = config_lib.base()
    config.update(checkpoints.read_config(workdir))
    return config
  except FileNotFoundError:
    raise FileNotFoundError(f'{workdir}/config.json not found: --workdir must be a training '
                            "run's workdir") from None


def evaluate_checkpoint(workdir: str, *, which: str = 'best', crops: tuple[int, ...] = (1, 10),
                        split: str | None = None, batch_size: int | None = None) -> dict:
  """{'crops_<n>': metrics, ...} for one checkpoint of the run in `workdir`."""
  workdir = checkpoints.absolute(workdir)
  config = load_run_config(workdir)
  if batch_size:
    config.eval_batch_size = batch_size
  split = split or config.dataset.eval_split
  for n in crops:
    config_lib.check_choice('input.eval_crops', n)
  mesh = sharding.make_mesh(config.mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape),
                             process_count=jax.process_count())
  built = steps.build(config, spec, mesh)
  params, step = checkpoints.load_params(workdir, built.abstract_state().params, which=which)
  mean = built.device_mean(statistics.load_or_compute_mean_image(config))
  results = {'step': int(step), 'checkpoint': which, 'split': split}
  with jax.set_mesh(mesh):
    for n in crops:
      config.input.eval_crops = n
      m = evaluate_split(steps.build(config, spec, mesh), params, config, mean, split)
      logging.info('%d crop(s): top1 %.4f top5 %.4f (%d images)', n, m['top1'], m['top5'],
                   m['count'])
      results[f'crops_{n}'] = m
  return results
