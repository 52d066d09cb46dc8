"""Classifying image files with a trained run: the library of `alexnet_jax.predict`.

What a prediction goes through is the run's own evaluation path, rebuilt from its
config.json: the host decodes each file with `decode.decode_resized` (shorter side to
input.resize_size and the centre square, or with input.resize_mode='squash' both sides to
input.resize_size, as Caffe; grayscale, CMYK and PNG/GIF/BMP/WebP come out RGB,
whatever the file's extension says), and the jitted `steps.eval_logits` takes the centre
crop (or the paper's 10 crops), subtracts the run's mean, applies input.scale and runs the
model; the class probabilities are the softmax (10 crops: the softmax averaged over the
crops, `steps.ten_crop_scores`), as `evaluate` ranks them.

Files stream through tf.data in fixed-size batches (the last one padded), sharded over the
mesh's 'data' axis like the evaluation: one compiled function for a whole folder. A file
that cannot be read or decoded becomes a `Prediction` with its error, and the others are
still classified.

Class names: a 1000-class ImageNet run takes them from the table shipped in the package
(`data/imagenet_classes.tsv`: index, WordNet synset, name, in the sorted-synset order of
TFDS imagenet2012 and torchvision); any other dataset from its own label names (the TFDS
builder's `features['label'].names`, a folder dataset's class folders), a synset among them
named from the same table.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax.common.lazy_tf import tf  # imported on first use
from alexnet_jax.data import decode, pipeline, sources
from alexnet_jax.data.classes import ClassInfo
from alexnet_jax.model import steps
from alexnet_jax.run import workdir as workdir_lib

DEFAULT_BATCH = 64
PROGRESS_EVERY_S = 10.0


# ------------------------------------------------------------------------------ the run


def load_run(workdir: str, *, checkpoint: str = workdir_lib.DEFAULT_CHECKPOINT,
             batch_size: int | None = None, crops: int = 1) -> workdir_lib.Run:
  """`workdir.load_run` for inference: one process (its local devices), batches of
  `batch_size` (default DEFAULT_BATCH) rounded up to a multiple of the devices."""
  if jax.process_count() != 1:
    raise ValueError('inference runs in one process (its local devices); got '
                     f'{jax.process_count()} processes')
  return workdir_lib.load_run(workdir, checkpoint=checkpoint,
                              batch_size=batch_size or DEFAULT_BATCH, crops=crops)


def make_probabilities_fn(run: workdir_lib.Run) -> Callable:
  """jit(params, images uint8 [B, R, R, 3], mean) -> class probabilities float32 [B, C]:
  the evaluation's forward pass (`steps.eval_logits`), then the softmax, or with 10 crops
  the softmax averaged over the crops. One compiled program per batch shape."""
  config, spec = run.config, run.spec

  def probabilities(params, images, mean):
    logits = steps.eval_logits(config, spec, params, images, mean)
    if logits.ndim == 3:
      return steps.ten_crop_scores(logits)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  shardings = run.built.state_shardings.params
  return jax.jit(probabilities, in_shardings=(shardings, run.built.batch, run.built.replicated),
                 out_shardings=run.built.replicated)


# ------------------------------------------------------------------------------ files


def list_images(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
  """(files, missing): each input that is a file as given (whatever its extension), each
  folder's images found recursively (extension in sources.IMAGE_EXTENSIONS, any case;
  hidden files and folders skipped), sorted per folder; inputs that do not exist."""
  files, missing = [], []
  for item in inputs:
    if os.path.isfile(item):
      files.append(item)
    elif os.path.isdir(item):
      found = []
      for root, dirs, names in os.walk(item):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found.extend(os.path.join(root, n) for n in names
                     if not n.startswith('.') and n.lower().endswith(sources.IMAGE_EXTENSIONS))
      files.extend(sorted(found))
    else:
      missing.append(item)
  return files, missing


def _decode_one(config: ml_collections.ConfigDict):
  size = pipeline.host_image_size(config, train=False)
  method, mode = config.input.resize_method, config.input.resize_mode

  def decode_file(index, path):
    image = decode.decode_resized(tf.io.read_file(path), size, method, mode)
    return index, tf.ensure_shape(image, [size, size, 3])

  return decode_file


def decode_error(config: ml_collections.ConfigDict, path: str) -> str:
  """Why `path` does not decode (the decoder's own message), or '' when it does."""
  if not os.path.isfile(path):
    return 'no such file'
  try:
    _decode_one(config)(tf.constant(0, tf.int64), tf.constant(path))
  except tf.errors.OpError as e:
    # "{{function_node ...}} Unknown image file format. ... [Op:DecodeImage] name:" -> the
    # decoder's sentence alone.
    text = re.sub(r'\{\{[^}]*\}\}|\[Op:[^\]]*\]( name:.*)?', '', e.message)
    return 'cannot be decoded as an image: ' + (' '.join(text.split())[:300]
                                                 or type(e).__name__)
  except Exception as e:  # noqa: BLE001 - reported per file, never fatal
    return ' '.join(str(e).split())[:300] or type(e).__name__
  return ''


@dataclasses.dataclass
class HostBatch:
  images: np.ndarray            # uint8 [B, R, R, 3], padding rows zero
  indices: list[int]            # positions in the file list of the real rows (rows 0..n-1)
  failed: list[int]             # positions that failed to decode since the last batch


def host_batches(config: ml_collections.ConfigDict, paths: Sequence[str],
                 batch_size: int) -> Iterator[HostBatch]:
  """The files decoded in parallel (tf.data, order kept), in batches of exactly
  `batch_size` rows (the last one zero-padded); undecodable files are left out of the
  batches and named in `failed`."""
  size = pipeline.host_image_size(config, train=False)
  if not paths:
    return
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string)).enumerate()
  ds = ds.map(_decode_one(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors().batch(batch_size).prefetch(2)
  expected = 0
  for index, images in ds.as_numpy_iterator():
    index = index.tolist()
    good = set(index)
    failed = [i for i in range(expected, index[-1] + 1) if i not in good]
    expected = index[-1] + 1
    padded = np.zeros((batch_size, size, size, 3), np.uint8)
    padded[:len(index)] = images
    yield HostBatch(padded, index, failed)
  if expected < len(paths):
    yield HostBatch(np.zeros((0, size, size, 3), np.uint8), [], list(range(expected, len(paths))))


# ------------------------------------------------------------------------------ predicting


@dataclasses.dataclass
class Prediction:
  file: str
  probabilities: np.ndarray | None = None      # float32 [classes]
  error: str | None = None

  def top(self, k: int) -> list[tuple[int, float]]:
    """The k most probable classes, (index, probability), most probable first (ties: the
    lower index first)."""
    p = self.probabilities
    order = np.lexsort((np.arange(p.shape[0]), -p))[:k]
    return [(int(i), float(p[i])) for i in order]


class Progress:
  """A progress line on stderr: redrawn in place on a terminal, otherwise one line every
  PROGRESS_EVERY_S seconds; nothing for a run shorter than that."""

  def __init__(self, total: int, stream=None, every_s: float = PROGRESS_EVERY_S):
    self.total, self.stream, self.every_s = total, stream or sys.stderr, every_s
    self.start = self.last = time.time()
    self.shown = False
    self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())

  def update(self, done: int, failed: int) -> None:
    now = time.time()
    final = done >= self.total
    if not final and now - self.last < (0.5 if self.tty else self.every_s):
      return
    if final and not self.shown and now - self.start < self.every_s:
      return
    self.last, self.shown = now, True
    rate = done / max(now - self.start, 1e-9)
    width = 30
    bar = '#' * int(width * done / max(self.total, 1))
    text = (f'[{bar:<{width}}] {done}/{self.total} images, {failed} failed, '
            f'{rate:.0f} img/s')
    if self.tty:
      self.stream.write('\r' + text + ('\n' if final else ''))
    else:
      self.stream.write(text + '\n')
    self.stream.flush()


def predict_files(run: workdir_lib.Run, paths: Sequence[str], *, fn: Callable | None = None,
                  progress: bool = True, keep: bool = True,
                  on_result: Callable[[Prediction], None] | None = None) -> list[Prediction]:
  """One Prediction per path, in order: probabilities, or the reason it failed.

  `fn` is `make_probabilities_fn(run)` (made here if not given; pass one to reuse its
  compiled program); `on_result` sees each Prediction as soon as it is known. With
  keep=False nothing is kept (returns []): memory stays flat however many files stream
  through, and `on_result` keeps what it needs (the command: the top-k).
  """
  fn = fn or make_probabilities_fn(run)
  results: list[Prediction | None] = [None] * len(paths) if keep else []
  meter = Progress(len(paths)) if progress else None
  done = failed_count = 0

  def finish(i: int, p: Prediction) -> None:
    if keep:
      results[i] = p
    if on_result:
      on_result(p)

  with jax.set_mesh(run.mesh):
    for batch in host_batches(run.config, paths, run.batch_size):
      ready = [(i, Prediction(paths[i], error=decode_error(run.config, paths[i])
                              or 'could not be decoded')) for i in batch.failed]
      if batch.indices:
        probs = np.asarray(jax.device_get(fn(run.params, run.put(batch.images), run.mean)))
        ready += [(i, Prediction(paths[i], probabilities=probs[row]))
                  for row, i in enumerate(batch.indices)]
      for i, p in sorted(ready, key=lambda x: x[0]):       # in the order of `paths`
        finish(i, p)
      failed_count += len(batch.failed)
      done += len(ready)
      if meter:
        meter.update(done, failed_count)
  return [r for r in results if r is not None]


def to_json(p: Prediction, classes: Sequence[ClassInfo], k: int) -> dict:
  """{'file', 'top': [{'index', 'label', 'name', 'prob'}]} or {'file', 'error'}."""
  if p.error is not None:
    return {'file': p.file, 'error': p.error}
  return {'file': p.file, 'top': [{'index': i, 'label': classes[i].label,
                                   'name': classes[i].name, 'prob': prob}
                                  for i, prob in p.top(k)]}


def format_text(p: Prediction, classes: Sequence[ClassInfo], k: int) -> str:
  """The human-readable block of one prediction (an error goes to stderr instead)."""
  lines = [p.file]
  for i, prob in p.top(k):
    c = classes[i]
    label = f'{c.label}  ' if c.label != c.name and c.label != str(i) else ''
    lines.append(f'  {100 * prob:6.2f}%  {i:>4}  {label}{c.name}')
  return '\n'.join(lines)
