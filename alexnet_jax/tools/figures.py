"""The paper's figures from any run: conv1's kernels (Figure 3), fc7 nearest neighbours
(Figure 4; a CIFAR-10 net's last hidden layer) and training-error curves of runs that
differ in one field (Figure 1 style).
The library of `alexnet_jax.figures`; matplotlib's Agg backend, no display needed.

Kernels. conv1's kernel of tower t is params['conv1']['kernel'][t]: (11, 11, 3, K/towers)
(a CIFAR-10 net's conv1, (5, 5, 3, K), is one tower).
Each kernel is contrast-normalised on its own to [0, 1] (its minimum over all pixels and
channels to 0, its maximum to 1) and drawn in a grid with one block of rows per tower
(`KERNEL_COLUMNS` kernels a row, `KERNEL_PAD` pixels between kernels, `TOWER_GAP` between
towers; `kernel_grid` returns where each kernel lies). The number per tower is its
*colour saturation*: per kernel, the mean over its 11 x 11 pixels of the standard deviation
across R, G, B of the normalised kernel; averaged over the tower's kernels. A grey kernel
(R = G = B everywhere) scores 0; the most a kernel can score is 0.47 (one channel at 1,
the others at 0). The paper's observation (section 6.1) is that one tower's kernels are
largely colour-agnostic and the other's colour-specific: a low and a high number.

Neighbours. A query's fc7 vector (after the ReLU, `nets.intermediates`) is compared with
every training image's by Euclidean distance; the 6 nearest (the paper's figure) are kept.
fc7 is AlexNet's last hidden layer, what its output layer reads; a CIFAR-10 net has no fc7,
and its counterpart is the same (`feature_layer`): what its output layer reads, flattened
(cifar10_conv_local: local4; cifar10_18pct: conv3 after its average pooling,
'conv3_avg'; cifar10_80sec: fc64).
The training split streams through one jitted function in batches sharded over the mesh's
'data' axis; a running top-k per query (distances, indices, labels and the images
themselves, on the devices) is merged with each batch, so no feature of the training split
is ever held on the host and the memory is the same for 10,000 or 1.28 million images.

Curves. Training error (1 - the logged running top-1 of the train records of
metrics.jsonl) against the epoch, one curve per run, each labelled by the config fields in
which the runs' config.json files differ; the first logged point at or below
`target_error` is marked (the paper's Figure 1 marks where 25% is reached).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from alexnet_jax.common import fields
from alexnet_jax.data import augment, pipeline
from alexnet_jax.model import cifar, nets
from alexnet_jax.tools import curves as plotting

KERNEL_COLUMNS = 16
KERNEL_PAD = 1           # pixels around each kernel
TOWER_GAP = 4            # extra pixels between the towers' blocks
NEIGHBOURS = 6           # the paper's Figure 4
PROGRESS_EVERY_S = 15.0


def _save(fig, out_path: str, dpi: int = 100) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(out_path)) or '.', exist_ok=True)
  fig.savefig(out_path, dpi=dpi, format='png', bbox_inches='tight', pad_inches=0.1)
  plotting.pyplot().close(fig)
  return out_path


# ------------------------------------------------------------------------------ kernels


def normalise_kernels(kernels: np.ndarray) -> np.ndarray:
  """(..., h, w, 3) kernels -> each contrast-normalised on its own to [0, 1] (a constant
  kernel -> 0.5 everywhere)."""
  k = np.asarray(kernels, np.float64)
  lo = k.min(axis=(-3, -2, -1), keepdims=True)
  hi = k.max(axis=(-3, -2, -1), keepdims=True)
  span = hi - lo
  return np.where(span > 0, (k - lo) / np.where(span > 0, span, 1.0), 0.5)


def colour_saturation(kernels: np.ndarray) -> np.ndarray:
  """(n, h, w, 3) kernels -> (n,): the mean over pixels of the std across R, G, B of each
  contrast-normalised kernel (0 for a grey kernel)."""
  return normalise_kernels(kernels).std(axis=-1).mean(axis=(-2, -1))


def conv1_kernels(params: dict) -> np.ndarray:
  """(towers, kernels per tower, 11, 11, 3) from params['conv1']['kernel'] (towers, 11, 11,
  3, kernels per tower), on the host; a CIFAR-10 net's (h, w, 3, n) is one tower."""
  k = np.asarray(jax.device_get(params['conv1']['kernel']), np.float32)
  if k.ndim == 4:
    k = k[None]
  if k.ndim != 5 or k.shape[3] != 3:
    raise ValueError(f"conv1 kernel of shape {k.shape}: expected (towers, h, w, 3, n)")
  return np.moveaxis(k, 4, 1)


@dataclasses.dataclass(frozen=True)
class KernelGrid:
  image: np.ndarray                    # float [H, W, 3] in [0, 1], background 1 (white)
  cells: dict[tuple[int, int], tuple[int, int]]   # (tower, kernel) -> (y, x) of its corner


def kernel_grid(kernels: np.ndarray, columns: int = KERNEL_COLUMNS) -> KernelGrid:
  """(towers, n, h, w, 3) kernels -> one image: tower t's block of rows = ceil(n / columns)
  rows below tower t-1's, kernel k of a tower at row k // c, column k % c, where
  c = ceil(n / rows) (24 kernels and columns=16: 2 rows of 12). Cell
  (t, k)'s corner is y = t (rows (h + pad) + gap) + (k // c)(h + pad) + pad,
  x = (k % c)(w + pad) + pad, with pad = KERNEL_PAD and gap = TOWER_GAP."""
  towers, n, h, w, _ = kernels.shape
  rows = math.ceil(n / columns)
  columns = math.ceil(n / rows)      # as few empty cells as the row count allows
  block = rows * (h + KERNEL_PAD) + TOWER_GAP
  height = towers * block - TOWER_GAP + KERNEL_PAD
  width = columns * (w + KERNEL_PAD) + KERNEL_PAD
  image = np.ones((height, width, 3))
  normalised = normalise_kernels(kernels)
  cells = {}
  for t in range(towers):
    for k in range(n):
      y = t * block + (k // columns) * (h + KERNEL_PAD) + KERNEL_PAD
      x = (k % columns) * (w + KERNEL_PAD) + KERNEL_PAD
      image[y:y + h, x:x + w] = normalised[t, k]
      cells[(t, k)] = (y, x)
  return KernelGrid(image, cells)


def plot_kernels(params: dict, out_path: str, *, title: str | None = None,
                 columns: int = KERNEL_COLUMNS) -> dict:
  """Draws conv1's kernels (Figure 3) into out_path; returns {'saturation': [per tower],
  'kernels_per_tower', 'kernel_shape'}."""
  kernels = conv1_kernels(params)
  towers, n = kernels.shape[:2]
  saturation = [float(colour_saturation(kernels[t]).mean()) for t in range(towers)]
  grid = kernel_grid(kernels, columns)
  plt = plotting.pyplot()
  height, width = grid.image.shape[:2]
  scale = 9.0 / width
  fig, ax = plt.subplots(figsize=(9.0, height * scale + 1.3))
  ax.imshow(grid.image, interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([])
  for t in range(towers):
    y0, _ = grid.cells[(t, 0)]
    ax.text(-1.5, y0 + kernels.shape[2] / 2, f'tower {t}', rotation=90, ha='right',
            va='center', fontsize=9)
  text = '   '.join(f'tower {t}: colour saturation {s:.3f}' for t, s in enumerate(saturation))
  ax.set_title((title + '\n' if title else '') + text, fontsize=10)
  fig.tight_layout()
  _save(fig, out_path)
  return {'saturation': saturation, 'kernels_per_tower': int(n),
          'kernel_shape': list(kernels.shape[2:]),
          'saturation_definition': 'per kernel: mean over pixels of the std across RGB of '
                                   'the kernel contrast-normalised to [0, 1]; mean over '
                                   "the tower's kernels"}


# ------------------------------------------------------------------------------ neighbours


def feature_layer(spec) -> str:
  """The `nets.intermediates` key whose output the neighbours compare: the last hidden
  layer, what the output layer reads. AlexNet: 'fc7' (after its ReLU). A CIFAR-10 net:
  the step before its output layer (a weight layer after its ReLU, or the pooling after
  one: 'local4', 'conv3_avg', 'fc64'), with the config's switches applied (`cifar.ops`)."""
  if spec.arch == 'alexnet':
    return 'fc7'
  key = last = None
  for op in cifar.ops(spec):
    if op.kind == 'fc' and not op.act:
      return key
    key = op.name or f'{last}_{op.kind}'
    last = op.name or last
  raise ValueError(f'model.arch={spec.arch!r} has no output layer')


def make_feature_fn(run) -> Callable:
  """jit(params, images uint8 [B, R, R, 3], mean) -> the `feature_layer` output, flattened,
  float32 [B, D] (fc7 after its ReLU for AlexNet): the evaluation's centre-crop
  preprocessing, then the model's intermediates."""
  config, spec = run.config, run.spec
  layer = feature_layer(spec)
  if int(config.input.eval_crops) != 1:
    raise ValueError(f'{layer} features are of the centre crop: load the run with crops=1')

  def features(params, images, mean):
    x = augment.device_preprocess(images, None, config=config, mean=mean, train=False)
    out = nets.intermediates(spec, params, x)[layer]
    return out.reshape(out.shape[0], -1).astype(jnp.float32)

  return jax.jit(features, in_shardings=(run.built.state_shardings.params, run.built.batch,
                                    run.built.replicated), out_shardings=run.built.batch)


def squared_distances(queries: jax.Array, feats: jax.Array) -> jax.Array:
  """[Q, D], [B, D] -> [Q, B] squared Euclidean distances (differences, not the expanded
  |q|^2 - 2 q.f + |f|^2, which cancels badly for near neighbours)."""
  return jnp.sum(jnp.square(queries[:, None, :] - feats[None, :, :]), axis=-1)


def init_top_k(queries: int, k: int, image_shape: tuple[int, ...]) -> dict:
  return {'dist': jnp.full((queries, k), jnp.inf, jnp.float32),
          'index': jnp.full((queries, k), -1, jnp.int32),
          'label': jnp.full((queries, k), -1, jnp.int32),
          'image': jnp.zeros((queries, k) + tuple(image_shape), jnp.uint8)}


def merge_top_k(best: dict, queries: jax.Array, feats: jax.Array, images: jax.Array,
                labels: jax.Array, mask: jax.Array, first_index: jax.Array) -> dict:
  """The running top-k per query merged with one batch (rows where mask is False never
  enter); the batch's rows are training images first_index, first_index + 1, ... A tie in
  distance keeps the earlier image."""
  k = best['dist'].shape[1]
  b = feats.shape[0]
  d = jnp.where(mask[None, :], squared_distances(queries, feats), jnp.inf)
  dist = jnp.concatenate([best['dist'], d], axis=1)                   # [Q, k + B]
  index = jnp.concatenate([best['index'], jnp.broadcast_to(
      first_index + jnp.arange(b, dtype=jnp.int32), (d.shape[0], b))], axis=1)
  # Sort by (distance, index): the earlier image wins a tie, whatever the batching.
  order = jnp.lexsort((index, dist), axis=1)[:, :k]
  take = lambda a: jnp.take_along_axis(a, order, axis=1)
  from_old = order < k
  new_rows = jnp.clip(order - k, 0, b - 1)
  old_rows = jnp.clip(order, 0, k - 1)
  pick_old = lambda a: jnp.take_along_axis(
      a, old_rows.reshape(old_rows.shape + (1,) * (a.ndim - 2)), axis=1)
  label = jnp.where(from_old, pick_old(best['label']), labels[new_rows])
  cond = from_old.reshape(from_old.shape + (1,) * (images.ndim - 1))
  image = jnp.where(cond, pick_old(best['image']), images[new_rows])
  return {'dist': take(dist), 'index': take(index), 'label': label, 'image': image}


@dataclasses.dataclass
class Neighbours:
  query_images: np.ndarray       # uint8 [Q, R, R, 3]
  query_labels: np.ndarray       # int [Q]
  query_indices: np.ndarray      # int [Q]: positions in the eval split
  images: np.ndarray             # uint8 [Q, k, R, R, 3]
  labels: np.ndarray             # int [Q, k]
  indices: np.ndarray            # int [Q, k]: positions in the training split's stream
  distances: np.ndarray          # float [Q, k]: Euclidean
  train_images: int              # how many training images were searched
  layer: str = 'fc7'             # the features compared (`feature_layer`)


def pick_queries(run, count: int, *, distinct: bool = True) -> tuple[np.ndarray, ...]:
  """(images, labels, indices) of `count` eval-split images: the first image of each of
  the first `count` classes met (distinct=True), or simply the first `count` images."""
  config = run.config
  it = pipeline.create_eval_iterator(config, config.dataset.eval_split,
                                           local_batch_size=run.batch_size)
  images, labels, indices, seen = [], [], [], set()
  position = 0
  for batch in it:
    for row in np.flatnonzero(batch['mask']):
      label = int(batch['label'][row])
      if not distinct or label not in seen:
        seen.add(label)
        images.append(batch['image'][row])
        labels.append(label)
        indices.append(position + int(row))
      if len(images) == count:
        break
    position += int(batch['mask'].sum())
    if len(images) == count:
      break
  if not images:
    raise ValueError(f'eval split {config.dataset.eval_split!r} is empty')
  return np.stack(images), np.asarray(labels), np.asarray(indices)


def train_batches(run, max_train: int | None):
  """Batches of the training split in its stored order (no augmentation, each image once,
  the last batch padded and masked), cut to the first `max_train` images."""
  config = run.config
  it = pipeline.create_eval_iterator(config, config.dataset.train_split,
                                           local_batch_size=run.batch_size)
  seen = 0
  for batch in it:
    mask = batch['mask'].copy()
    if max_train is not None:
      allowed = max(0, max_train - seen)
      real = np.flatnonzero(mask)
      mask[real[allowed:]] = False
    if not mask.any():
      if max_train is not None and seen >= max_train:
        return
      continue
    seen += int(mask.sum())
    yield dict(batch, mask=mask)


def _features(run, feature_fn: Callable, images: np.ndarray) -> np.ndarray:
  """The features of any number of images, in padded batches of run.batch_size (the
  compiled shape)."""
  out = []
  for start in range(0, len(images), run.batch_size):
    chunk = images[start:start + run.batch_size]
    padded = np.zeros((run.batch_size,) + images.shape[1:], np.uint8)
    padded[:len(chunk)] = chunk
    out.append(np.asarray(jax.device_get(feature_fn(run.params, run.put(padded), run.mean)))
               [:len(chunk)])
  return np.concatenate(out)


def find_neighbours(run, query_images: np.ndarray, query_labels: Sequence[int], *,
                    query_indices: Sequence[int] | None = None, k: int = NEIGHBOURS,
                    max_train: int | None = None, batches=None,
                    feature_fn: Callable | None = None) -> Neighbours:
  """The k training images nearest to each query in fc7 space (a CIFAR-10 net's: its last
  hidden layer's, `feature_layer`; see the module doc).

  `batches` (default `train_batches(run, max_train)`) yields {'image', 'label', 'mask'} of
  run.batch_size rows; the training images are numbered by their row in that stream
  (padding rows included, which never win).
  """
  feature_fn = feature_fn or make_feature_fn(run)
  layer = feature_layer(run.spec)
  replicated = run.built.replicated
  batches = batches if batches is not None else train_batches(run, max_train)
  with jax.set_mesh(run.mesh):
    queries = jax.device_put(_features(run, feature_fn, np.asarray(query_images, np.uint8)),
                             replicated)
    best = jax.device_put(init_top_k(queries.shape[0], k, query_images.shape[1:]), replicated)
    merge = jax.jit(merge_top_k, out_shardings=replicated)
    start = last = time.time()
    seen = searched = 0
    for batch in batches:
      feats = feature_fn(run.params, run.put(batch['image']), run.mean)
      mask = np.asarray(batch['mask'])
      best = merge(best, queries, feats, run.put(batch['image']),
                   run.put(np.asarray(batch['label'], np.int32)), run.put(mask),
                   jnp.int32(seen))
      seen += len(mask)
      searched += int(mask.sum())
      if time.time() - last > PROGRESS_EVERY_S:
        last = time.time()
        logging.info('%s neighbours: %d training images searched (%.0f img/s)', layer,
                     searched, searched / (last - start))
    best = jax.device_get(best)
  found = int(np.sum(np.isfinite(best['dist'][0])))
  if found < k:
    raise ValueError(f'only {found} training images searched: need at least {k}')
  return Neighbours(query_images=np.asarray(query_images),
                    query_labels=np.asarray(query_labels),
                    query_indices=None if query_indices is None else np.asarray(query_indices),
                    images=best['image'], labels=best['label'], indices=best['index'],
                    distances=np.sqrt(best['dist']), train_images=searched, layer=layer)


def plot_neighbours(nb: Neighbours, class_names: Sequence[str], out_path: str, *,
                    title: str | None = None) -> str:
  """Figure 4: one row per query, the query first (framed), then its neighbours, nearest
  first; each titled with its class (green: the query's class, red: another) and distance."""
  plt = plotting.pyplot()
  q, k = nb.labels.shape
  fig, axes = plt.subplots(q, k + 1, figsize=(1.6 * (k + 1), 1.75 * q + 0.6), squeeze=False)

  def name(label):
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)

  for i in range(q):
    row = axes[i]
    row[0].imshow(nb.query_images[i])
    row[0].set_title(f'query: {name(nb.query_labels[i])}', fontsize=8, fontweight='bold')
    for spine in row[0].spines.values():
      spine.set_edgecolor('black')
      spine.set_linewidth(2.5)
    for j in range(k):
      ax = row[j + 1]
      ax.imshow(nb.images[i, j])
      same = int(nb.labels[i, j]) == int(nb.query_labels[i])
      ax.set_title(f'{name(nb.labels[i, j])}\nd={nb.distances[i, j]:.3g}', fontsize=7,
                   color='green' if same else 'red')
    for ax in row:
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle((title + '\n' if title else '') +
               f'nearest training images in {nb.layer} space ({nb.train_images} searched)',
               fontsize=10)
  fig.tight_layout()
  # Photos do not compress: a lower resolution keeps the PNG a few hundred kB.
  return _save(fig, out_path, dpi=64)


# ------------------------------------------------------------------------------ curves


_MISSING = '<unset>'


def differing_fields(configs: Sequence[dict], ignore: Sequence[str] = ()) -> list[str]:
  """The dotted config fields whose value is not the same in all `configs`, sorted."""
  flat = [fields.flatten(c) for c in configs]
  keys = sorted(set().union(*flat)) if flat else []
  return [k for k in keys if k not in ignore
          and len({json.dumps(f.get(k, _MISSING), sort_keys=True) for f in flat}) > 1]


def _short(value: Any) -> str:
  if isinstance(value, list | tuple):
    return '(' + ','.join(_short(v) for v in value) + ')'
  if isinstance(value, float):
    return f'{value:g}'
  return str(value)


def run_labels(configs: Sequence[dict], fallback: Sequence[str]) -> tuple[list[str], list[str]]:
  """(labels, fields): each run's `field=value` for the fields in which the runs differ
  (', '-joined), or `fallback[i]` when they differ in none."""
  names = differing_fields(configs)
  if not names:
    return list(fallback), []
  labels = []
  for c in configs:
    flat = fields.flatten(c)
    labels.append(', '.join(f'{f}={_short(flat.get(f, _MISSING))}' for f in names))
  return labels, names


def training_error(records: Sequence[dict]) -> tuple[list[float], list[float]]:
  """(epochs, errors) of the train records: epoch (their `epoch` field, else step / the
  run's steps per epoch) and 1 - top1, sorted by step (a replayed step: the later record)."""
  steps, top1 = plotting.split_series(records, 'train', 'top1')
  per_epoch = plotting.steps_per_epoch(records)
  if per_epoch is None:
    raise ValueError('the train records have no epoch field: cannot place them on epochs')
  return [s / per_epoch for s in steps], [1.0 - t for t in top1]


def first_reaching(epochs: Sequence[float], errors: Sequence[float],
                   target: float) -> float | None:
  """The epoch of the first point whose error is at or below `target` (None: never)."""
  for e, err in zip(epochs, errors, strict=True):
    if err <= target:
      return float(e)
  return None


def find_runs(paths: Sequence[str]) -> list[str]:
  """Each path that holds a metrics.jsonl, or, for a folder that does not (a sweep root of
  experiments/ablations.py), every folder below it that does, sorted."""
  from alexnet_jax.run import workdir as workdir_lib
  out = []
  for p in paths:
    if workdir_lib.is_run(p):
      out.append(p)
      continue
    if not os.path.isdir(p):
      raise FileNotFoundError(f'{p!r} is not a directory')
    found = sorted(root for root, _, _ in os.walk(p) if workdir_lib.is_run(root))
    if not found:
      raise FileNotFoundError(f'no metrics.jsonl in or under {p!r}: pass run workdirs or a '
                              'sweep root of experiments/ablations.py')
    out.extend(found)
  return out


def curves_data(workdirs: Sequence[str], target_error: float,
                labels: Sequence[str] | None = None) -> dict:
  """What the curves figure shows: per run its label (`labels`, default: the config fields
  the runs differ in), epochs, training errors and the epoch it first reaches
  target_error."""
  from alexnet_jax.run import workdir as workdir_lib
  from alexnet_jax.tools import curves as plotting
  configs = []
  for w in workdirs:
    try:
      configs.append(workdir_lib.read_config(w))
    except FileNotFoundError:
      configs.append({})
  names = plotting.default_labels(workdirs)
  auto, fields = run_labels(configs, names)
  if labels is not None and len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} workdirs')
  labels = list(labels) if labels is not None else auto
  runs = []
  for w, label, name in zip(workdirs, labels, names, strict=True):
    epochs, errors = training_error(plotting.read_metrics(w))
    runs.append({'run': name, 'label': label, 'epochs': epochs, 'errors': errors,
                 'first_epoch_at_target': first_reaching(epochs, errors, target_error)})
  return {'target_error': target_error, 'differing_fields': fields, 'runs': runs}


def plot_curves(data: dict, out_path: str, *, title: str | None = None) -> str:
  """Figure 1 style: training error against epochs, one curve per run, a dashed line at
  the target and a marker (with its epoch) where each run first reaches it."""
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 5))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  target = data['target_error']
  for i, r in enumerate(data['runs']):
    color = colors[i % len(colors)]
    hit = r['first_epoch_at_target']
    reach = f'reaches {target:.0%} at epoch {hit:.2f}' if hit is not None else \
        f'never reaches {target:.0%}'
    ax.plot(r['epochs'], r['errors'], color=color, linewidth=1.5,
            label=f'{r["label"]} ({reach})')
    if hit is not None:
      err = r['errors'][r['epochs'].index(hit)]
      ax.plot([hit], [err], marker='o', markersize=9, markerfacecolor='none',
              markeredgecolor=color, markeredgewidth=2)
      ax.axvline(hit, color=color, linestyle=':', linewidth=1)
  ax.axhline(target, color='grey', linestyle='--', linewidth=1)
  ax.set_xlabel('epoch')
  ax.set_ylabel('training error rate (1 - running top-1)')
  ax.set_ylim(0, 1)
  ax.grid(True, alpha=0.3)
  ax.legend(loc='upper right', fontsize='small')
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, out_path)
