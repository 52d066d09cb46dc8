"""Evaluation: a whole split (or a labelled folder) through the jitted eval step, and a saved
run's checkpoint.

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

from alexnet_jax.common import config_lib, progress
from alexnet_jax.data import classes, pipeline, sources
from alexnet_jax.model import steps
from alexnet_jax.run import checkpoints
from alexnet_jax.run import workdir as workdir_lib


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
                   skips: pipeline.SkipReport | None = None,
                   show_progress: bool = False,
                   listing: sources.FolderListing | None = None) -> dict[str, float]:
  """Top-1/top-5/loss over the whole split (or the files of `listing`, which `split` then
  only names): padded rows are masked, none dropped (images that cannot be decoded are
  skipped and reported to `skips`). `show_progress`: a bar of the split's batches on a
  terminal (the `evaluate` command; not the training loop's evals, whose log lines it would
  split)."""
  local_batch = config.eval_batch_size // jax.process_count()
  it = pipeline.create_eval_iterator(config, split, local_batch_size=local_batch,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(), skips=skips,
                                     listing=listing)
  sums = None
  start = time.time()
  batches = prefetch(it, built.batch, config.input.prefetch)
  if show_progress:
    total = pipeline.eval_steps(config, split, config.eval_batch_size, listing)
    batches = progress.bar(batches, total=total, unit='batch',
                           desc=f'{split}, {config.input.eval_crops} crop(s)',
                           enabled=jax.process_index() == 0)
  for batch in batches:
    out = built.eval(params, batch, mean)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  if sums is None:
    raise ValueError(f'eval split {split!r} is empty')
  sums = jax.device_get(sums)
  count = float(sums['count'])
  if not count:
    raise ValueError(f'no image of {split} could be decoded (see the warnings above)')
  return {'loss': float(sums['loss']) / count, 'top1': float(sums['top1']) / count,
          'top5': float(sums['top5']) / count, 'count': count,
          'images_per_sec': count / max(time.time() - start, 1e-9)}


def evaluate_checkpoint(workdir: str, *, checkpoint: str = workdir_lib.DEFAULT_CHECKPOINT,
                        crops: tuple[int, ...] = (1, 10), split: str | None = None,
                        batch_size: int | None = None, folder: str | None = None) -> dict:
  """{'workdir', 'checkpoint', 'step', 'split', 'crops_<n>': metrics, ...} for one
  checkpoint ('latest' or 'best') of the run in `workdir`; the mean comes from the workdir
  (`workdir.run_mean`), the images of `split` from the run's dataset.

  `folder` instead of `split`: every image in the class sub-folders of that folder, each
  labelled by the run's index of its sub-folder's name (`sources.labelled_folder`), with the
  preprocessing of the run's validation split; 'split' is then 'folder:<absolute folder>'
  and 'skipped' / 'skipped_files' count and name the images that could not be decoded
  (left out of every count)."""
  if folder is not None and split is not None:
    raise ValueError(f'split={split!r} and folder={folder!r}: give one of them (a folder is '
                     'scored instead of a split of the run\'s dataset)')
  for n in crops:
    config_lib.check_choice('input.eval_crops', n)
  listing = None
  if folder is not None:  # checked before the checkpoint is read: a wrong folder fails fast
    folder = checkpoints.absolute(folder)
    run_classes = classes.class_info(workdir_lib.load_config(checkpoints.absolute(workdir)))
    listing = sources.labelled_folder(folder, [c.label for c in run_classes])
    split = f'folder:{folder}'
  run = workdir_lib.load_run(workdir, checkpoint=checkpoint, batch_size=batch_size)
  config = run.config
  split = split or config.dataset.eval_split
  results = {'workdir': run.workdir, 'checkpoint': run.checkpoint, 'step': run.step,
             'split': split}
  skips = pipeline.SkipReport()
  with jax.set_mesh(run.mesh):
    for n in crops:
      config.input.eval_crops = n
      skips = pipeline.SkipReport()       # one per pass: each pass meets the same files
      m = evaluate_split(steps.build(config, run.spec, run.mesh), run.params, config,
                         run.mean, split, skips=skips, show_progress=True, listing=listing)
      logging.info('%s, %d crop(s): top1 %.4f top5 %.4f (%d images)', run.describe(), n,
                   m['top1'], m['top5'], m['count'])
      results[f'crops_{n}'] = m
  if listing is not None:
    names = sorted(skips.names[(split, None)])
    results.update(skipped=skips.total(split), skipped_files=names)
  return results
