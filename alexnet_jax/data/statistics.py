"""Statistics of a dataset's training split, computed once and cached under data_dir.

Each statistic is a pass over the training split's host images (`_training_images`: the
centre R x R squares the eval stream yields, R = input.resize_size), cached under
<data_dir>/alexnet_jax_stats/ (`_load_or_compute`). The names say what may happen:
`load_or_compute_*` reads the cache or runs the (full decode) pass and writes it;
`compute_*` always runs the pass. The cache of a dataset serves its pre-resized copy too.
Where data_dir cannot be written (read-only, a shared bucket) the file goes to
`_fallback_path` under $XDG_CACHE_HOME (default ~/.cache)/alexnet_jax/ instead, with a
warning; where neither can, the statistic is used uncached (and computed again next run).

Two statistics, both of the paper: the mean image (`load_or_compute_mean_image`, .npy) and
the eigen-decomposition of the RGB covariance of the training pixels in [0, 1] that the PCA
lighting noise follows (`load_or_compute_rgb_pca`, .npz; section 4.1), or, with
input.pca_source='published', ImageNet's published constants (`published_rgb_pca`).
`load_or_compute_statistics` returns both, computing the missing ones in one decode pass.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from alexnet_jax.common import config_lib, progress
from alexnet_jax.data import augment, pipeline, sources

STATS_DIR = 'alexnet_jax_stats'


def _dataset_tag(config: ml_collections.ConfigDict) -> str:
  """The cache files' name for this dataset, training split, resize_size and (for
  input.resize_mode='squash', whose images are other pixels) resize mode."""
  d = config.dataset
  if d.name == 'folder':
    # A name, not a path access: the normalised folder string is only hashed.
    root = os.path.normpath(d.folder)
    tag = f'folder_{os.path.basename(root)}_{zlib.crc32(root.encode()):08x}'
  elif d.name == 'alexnet_shapes':
    tag = (f'alexnet_shapes_s{d.shapes_image_size}_tr{d.shapes_train_size}'
           f'_va{d.shapes_validation_size}')
    if d.shapes_variant != 'easy':   # the easy variant keeps its old cache names
      tag += f'_{d.shapes_variant}'
  else:
    tag = d.name.replace('/', '_')   # a TFDS build config: 'imagenette/320px-v2'
  split = d.train_split.replace('[', '_').replace(']', '').replace(':', '-').replace('%', 'pc')
  if split != 'train':
    tag += f'_{split}'
  tag = f'{tag}_{config.input.resize_size}'
  # The default mode keeps the cache names written before the mode existed.
  return tag + ('_squash' if config.input.resize_mode == 'squash' else '')


def _cache_path(config: ml_collections.ConfigDict, suffix: str = '',
                ext: str = '.npy') -> epath.Path:
  return sources.data_dir(config) / STATS_DIR / f'{_dataset_tag(config)}{suffix}{ext}'


def _fallback_path(path: epath.Path) -> epath.Path:
  """Where the cache file `path` (under <data_dir>/STATS_DIR) goes when data_dir is not
  writable: $XDG_CACHE_HOME (or ~/.cache)/alexnet_jax/STATS_DIR/, named after data_dir too."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  ddir = os.fspath(path.parent.parent)
  return (epath.Path(base) / 'alexnet_jax' / STATS_DIR /
          f'{zlib.crc32(ddir.encode()):08x}_{path.name}')


def _write_one(path: epath.Path, value: np.ndarray | dict[str, np.ndarray]) -> None:
  """An array as .npy, a dict of arrays as .npz, written atomically: concurrent processes
  may both compute, but a reader never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
  with tmp.open('wb') as f:
    if isinstance(value, dict):
      np.savez(f, **value)
    else:
      np.save(f, value)
  tmp.replace(path)


def _write(path: epath.Path, value: np.ndarray | dict[str, np.ndarray]) -> None:
  """Writes the cache at `path`, or at its fallback when data_dir is not writable."""
  errors = []
  for p in (path, _fallback_path(path)):
    try:
      _write_one(p, value)
    except Exception as e:  # noqa: BLE001 - read-only data_dir, bucket without write access
      errors.append(f'{p.parent}: {getattr(e, "strerror", None) or e}')
      continue
    if errors:
      logging.warning('cannot write the statistics cache in data_dir (%s); cached in %s '
                      'instead.', errors[0], p)
    return
  logging.warning('cannot cache %s anywhere (%s): using it uncached; it is computed again '
                  'next run.', path.name, '; '.join(errors))


def _read(path: epath.Path) -> np.ndarray | dict[str, np.ndarray] | None:
  """The cached value at `path` or at its fallback; None if neither holds a readable one."""
  for p in (path, _fallback_path(path)):
    try:
      if p.exists():
        with p.open('rb') as f:
          value = np.load(f)
          return dict(value) if isinstance(value, np.lib.npyio.NpzFile) else value
    except Exception as e:  # noqa: BLE001 - an unreadable cache is recomputed
      logging.warning('cannot read the cached %s (%s): computing it again.', p, e)
  return None


def _is_cached(path: epath.Path) -> bool:
  for p in (path, _fallback_path(path)):
    try:
      if p.exists():
        return True
    except Exception:  # noqa: BLE001 - an unreachable data_dir holds no cache
      pass
  return False


def _load_or_compute(path: epath.Path, compute: Callable[[], np.ndarray | dict]
                     ) -> np.ndarray | dict[str, np.ndarray]:
  """The array (or dict of arrays, .npz) cached at `path` (or at its fallback), or
  compute() written there first."""
  value = _read(path)
  if value is not None:
    return value
  value = compute()
  _write(path, value)
  return value


def _training_images(config: ml_collections.ConfigDict) -> Iterator[np.ndarray]:
  """uint8 [n, R, R, 3] chunks: every decodable image of the training split, once."""
  for batch in pipeline.create_eval_iterator(config, config.dataset.train_split,
                                                   local_batch_size=256):
    yield batch['image'][batch['mask']]


def _pca_cap(config: ml_collections.ConfigDict) -> int | None:
  cap = config.input.pca_max_images
  return None if cap == -1 else int(cap)


def _one_pass(config: ml_collections.ConfigDict, *, mean: bool, pca: bool) -> dict:
  """One decode pass over the training split for the statistics asked for: 'mean' (the
  mean image, every image) and 'pca' (`_rgb_pca_of_moments` of the first
  input.pca_max_images images, all for -1; the pass stops there when the mean is not
  wanted)."""
  size = config.input.resize_size
  total = np.zeros((size, size, 3), np.float64) if mean else None
  s1, s2 = np.zeros(3, np.float64), np.zeros((3, 3), np.float64)
  count = pca_count = 0
  cap = _pca_cap(config) if pca else 0
  total_images = sources.num_examples(config, config.dataset.train_split)
  what = ' and '.join(n for n, wanted in (('mean image', mean), ('RGB PCA', pca)) if wanted)
  bar = progress.bar(total=total_images if mean or cap is None else min(cap, total_images),
                     desc=f'{what} of {config.dataset.name} {config.dataset.train_split}',
                     unit='img')
  for images in _training_images(config):
    bar.update(len(images))
    if mean:
      total += images.sum(axis=0, dtype=np.float64)
    count += len(images)
    if pca and (cap is None or pca_count < cap):
      take = images if cap is None else images[:cap - pca_count]
      # Sums of x and x x^T in 0-255 integers, exact in float64 (< 2^53 for all of
      # ImageNet); 16 images at a time to bound the float64 copy.
      for i in range(0, len(take), 16):
        x = take[i:i + 16].reshape(-1, 3).astype(np.float64)
        s1 += x.sum(axis=0)
        s2 += x.T @ x
      pca_count += len(take)
      if not mean and cap is not None and pca_count >= cap:
        break
  bar.close()
  if count == 0:
    raise ValueError('dataset statistics: the training split has no decodable images')
  out = {}
  if mean:
    out['mean'] = (total / count).astype(np.float32)
  if pca:
    out['pca'] = _rgb_pca_of_moments(s1, s2, pca_count, pixels_per_image=size * size)
  return out


# ------------------------------------------------------------------------------ mean image


def mean_image_path(config: ml_collections.ConfigDict) -> epath.Path:
  """Where the mean image of the training split is cached."""
  return _cache_path(config)


def compute_mean_image(config: ml_collections.ConfigDict) -> np.ndarray:
  """float32 [R, R, 3]: the mean of the training split's host images (a full decode pass)."""
  return _one_pass(config, mean=True, pca=False)['mean']


def load_or_compute_mean_image(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The mean `augment` subtracts, per input.mean: float32 [R, R, 3] for 'image', [3] for
  'channel', input.mean_rgb for 'constant' (no pass), None for 'none' (and for
  dataset.name='synthetic': no pass, no file).

  Read from `mean_image_path(config)`; when not there yet, computed by
  `compute_mean_image` (a full decode pass over the training split) and cached there.
  """
  kind = config.input.mean
  if kind == 'constant':
    return np.asarray(config.input.mean_rgb, np.float32)
  if kind == 'none' or config.dataset.name == sources.SYNTHETIC:
    return None
  if kind not in ('image', 'channel'):
    raise ValueError(f"input.mean={kind!r}: expected 'image', 'channel', 'constant' or 'none'")
  mean = _load_or_compute(mean_image_path(config), lambda: compute_mean_image(config))
  return mean.mean(axis=(0, 1)) if kind == 'channel' else mean


# ------------------------------------------------------------------------- PCA lighting


@dataclasses.dataclass(frozen=True)
class RgbPca:
  """The eigen-decomposition the PCA lighting noise follows, and where it came from."""

  eigval: np.ndarray      # float32 [3], descending: variances along eigvec, pixels in [0, 1]
  eigvec: np.ndarray      # float32 [3, 3], columns are the unit eigenvectors (RGB rows)
  source: str             # 'dataset' | 'published'
  dataset: str            # whose training pixels
  images: int = 0         # training images it was computed from (0: published)
  path: str | None = None  # its cache file (None: published)

  def describe(self) -> str:
    """What the log says about it."""
    vals = ', '.join(f'{v:.4f}' for v in self.eigval)
    if self.source == 'published':
      return (f'published ImageNet constants (fb.resnet.torch), eigval ({vals}) for '
              f'dataset.name={self.dataset!r}')
    return (f'eigen-decomposition of {self.dataset} training pixels ({self.images} images, '
            f'cached at {self.path}), eigval ({vals})')


def rgb_pca_path(config: ml_collections.ConfigDict) -> epath.Path:
  """Where the PCA of the training split's RGB pixels is cached (per input.pca_max_images)."""
  cap = _pca_cap(config)
  return _cache_path(config, '_rgb_pca' + ('' if cap is None else f'_n{cap}'), '.npz')


def _cached_rgb_pca_path(config: ml_collections.ConfigDict) -> epath.Path | None:
  """The cached PCA to read: of all the images when there (whatever the cap), else of the
  first input.pca_max_images; None when neither is cached."""
  everything = config.copy_and_resolve_references()
  everything.input.pca_max_images = -1
  for path in (rgb_pca_path(everything), rgb_pca_path(config)):
    if _is_cached(path):
      return path
  return None


def _rgb_pca_of_moments(s1: np.ndarray, s2: np.ndarray, images: int,
                        pixels_per_image: int) -> dict[str, np.ndarray]:
  """{eigval, eigvec, covariance, rgb_mean, images}: the RGB covariance of `images` images
  (pixels in [0, 1]) from the sums of x and x x^T over their pixels (x in 0-255), and its
  eigen-decomposition, eigenvalues descending, each eigenvector's largest component > 0
  (the sign is arbitrary: alpha is symmetric)."""
  if images == 0:
    raise ValueError('PCA lighting: the training split has no decodable images')
  n = float(images) * pixels_per_image
  mean = s1 / n
  cov = (s2 / n - np.outer(mean, mean)) / 255.0 ** 2
  eigval, eigvec = np.linalg.eigh(cov)
  order = np.argsort(eigval)[::-1]
  eigval, eigvec = eigval[order], eigvec[:, order]
  eigvec = eigvec * np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(3)])
  return {'eigval': eigval, 'eigvec': eigvec, 'covariance': cov, 'rgb_mean': mean / 255.0,
          'images': np.int64(images)}


def compute_rgb_pca(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """{eigval, eigvec, covariance, rgb_mean, images} (float64; see `_rgb_pca_of_moments`) of
  the training split's first input.pca_max_images host images (-1: all): a decode pass."""
  return _one_pass(config, mean=False, pca=True)['pca']


def published_rgb_pca(config: ml_collections.ConfigDict) -> RgbPca:
  """ImageNet's published constants (augment.PCA_EIGVAL / PCA_EIGVEC, fb.resnet.torch's)."""
  return RgbPca(eigval=augment.PCA_EIGVAL, eigvec=augment.PCA_EIGVEC, source='published',
                dataset=config.dataset.name)


def load_or_compute_rgb_pca(config: ml_collections.ConfigDict) -> RgbPca | None:
  """The eigen-decomposition the PCA lighting uses, per input.pca_source; None when
  input.pca_lighting=0.

  'dataset': read from `rgb_pca_path(config)` (or the all-images file when there), computed
  by `compute_rgb_pca` and cached there when missing; dataset.name='synthetic' has no
  training pixels and gets the published constants (it stands in for ImageNet).
  'published': `published_rgb_pca`, refused (config_lib.check_pca_source) for datasets
  other than ImageNet.
  """
  config_lib.check_pca_source(config)
  if not config.input.pca_lighting:
    return None
  if config.input.pca_source == 'published' or config.dataset.name == sources.SYNTHETIC:
    return published_rgb_pca(config)
  path = _cached_rgb_pca_path(config) or rgb_pca_path(config)
  value = _load_or_compute(path, lambda: compute_rgb_pca(config))
  return RgbPca(eigval=np.asarray(value['eigval'], np.float32),
                eigvec=np.asarray(value['eigvec'], np.float32), source='dataset',
                dataset=config.dataset.name, images=int(value['images']), path=os.fspath(path))


# ------------------------------------------------------------------------------ both


@dataclasses.dataclass(frozen=True)
class Statistics:
  mean: np.ndarray | None     # load_or_compute_mean_image
  pca: RgbPca | None          # load_or_compute_rgb_pca


def load_or_compute_statistics(config: ml_collections.ConfigDict) -> Statistics:
  """The mean image and the PCA lighting statistic the config asks for, each read from its
  cache; when both are missing they are computed in one decode pass and cached."""
  config_lib.check_pca_source(config)
  if (config.input.mean in ('image', 'channel') and config.dataset.name != sources.SYNTHETIC
      and config.input.pca_lighting and config.input.pca_source == 'dataset'
      and not _is_cached(mean_image_path(config)) and _cached_rgb_pca_path(config) is None):
    both = _one_pass(config, mean=True, pca=True)
    _write(mean_image_path(config), both['mean'])
    _write(rgb_pca_path(config), both['pca'])
  return Statistics(mean=load_or_compute_mean_image(config), pca=load_or_compute_rgb_pca(config))
