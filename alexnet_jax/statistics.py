"""Statistics of a dataset's training split, computed once and cached under data_dir.

Each statistic is a pass over the training split's host images (`_training_images`: the
centre R x R squares the eval stream yields, R = input.resize_size), cached as one .npy file
under <data_dir>/alexnet_jax_stats/ (`_load_or_compute`). The names say what may happen:
`load_or_compute_*` reads the cache or runs the (full decode) pass and writes it;
`compute_*` always runs the pass. The cache of a dataset serves its pre-resized copy too.
Where data_dir cannot be written (read-only, a shared bucket) the file goes to
`_fallback_path` under $XDG_CACHE_HOME (default ~/.cache)/alexnet_jax/ instead, with a
warning; where neither can, the statistic is used uncached (and computed again next run).

The paper's mean image is the one statistic today. Its PCA lighting (the eigen-decomposition
of the RGB covariance, now the constants in `augment`) would be a second one beside it:
`compute_rgb_pca(config)` over `_training_images(config)`, `rgb_pca_path(config)` =
`_cache_path(config, '_rgb_pca')` and `load_or_compute_rgb_pca(config)` through
`_load_or_compute`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from alexnet_jax import input_pipeline, sources

STATS_DIR = 'alexnet_jax_stats'


def _dataset_tag(config: ml_collections.ConfigDict) -> str:
  """The cache files' name for this dataset, training split and resize_size."""
  d = config.dataset
  if d.name == 'folder':
    # A name, not a path access: the normalised folder string is only hashed.
    root = os.path.normpath(d.folder)
    tag = f'folder_{os.path.basename(root)}_{zlib.crc32(root.encode()):08x}'
  elif d.name == 'alexnet_shapes':
    tag = (f'alexnet_shapes_s{d.shapes_image_size}_tr{d.shapes_train_size}'
           f'_va{d.shapes_validation_size}')
  else:
    tag = d.name
  split = d.train_split.replace('[', '_').replace(']', '').replace(':', '-').replace('%', 'pc')
  if split != 'train':
    tag += f'_{split}'
  return f'{tag}_{config.input.resize_size}'


def _cache_path(config: ml_collections.ConfigDict, suffix: str = '') -> epath.Path:
  return sources.data_dir(config) / STATS_DIR / f'{_dataset_tag(config)}{suffix}.npy'


def _fallback_path(path: epath.Path) -> epath.Path:
  """Where the cache file `path` (under <data_dir>/STATS_DIR) goes when data_dir is not
  writable: $XDG_CACHE_HOME (or ~/.cache)/alexnet_jax/STATS_DIR/, named after data_dir too."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  ddir = os.fspath(path.parent.parent)
  return (epath.Path(base) / 'alexnet_jax' / STATS_DIR /
          f'{zlib.crc32(ddir.encode()):08x}_{path.name}')


def _load_or_compute(path: epath.Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """The array cached at `path` (or at its fallback), or compute() written there first
  (atomically: concurrent processes may both compute, but a reader never sees half a
  file)."""
  fallback = _fallback_path(path)
  for p in (path, fallback):
    try:
      if p.exists():
        with p.open('rb') as f:
          return np.load(f)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is recomputed
      logging.warning('cannot read the cached %s (%s): computing it again.', p, e)
  value = compute()
  errors = []
  for p in (path, fallback):
    try:
      p.parent.mkdir(parents=True, exist_ok=True)
      tmp = p.with_name(f'{p.name}.tmp{os.getpid()}')
      with tmp.open('wb') as f:
        np.save(f, value)
      tmp.replace(p)
    except Exception as e:  # noqa: BLE001 - read-only data_dir, bucket without write access
      errors.append(f'{p.parent}: {getattr(e, "strerror", None) or e}')
      continue
    if errors:
      logging.warning('cannot write the statistics cache in data_dir (%s); cached in %s '
                      'instead.', errors[0], p)
    return value
  logging.warning('cannot cache %s anywhere (%s): using it uncached; it is computed again '
                  'next run.', path.name, '; '.join(errors))
  return value


def _training_images(config: ml_collections.ConfigDict) -> Iterator[np.ndarray]:
  """uint8 [n, R, R, 3] chunks: every decodable image of the training split, once."""
  for batch in input_pipeline.create_eval_iterator(config, config.dataset.train_split,
                                                   local_batch_size=256):
    yield batch['image'][batch['mask']]


# ------------------------------------------------------------------------------ mean image


def mean_image_path(config: ml_collections.ConfigDict) -> epath.Path:
  """Where the mean image of the training split is cached."""
  return _cache_path(config)


def compute_mean_image(config: ml_collections.ConfigDict) -> np.ndarray:
  """float32 [R, R, 3]: the mean of the training split's host images (a full decode pass)."""
  total = np.zeros((config.input.resize_size,) * 2 + (3,), np.float64)
  count = 0
  for images in _training_images(config):
    total += images.sum(axis=0, dtype=np.float64)
    count += len(images)
  if count == 0:
    raise ValueError('mean image: the training split has no decodable images')
  return (total / count).astype(np.float32)


def load_or_compute_mean_image(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The mean `augment` subtracts, per input.mean: float32 [R, R, 3] for 'image', [3] for
  'channel', None for 'none' (and for dataset.name='synthetic': no pass, no file).

  Read from `mean_image_path(config)`; when not there yet, computed by
  `compute_mean_image` (a full decode pass over the training split) and cached there.
  """
  kind = config.input.mean
  if kind == 'none' or config.dataset.name == sources.SYNTHETIC:
    return None
  if kind not in ('image', 'channel'):
    raise ValueError(f"input.mean={kind!r}: expected 'image', 'channel' or 'none'")
  mean = _load_or_compute(mean_image_path(config), lambda: compute_mean_image(config))
  return mean.mean(axis=(0, 1)) if kind == 'channel' else mean
