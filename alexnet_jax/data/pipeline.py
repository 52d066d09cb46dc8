"""The tf.data streams: this process's batches of uint8 images, for training and evaluation.

What the host does per example is one (cropped) JPEG decode and one resize to the fixed
R x R square (R = input.resize_size; `decode`); random crops, flips, PCA lighting and the
mean subtraction run inside the jitted step (`augment.device_preprocess`), where they cost
next to nothing. Only `input.random_crop='resized'` (torchvision) crops on the host, because
its box decides which bytes to decode. Where the records come from is `sources`.

Determinism and resume: the training stream is a fixed function of (seed, process): epoch e
is the process's shard in an order shuffled with a seed derived from (seed, e), and batch k
holds stream positions [k B, (k+1) B). Resuming at step k skips k B records *before* they
are decoded (a file path for a folder, a serialized record for TFDS), so it costs reading,
not decoding. A record that fails to decode is skipped and its stream position is filled
with the next good example, so the batch boundaries of a resumed run stay those of an
uninterrupted one. Skips are never silent: a `SkipReport` counts them per split and epoch,
logs them (with the file names, for a folder source), and refuses a split of which more
than input.max_skipped_fraction is unreadable (`UnreadableImagesError`); the training loop
puts the counts in metrics.jsonl.

Decoded once: a folder source (local files) whose decoded images fit in
input.memory_cache_mb is decoded in one pass and kept in memory (`_DecodedImages`), and every
later stream over the same files (each training epoch, each evaluation, the statistics pass)
gathers from that copy instead of decoding again. The streams stay what they were: the same
seeded order, and an image that failed to decode is skipped where the stream meets it. The
copy is keyed by each file's path, size and modification time and by the decode settings, so
a changed file is decoded again. CIFAR-10's 45,000 training images take 138 MB.

dataset.name='synthetic' (no files, no decode) yields pre-made deterministic random uint8
images of input.resize_size with labels in range(model.num_classes); it measures the
training loop without the host input pipeline (`python -m benchmarks.step
--config=benchmarks/configs/step.py --config.loop=True`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import logging

from alexnet_jax.common.lazy_tf import tf, tfds  # imported on first use
from alexnet_jax.data import decode, sources

# dataset.name='synthetic': the number of eval batches, and of distinct pre-made batches the
# train iterator cycles through.
SYNTHETIC_EVAL_BATCHES = 2
_SYNTHETIC_DISTINCT_BATCHES = 4

class UnreadableImagesError(ValueError):
  """More of a split failed to decode than input.max_skipped_fraction allows."""


class SkipReport:
  """Images that failed to decode and were skipped, per (split, epoch); epoch None is an
  evaluation pass.

  Every skip is logged as the stream meets it (with the file names for a folder source),
  and each finished training epoch that had skips gets a summary line. `take_new(split)`
  is the count since its last call (the loop's metrics.jsonl rows). With `max_fraction`
  set, more than that fraction of a split (this process's part of it) unreadable in one
  epoch or pass raises UnreadableImagesError, naming the files it knows.
  """

  MAX_NAMES = 10

  def __init__(self, max_fraction: float | None = None):
    self.max_fraction = max_fraction
    self.counts: collections.Counter = collections.Counter()
    self.names: dict[tuple, list[str]] = collections.defaultdict(list)
    self._new: collections.Counter = collections.Counter()
    self._lock = threading.Lock()

  def add(self, split: str, epoch: int | None, total: int, count: int,
          names: Sequence[str] = ()) -> None:
    if count <= 0:
      return
    key = (split, epoch)
    with self._lock:
      self.counts[key] += count
      self._new[split] += count
      self.names[key].extend(names)
      so_far = self.counts[key]
    where = f'epoch {epoch}' if epoch is not None else 'evaluation pass'
    logging.warning('%d image(s) of split %r (%s) could not be decoded and were skipped '
                    '(%d of %d so far)%s', count, split, where, so_far, total,
                    _listing(names, self.MAX_NAMES))
    if self.max_fraction is not None and so_far > self.max_fraction * total:
      raise UnreadableImagesError(
          f'{so_far} of {total} images of split {split!r} ({where}) could not be decoded, '
          f'more than input.max_skipped_fraction={self.max_fraction:g} allows'
          f'{_listing(self.names[key], self.MAX_NAMES)}. Repair or remove them (or re-prepare '
          'the dataset), or allow more with --config.input.max_skipped_fraction=...')

  def end_epoch(self, split: str, epoch: int, total: int) -> None:
    n = self.counts.get((split, epoch), 0)
    if n:
      logging.warning('epoch %d of split %r: %d of %d images could not be decoded and were '
                      'skipped%s', epoch, split, n, total,
                      _listing(self.names[(split, epoch)], self.MAX_NAMES))

  def take_new(self, split: str) -> int:
    with self._lock:
      return self._new.pop(split, 0)

  def total(self, split: str) -> int:
    return sum(n for (s, _), n in self.counts.items() if s == split)


def _listing(names: Sequence[str], limit: int) -> str:
  if not names:
    return ''
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ': ' + ', '.join(names[:limit]) + more


# ------------------------------------------------------------------------------ shards


@dataclasses.dataclass(frozen=True)
class Shard:
  """One process's part of a split, in a fixed order, not yet decoded.

  records yields (item, label): item is the encoded image, or a file path when
  `is_path` (then the whole shard is cheap to shuffle in memory). `file_shuffled(seed)`, where
  set, is `records` with its record files in a seeded order (TFDS's shuffle_files, but with
  a seed per epoch).
  """
  records: tf.data.Dataset
  num_examples: int
  is_path: bool
  file_shuffled: Callable[[tf.Tensor], tf.data.Dataset] | None = None
  paths: tuple[str, ...] | None = None    # the records' files, in order (folder source)


def _shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
  return index * n // count, (index + 1) * n // count


def shard(config, split: str, process_index: int = 0, process_count: int = 1,
          listing: sources.FolderListing | None = None) -> Shard:
  """This process's part of `split` (folder or TFDS source, see `sources`), or of `listing`
  (files labelled elsewhere: `sources.labelled_folder`; then `split` only names it)."""
  if listing is not None or config.dataset.name == 'folder':
    paths, labels, _ = listing or sources.folder_listing(config.dataset.folder, split)
    lo, hi = _shard_bounds(len(paths), process_index, process_count)
    records = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths[lo:hi], tf.string), tf.constant(labels[lo:hi], tf.int32)))
    return Shard(records, hi - lo, is_path=True, paths=tuple(paths[lo:hi]))
  builder = sources.builder(config)
  part = tfds.even_splits(split, n=process_count)[process_index]
  n = builder.info.splits[part].num_examples
  ds = builder.as_dataset(
      split=part, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True))
  ds = ds.map(lambda ex: (ex['image'], tf.cast(ex['label'], tf.int32)))
  return Shard(ds, n, is_path=False, file_shuffled=_file_shuffler(builder, part))


def _file_shuffler(builder, shard):
  """Reads the shard's TFRecord files in an order shuffled by a (tensor) seed, as
  `as_dataset(shuffle_files=True)` does, but reproducible per epoch. At most 16 files and a
  quarter of them are interleaved at a time: interleaving them all would read every file's
  head first and make the file order moot."""
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    return None
  parts = [(fi.filename, fi.skip, fi.take if fi.take >= 0 else fi.examples_in_shard - fi.skip)
           for fi in builder.info.splits[shard].file_instructions]
  if len(parts) < 2:
    return None
  files, skips, takes = (tf.constant(list(x), dtype) for x, dtype in zip(
      zip(*parts, strict=True), (tf.string, tf.int64, tf.int64), strict=True))
  features = builder.info.features

  def parse(serialized):
    ex = features.deserialize_example(serialized,
                                      decoders={'image': tfds.decode.SkipDecoding()})
    return ex['image'], tf.cast(ex['label'], tf.int32)

  def records(seed):
    order = tf.data.Dataset.from_tensor_slices((files, skips, takes)).shuffle(
        len(parts), seed=seed)
    ds = order.interleave(
        lambda f, skip, take: tf.data.TFRecordDataset(f).skip(skip).take(take),
        cycle_length=max(1, min(16, len(parts) // 4)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    return ds.map(parse)

  return records


# ------------------------------------------------------------------------------ synthetic


def synthetic_batch(config, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """A deterministic random training batch of the host's image size: a function of
  (config.seed, seed)."""
  size = host_image_size(config, train=True)
  rng = np.random.default_rng([config.seed, seed])
  return {'image': rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
          'label': rng.integers(0, config.model.num_classes, batch_size, dtype=np.int32)}


def _synthetic_train(config, local_batch_size: int, start_step: int,
                     process_index: int) -> Iterator[dict[str, np.ndarray]]:
  """Endless pre-made batches (a few distinct ones, cycled): no per-step host work."""
  batches = [synthetic_batch(config, local_batch_size, 1000 * process_index + i)
             for i in range(_SYNTHETIC_DISTINCT_BATCHES)]
  step = start_step
  while True:
    yield batches[step % len(batches)]
    step += 1


def _synthetic_eval(config, local_batch_size: int,
                    process_index: int) -> Iterator[dict[str, np.ndarray]]:
  """SYNTHETIC_EVAL_BATCHES batches; the last one half padding (mask False)."""
  for i in range(SYNTHETIC_EVAL_BATCHES):
    batch = synthetic_batch(config, local_batch_size, 10_000 + 1000 * process_index + i)
    mask = np.ones(local_batch_size, bool)
    if i == SYNTHETIC_EVAL_BATCHES - 1:
      mask[local_batch_size // 2:] = False
      batch['image'][~mask] = 0
      batch['label'][~mask] = 0
    yield dict(batch, mask=mask)


# ------------------------------------------------------------------------------ decoding


def host_image_size(config, train: bool) -> int:
  """Side of the square uint8 images the host yields (the device takes its crops from them)."""
  if train and config.input.random_crop == 'resized':
    return config.model.input_size
  return config.input.resize_size


def _decode_fn(config, *, train: bool, seed_base: int, is_path: bool, size: int | None = None):
  size = size or host_image_size(config, train)
  resized = train and config.input.random_crop == 'resized'
  method, mode = config.input.resize_method, config.input.resize_mode

  def decode_one(index, item, label):
    data = tf.io.read_file(item) if is_path else item
    if resized:
      seed = tf.stack([tf.constant(seed_base, tf.int64), index])
      image = decode.decode_random_resized_crop(data, size, seed, method=method)
    else:
      image = decode.decode_resized(data, size, method, mode)
    image = tf.ensure_shape(image, [size, size, 3])
    return {'index': index, 'image': image, 'label': label}

  return decode_one


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # seeds fix the order; parallel map must not reorder
  options.experimental_optimization.map_parallelization = True
  options.experimental_optimization.inject_prefetch = True
  return options


def _seed_base(config, process_index: int, salt: int) -> int:
  return int(np.random.SeedSequence([config.seed, process_index, salt]).generate_state(
      1, np.uint32)[0])


# ------------------------------------------------------------------------------ decoded once


@dataclasses.dataclass(frozen=True)
class _Decoded:
  """A folder shard decoded once: images[i] is the shard's i-th file (zeros where ok[i] is
  False: that file failed to decode)."""
  images: np.ndarray      # uint8 [n, R, R, 3]
  ok: np.ndarray          # bool [n]


class _DecodedImages:
  """The decoded folder shards this process keeps in memory, at most `limit_mb` in all
  (input.memory_cache_mb); the least recently used go first."""

  def __init__(self):
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def clear(self) -> None:
    with self._lock:
      self._entries.clear()

  def get(self, config, src: Shard, *, train: bool) -> _Decoded | None:
    """The decoded shard, decoding it now if it is not kept yet; None where it is not to be
    kept (caching off, not a local folder, a host crop that differs per epoch, too big)."""
    limit = int(config.input.memory_cache_mb) * 2**20
    if limit <= 0 or not src.is_path or src.paths is None or not src.paths:
      return None
    if train and config.input.random_crop == 'resized':
      return None                      # the host crop is random: nothing to reuse
    size = host_image_size(config, train)
    nbytes = len(src.paths) * size * size * 3
    if nbytes > limit or any('://' in p for p in src.paths[:1]):
      return None
    try:
      stats = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, src.paths))
    except OSError:
      return None                      # a file gone: the stream reports it as it meets it
    key = (src.paths, stats, size, config.input.resize_method, config.input.resize_mode)
    with self._lock:
      if key in self._entries:
        self._entries.move_to_end(key)
        return self._entries[key]
    decoded = _decode_all(config, src, size)
    with self._lock:
      self._entries[key] = decoded
      total = sum(e.images.nbytes for e in self._entries.values())
      while total > limit and len(self._entries) > 1:
        _, old = self._entries.popitem(last=False)
        total -= old.images.nbytes
    return decoded


def _decode_all(config, src: Shard, size: int) -> _Decoded:
  start = time.perf_counter()
  n = src.num_examples
  images = np.zeros((n, size, size, 3), np.uint8)
  ok = np.zeros(n, bool)
  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(), src.records)
  ds = ds.map(lambda i, rec: (i, rec[0], rec[1]))
  ds = ds.map(_decode_fn(config, train=False, seed_base=0, is_path=True, size=size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors().map(lambda ex: (ex['index'], ex['image'])).batch(256)
  for index, image in ds.with_options(_options()).as_numpy_iterator():
    images[index] = image
    ok[index] = True
  logging.info('Decoded %d images (%s, %dx%d) into memory in %.1f s (%.0f MB%s); later '
               'passes over them read that copy (input.memory_cache_mb=%d).', n,
               os.path.dirname(os.path.dirname(src.paths[0])) or '.', size, size,
               time.perf_counter() - start, images.nbytes / 2**20,
               f'; {n - int(ok.sum())} unreadable' if not ok.all() else '',
               config.input.memory_cache_mb)
  return _Decoded(images, ok)


_DECODED = _DecodedImages()


def _cached_fn(decoded: _Decoded, src: Shard):
  """In place of `_decode_fn` for a decoded shard: (index, path, label) -> {'index', 'pos'
  (the file's position in the shard, where `_gather` finds its image), 'label'}; a file
  that failed to decode fails here too, so the stream skips it as it would have."""
  table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
      tf.constant(src.paths, tf.string), tf.range(len(src.paths), dtype=tf.int64)),
      default_value=-1)
  ok = tf.constant(decoded.ok)

  def lookup(index, item, label):
    pos = table.lookup(item)
    good = tf.gather(ok, tf.maximum(pos, 0)) & (pos >= 0)
    with tf.control_dependencies([tf.debugging.Assert(good, [item])]):
      pos = tf.identity(pos)
    return {'index': index, 'pos': pos, 'label': label}

  return lookup


def _gather(batch: dict, decoded: _Decoded | None) -> dict:
  """The batch with 'image' for 'pos' (a decoded shard's rows; -1: a padding example)."""
  if decoded is None:
    return batch
  pos = batch.pop('pos')
  image = decoded.images[np.maximum(pos, 0)]
  image[pos < 0] = 0
  batch['image'] = image
  return batch


# ------------------------------------------------------------------------------ iterators


def create_train_iterator(config, *, local_batch_size: int, start_step: int = 0,
                          process_index: int = 0, process_count: int = 1,
                          skips: SkipReport | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless {'image': uint8 [B, H, W, 3], 'label': int32 [B]} of this process's shard.

  H = W = input.resize_size (model.input_size with random_crop='resized'). Batch k is the
  same whatever `start_step` the iterator was created at. Undecodable images are recorded
  in `skips` (logged, and refused beyond its max_fraction) or, without one, only logged.
  """
  if config.dataset.name == sources.SYNTHETIC:
    return _synthetic_train(config, local_batch_size, start_step, process_index)
  src = shard(config, config.dataset.train_split, process_index, process_count)
  decoded = _DECODED.get(config, src, train=True)
  ds = train_dataset(config, local_batch_size=local_batch_size, start_step=start_step,
                     process_index=process_index, process_count=process_count, src=src,
                     decoded=decoded)
  names_at = None
  if src.is_path:
    order = _EpochOrder(src, _seed_base(config, process_index, 1))
    names_at = order.names
  return _train_numpy(ds, skips or SkipReport(), config.dataset.train_split, src.num_examples,
                      names_at, decoded)


def _train_numpy(ds: tf.data.Dataset, skips: SkipReport, split: str, n: int,
                 names_at: Callable[[int, list[int]], list[str]] | None,
                 decoded: _Decoded | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Numpy batches; the skipped stream positions (the `skipped` count before each good
  example's `index`) are reported per epoch, with their files where `names_at` knows them."""
  epoch_seen = None
  for batch in ds.as_numpy_iterator():
    skipped, index = batch.pop('skipped'), batch.pop('index')
    if skipped.any():
      by_epoch = collections.defaultdict(list)
      for i, k in zip(index.tolist(), skipped.tolist(), strict=True):
        for pos in range(i - k, i):
          by_epoch[pos // n].append(pos % n)
      for epoch, offsets in sorted(by_epoch.items()):
        names = names_at(epoch, offsets) if names_at else ()
        skips.add(split, epoch, n, len(offsets), names)
    last = int(index[-1]) // n
    if epoch_seen is not None:
      for epoch in range(epoch_seen, last):
        skips.end_epoch(split, epoch, n)
    epoch_seen = last
    yield _gather(batch, decoded)


class _EpochOrder:
  """The files of a folder shard in the order training epoch e reads them (the same
  seeded shuffle as `train_dataset`), computed only when a skip has to be named."""

  def __init__(self, src: Shard, epoch_seed: int):
    self.src, self.epoch_seed = src, epoch_seed
    self._cache: dict[int, list[str]] = {}

  def names(self, epoch: int, offsets: list[int]) -> list[str]:
    if epoch not in self._cache:
      self._cache.clear()
      seed = tf.constant(epoch * 1_000_003 + self.epoch_seed, tf.int64)
      ds = self.src.records.shuffle(self.src.num_examples, seed=seed,
                                    reshuffle_each_iteration=False)
      self._cache[epoch] = [p.decode() for p, _ in ds.as_numpy_iterator()]
    order = self._cache[epoch]
    return [order[o] for o in offsets]


def train_dataset(config, *, local_batch_size: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  src: Shard | None = None, decoded: _Decoded | None = None
                  ) -> tf.data.Dataset:
  """The tf.data pipeline behind `create_train_iterator`, with two extra int64 [B] entries:
  'index' (the stream position of each example) and 'skipped' (how many positions before
  it failed to decode and were filled by it). With `decoded` (the shard decoded once) the
  batches hold 'pos', each example's row of decoded.images, in place of 'image'."""
  src = src or shard(config, config.dataset.train_split, process_index, process_count)
  n = src.num_examples
  if n == 0:
    raise ValueError(f'process {process_index}/{process_count} has no training examples')
  start = start_step * local_batch_size
  start_epoch, offset = divmod(start, n)
  buffer = n if src.is_path else max(1, min(config.input.shuffle_buffer, n))
  epoch_seed = _seed_base(config, process_index, 1)
  def epoch(e):
    seed = e * 1_000_003 + epoch_seed
    records = src.file_shuffled(seed + 1) if src.file_shuffled else src.records
    return records.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch).skip(offset)
  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(start), ds)
  ds = ds.map(lambda i, rec: (i, rec[0], rec[1]))
  if decoded is not None:
    fn = _cached_fn(decoded, src)
  else:
    fn = _decode_fn(config, train=True, seed_base=_seed_base(config, process_index, 2),
                    is_path=src.is_path)
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()
  what = 'pos' if decoded is not None else 'image'

  # Fill the position of each skipped record with the next good example (see module doc).
  def gap(prev, ex):
    return ex['index'], (ex, ex['index'] - prev)

  def fill(ex, g):
    ex = {what: ex[what], 'label': ex['label'], 'index': ex['index']}
    first = tf.data.Dataset.from_tensors(dict(ex, skipped=g - 1))
    return first.concatenate(tf.data.Dataset.from_tensors(dict(ex, skipped=g * 0)).repeat(
        g - 1))

  ds = ds.scan(tf.constant(start - 1, tf.int64), gap).flat_map(fill)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.prefetch(max(1, config.input.prefetch))
  return ds.with_options(_options())


def eval_steps(config, split: str, global_batch_size: int,
               listing: sources.FolderListing | None = None) -> int:
  """Batches every process yields for `split` (or `listing`): each example once, in padded
  batches."""
  n = len(listing.paths) if listing is not None else sources.num_examples(config, split)
  return -(-n // global_batch_size)


def create_eval_iterator(config, split: str, *, local_batch_size: int, process_index: int = 0,
                         process_count: int = 1, skips: SkipReport | None = None,
                         listing: sources.FolderListing | None = None
                         ) -> Iterator[dict[str, np.ndarray]]:
  """One pass of {'image', 'label', 'mask'} batches over this process's part of `split`, or
  of `listing` where given (files and labels from elsewhere, e.g. `evaluate --folder`; the
  config then only decides the decode, and `split` names the pass in `skips`).

  Padding examples (mask False) fill the last batch, and whole masked batches make every
  process yield `eval_steps(config, split, local_batch_size * process_count)` batches.
  dataset.name='synthetic' yields only SYNTHETIC_EVAL_BATCHES batches (a smoke test of the
  eval path, not num_examples(split) of them). Undecodable images are recorded in `skips`
  (or only logged without one) when the pass ends.
  """
  if listing is None and config.dataset.name == sources.SYNTHETIC:
    sources.num_examples(config, split)  # refuses an unknown split
    return _synthetic_eval(config, local_batch_size, process_index)
  src = shard(config, split, process_index, process_count, listing)
  steps = eval_steps(config, split, local_batch_size * process_count, listing)
  size = host_image_size(config, train=False)
  decoded = _DECODED.get(config, src, train=False)
  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(), src.records)
  ds = ds.map(lambda i, rec: (i, rec[0], rec[1]))
  fn = (_cached_fn(decoded, src) if decoded is not None
        else _decode_fn(config, train=False, seed_base=0, is_path=src.is_path))
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()
  if decoded is not None:
    what, pad_value = 'pos', tf.constant(-1, tf.int64)
  else:
    what, pad_value = 'image', tf.zeros([size, size, 3], tf.uint8)
  ds = ds.map(lambda ex: {what: ex[what], 'label': ex['label'], 'mask': True,
                          'index': ex['index']})
  pad = tf.data.Dataset.from_tensors({what: pad_value,
                                      'label': tf.constant(0, tf.int32),
                                      'mask': False,
                                      'index': tf.constant(-1, tf.int64)}).repeat()
  ds = ds.concatenate(pad).take(steps * local_batch_size)
  ds = ds.batch(local_batch_size, drop_remainder=True).prefetch(max(1, config.input.prefetch))
  ds = ds.with_options(_options())
  return _eval_numpy(ds, src, split, skips or SkipReport(), decoded)


def _eval_numpy(ds: tf.data.Dataset, src: Shard, split: str,
                skips: SkipReport, decoded: _Decoded | None = None
                ) -> Iterator[dict[str, np.ndarray]]:
  seen = np.zeros(src.num_examples, bool)
  for batch in ds.as_numpy_iterator():
    index = batch.pop('index')
    seen[index[batch['mask']]] = True
    yield _gather(batch, decoded)
  missing = np.flatnonzero(~seen).tolist()
  names = [src.paths[i] for i in missing] if src.paths is not None else ()
  skips.add(split, None, src.num_examples, len(missing), names)


__all__ = ['Shard', 'SkipReport', 'UnreadableImagesError', 'create_eval_iterator',
           'create_train_iterator', 'eval_steps', 'host_image_size', 'shard',
           'synthetic_batch', 'train_dataset']
