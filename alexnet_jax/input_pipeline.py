"""TFDS / image-folder -> tf.data -> numpy batches.

What the host does per example is one (cropped) JPEG decode and one resize to the fixed
R x R square (R = input.resize_size; `decode`); random crops, flips, PCA lighting and the
mean subtraction run inside the jitted step (`augment.device_preprocess`), where they cost
next to nothing. Only `input.random_crop='resized'` (torchvision) crops on the host, because its
box decides which bytes to decode.

Determinism and resume: the training stream is a fixed function of (seed, process): epoch e
is the process's shard in an order shuffled with a seed derived from (seed, e), and batch k
holds stream positions [k B, (k+1) B). Resuming at step k skips k B records *before* they
are decoded (a file path for a folder, a serialized record for TFDS), so it costs reading,
not decoding. A record that fails to decode is skipped, counted (`skipped_examples()`), and
its stream position is filled with the next good example, so the batch boundaries of a
resumed run stay those of an uninterrupted one.

Sources (`config.dataset.name`): 'alexnet_shapes' (built offline on first use), any prepared
TFDS image-classification dataset in `dataset.data_dir`, or 'folder' (class sub-folders of
images under `dataset.folder`). With `input.use_preresized` the TFDS dataset
f'{name}_resized{resize_size}' written by `alexnet_jax.prepare` is read instead.
'synthetic' (no files, no decode) yields pre-made deterministic random uint8 images of
input.resize_size with labels in range(model.num_classes), ImageNet-sized splits (see
SYNTHETIC_EXAMPLES); it measures the training loop without the host input pipeline
(`python -m alexnet_jax.benchmark step --loop`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import decode

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# A folder without split sub-folders: this fraction of each class (chosen by a hash of the
# file's relative path, so stable when files are added) is the validation split.
FOLDER_HOLDOUT_PERCENT = 10
FOLDER_EVAL_SPLITS = ('validation', 'val', 'test')
STATS_DIR = 'alexnet_jax_stats'
# dataset.name='synthetic': examples per split (ILSVRC-2012's sizes) and the number of
# distinct pre-made batches the train iterator cycles through.
SYNTHETIC = 'synthetic'
SYNTHETIC_EXAMPLES = {'train': 1_281_167, 'validation': 50_000}
SYNTHETIC_EVAL_BATCHES = 2
_SYNTHETIC_DISTINCT_BATCHES = 4

_skipped = 0
_skipped_lock = threading.Lock()


def skipped_examples() -> int:
  """Examples dropped so far in this process because their image failed to decode."""
  return _skipped


def _add_skipped(n: int) -> None:
  global _skipped
  if n:
    with _skipped_lock:
      _skipped += int(n)


# ------------------------------------------------------------------------------ sources


@dataclasses.dataclass(frozen=True)
class _Source:
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


def data_dir(config) -> str:
  """config.dataset.data_dir, or TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return config.dataset.data_dir or os.path.expanduser(tfds.core.constants.DATA_DIR)


def _shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
  return index * n // count, (index + 1) * n // count


@functools.lru_cache(maxsize=16)
def _folder_listing(root: str, split: str) -> tuple[tuple[str, ...], tuple[int, ...],
                                                     tuple[str, ...]]:
  """(paths, labels, class names) of a folder split, sorted: identical on every process."""

  def classes_in(d):
    return sorted(c for c in tf.io.gfile.listdir(d)
                  if tf.io.gfile.isdir(os.path.join(d, c.rstrip('/'))))

  def images_in(d):
    return sorted(f for f in tf.io.gfile.listdir(d)
                  if f.lower().endswith(IMAGE_EXTENSIONS))

  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(f"dataset.folder={root!r} is not a directory (dataset.name="
                            "'folder' needs class sub-folders of images, optionally under "
                            "'train'/'validation')")
  has_splits = tf.io.gfile.isdir(os.path.join(root, 'train'))
  if has_splits:
    classes = [c.rstrip('/') for c in classes_in(os.path.join(root, 'train'))]
    split_dir = os.path.join(root, split)
    if not tf.io.gfile.isdir(split_dir):
      raise FileNotFoundError(f'split {split!r}: no folder {split_dir}')
  else:
    classes = [c.rstrip('/') for c in classes_in(root)]
    split_dir = root
  if not classes:
    raise FileNotFoundError(f'no class sub-folders in {root}')
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    if has_splits and not tf.io.gfile.isdir(class_dir):
      continue
    for f in images_in(class_dir):
      if not has_splits:
        held_out = zlib.crc32(f'{name}/{f}'.encode()) % 100 < FOLDER_HOLDOUT_PERCENT
        if held_out != (split in FOLDER_EVAL_SPLITS):
          continue
      paths.append(os.path.join(class_dir, f))
      labels.append(label)
  if has_splits:
    unknown = set(c.rstrip('/') for c in classes_in(split_dir)) - set(classes)
    if unknown:
      raise ValueError(f'classes {sorted(unknown)} of {split_dir} are not in the train split')
  return tuple(paths), tuple(labels), tuple(classes)


def _missing_dataset_error(name: str, ddir: str, base_name: str,
                           use_preresized: bool) -> FileNotFoundError:
  if base_name == 'imagenet2012':
    how = ('Put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual dir and '
           'run: python -m alexnet_jax.prepare --config=configs/paper.py '
           f'--config.dataset.data_dir={ddir} --config.dataset.manual_dir=DIR'
           + (' --preresized' if use_preresized else ''))
  elif use_preresized:
    how = ('Write the pre-resized copy with: python -m alexnet_jax.prepare '
           f'--config.dataset.name={base_name} --config.dataset.data_dir={ddir} '
           '--preresized, or set --config.input.use_preresized=False')
  else:
    how = (f'Prepare it on a machine with internet access: tfds build {name} '
           f'--data_dir={ddir} (then copy the folder here), or use '
           "--config.dataset.name=alexnet_shapes (built-in, offline) or "
           "--config.dataset.name=folder --config.dataset.folder=DIR")
  return FileNotFoundError(f'TFDS dataset {name!r} is not prepared in data_dir {ddir} and '
                           f'is never downloaded at run time. {how}')


@functools.lru_cache(maxsize=16)
def _tfds_builder(name: str, ddir: str, resize_size: int, use_preresized: bool,
                  manual_dir: str | None, shapes: tuple[int, int, int]):
  base_name = name
  if use_preresized:
    name = f'{name}_resized{resize_size}'
  if name == 'alexnet_shapes':
    from alexnet_jax.datasets import shapes as shapes_lib
    size, train, validation = shapes
    builder = shapes_lib.builder(ddir, image_size=size, train_size=train,
                                 validation_size=validation)
    if not builder.is_prepared():
      builder.download_and_prepare()
    return builder
  try:
    builder = tfds.builder(name, data_dir=ddir)
  except tfds.core.registered.DatasetNotFoundError:
    # Unregistered names (the pre-resized copy) are read from their files.
    path = os.path.join(ddir, name)
    versions = (sorted(tf.io.gfile.listdir(path), key=_version_key)
                if tf.io.gfile.isdir(path) else [])
    versions = [v.rstrip('/') for v in versions
                if tf.io.gfile.exists(os.path.join(path, v.rstrip('/'), 'dataset_info.json'))]
    if not versions:
      raise _missing_dataset_error(name, ddir, base_name, use_preresized) from None
    return tfds.builder_from_directory(os.path.join(path, versions[-1]))
  if not builder.is_prepared():
    if name == 'imagenet2012' and manual_dir and tf.io.gfile.isdir(manual_dir):
      # Building from the manual archives needs no network: allowed, if slow (hours).
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    else:
      raise _missing_dataset_error(name, ddir, base_name, use_preresized)
  return builder


def _version_key(v: str):
  return tuple(int(p) if p.isdigit() else -1 for p in v.rstrip('/').split('.'))


def _builder(config):
  d = config.dataset
  return _tfds_builder(d.name, data_dir(config), config.input.resize_size,
                       bool(config.input.use_preresized), d.manual_dir,
                       (d.shapes_image_size, d.shapes_train_size, d.shapes_validation_size))


def _source(config, split: str, process_index: int, process_count: int) -> _Source:
  if config.dataset.name == 'folder':
    paths, labels, _ = _folder_listing(config.dataset.folder, split)
    lo, hi = _shard_bounds(len(paths), process_index, process_count)
    records = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths[lo:hi], tf.string), tf.constant(labels[lo:hi], tf.int32)))
    return _Source(records, hi - lo, is_path=True)
  builder = _builder(config)
  shard = tfds.even_splits(split, n=process_count)[process_index]
  n = builder.info.splits[shard].num_examples
  ds = builder.as_dataset(
      split=shard, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True))
  ds = ds.map(lambda ex: (ex['image'], tf.cast(ex['label'], tf.int32)))
  return _Source(ds, n, is_path=False, file_shuffled=_file_shuffler(builder, shard))


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


def num_examples(config, split: str) -> int:
  """Examples in `split` over all processes (before any corrupt one is skipped)."""
  if config.dataset.name == SYNTHETIC:
    return _synthetic_split_size(split)
  if config.dataset.name == 'folder':
    return len(_folder_listing(config.dataset.folder, split)[0])
  return _builder(config).info.splits[split].num_examples


def num_classes(config) -> int:
  if config.dataset.name == SYNTHETIC:
    return int(config.model.num_classes)
  if config.dataset.name == 'folder':
    return len(_folder_listing(config.dataset.folder, config.dataset.train_split)[2])
  return _builder(config).info.features['label'].num_classes


# ------------------------------------------------------------------------------ synthetic


def _synthetic_split_size(split: str) -> int:
  base = split.split('[')[0]
  if base not in SYNTHETIC_EXAMPLES:
    raise ValueError(f'dataset.name={SYNTHETIC!r} has splits {sorted(SYNTHETIC_EXAMPLES)}; '
                     f'got {split!r}')
  return SYNTHETIC_EXAMPLES[base]


def _synthetic_batch(config, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  size = host_image_size(config, train=True)
  rng = np.random.default_rng([config.seed, seed])
  return {'image': rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
          'label': rng.integers(0, config.model.num_classes, batch_size, dtype=np.int32)}


def _synthetic_train(config, local_batch_size: int, start_step: int,
                     process_index: int) -> Iterator[dict[str, np.ndarray]]:
  """Endless pre-made batches (a few distinct ones, cycled): no per-step host work."""
  batches = [_synthetic_batch(config, local_batch_size, 1000 * process_index + i)
             for i in range(_SYNTHETIC_DISTINCT_BATCHES)]
  step = start_step
  while True:
    yield batches[step % len(batches)]
    step += 1


def _synthetic_eval(config, local_batch_size: int,
                    process_index: int) -> Iterator[dict[str, np.ndarray]]:
  """SYNTHETIC_EVAL_BATCHES batches; the last one half padding (mask False)."""
  for i in range(SYNTHETIC_EVAL_BATCHES):
    batch = _synthetic_batch(config, local_batch_size, 10_000 + 1000 * process_index + i)
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


def _decode_fn(config, *, train: bool, seed_base: int, is_path: bool):
  size = host_image_size(config, train)
  resized = train and config.input.random_crop == 'resized'
  method = config.input.resize_method

  def decode_one(index, item, label):
    data = tf.io.read_file(item) if is_path else item
    if resized:
      seed = tf.stack([tf.constant(seed_base, tf.int64), index])
      image = decode.decode_random_resized_crop(data, size, seed, method=method)
    else:
      image = decode.decode_centre(data, size, method)
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


# ------------------------------------------------------------------------------ iterators


def create_train_iterator(config, *, local_batch_size: int, start_step: int = 0,
                          process_index: int = 0,
                          process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless {'image': uint8 [B, H, W, 3], 'label': int32 [B]} of this process's shard.

  H = W = input.resize_size (model.input_size with random_crop='resized'). Batch k is the
  same whatever `start_step` the iterator was created at.
  """
  if config.dataset.name == SYNTHETIC:
    return _synthetic_train(config, local_batch_size, start_step, process_index)
  ds = train_dataset(config, local_batch_size=local_batch_size, start_step=start_step,
                     process_index=process_index, process_count=process_count)
  return _train_numpy(ds)


def _train_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    _add_skipped(batch.pop('skipped').sum())
    yield batch


def train_dataset(config, *, local_batch_size: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """The tf.data pipeline behind `create_train_iterator` (with an extra 'skipped' count)."""
  src = _source(config, config.dataset.train_split, process_index, process_count)
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
  ds = ds.map(_decode_fn(config, train=True, seed_base=_seed_base(config, process_index, 2),
                         is_path=src.is_path),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()

  # Fill the position of each skipped record with the next good example (see module doc).
  def gap(prev, ex):
    return ex['index'], (ex, ex['index'] - prev)

  def fill(ex, g):
    ex = {'image': ex['image'], 'label': ex['label']}
    first = tf.data.Dataset.from_tensors(dict(ex, skipped=g - 1))
    return first.concatenate(tf.data.Dataset.from_tensors(dict(ex, skipped=g * 0)).repeat(
        g - 1))

  ds = ds.scan(tf.constant(start - 1, tf.int64), gap).flat_map(fill)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.prefetch(max(1, config.input.prefetch))
  return ds.with_options(_options())


def eval_steps(config, split: str, global_batch_size: int) -> int:
  """Batches every process yields for `split`: each example once, in padded batches."""
  return -(-num_examples(config, split) // global_batch_size)


def create_eval_iterator(config, split: str, *, local_batch_size: int, process_index: int = 0,
                         process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass of {'image', 'label', 'mask'} batches over this process's part of `split`.

  Padding examples (mask False) fill the last batch, and whole masked batches make every
  process yield `eval_steps(config, split, local_batch_size * process_count)` batches.
  dataset.name='synthetic' yields only SYNTHETIC_EVAL_BATCHES batches (a smoke test of the
  eval path, not num_examples(split) of them).
  """
  if config.dataset.name == SYNTHETIC:
    _synthetic_split_size(split)
    return _synthetic_eval(config, local_batch_size, process_index)
  src = _source(config, split, process_index, process_count)
  steps = eval_steps(config, split, local_batch_size * process_count)
  size = host_image_size(config, train=False)
  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(), src.records)
  ds = ds.map(lambda i, rec: (i, rec[0], rec[1]))
  ds = ds.map(_decode_fn(config, train=False, seed_base=0, is_path=src.is_path),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()
  ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label'], 'mask': True})
  pad = tf.data.Dataset.from_tensors({'image': tf.zeros([size, size, 3], tf.uint8),
                                      'label': tf.constant(0, tf.int32),
                                      'mask': False}).repeat()
  ds = ds.concatenate(pad).take(steps * local_batch_size)
  ds = ds.batch(local_batch_size, drop_remainder=True).prefetch(max(1, config.input.prefetch))
  ds = ds.with_options(_options())
  return _eval_numpy(ds, src.num_examples)


def _eval_numpy(ds: tf.data.Dataset, expected: int) -> Iterator[dict[str, np.ndarray]]:
  seen = 0
  for batch in ds.as_numpy_iterator():
    seen += int(batch['mask'].sum())
    yield batch
  _add_skipped(expected - seen)


# ------------------------------------------------------------------------------ mean image


def _stats_name(config) -> str:
  d = config.dataset
  if d.name == 'folder':
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


def mean_image_path(config) -> str:
  return os.path.join(data_dir(config), STATS_DIR, _stats_name(config) + '.npy')


def mean_image(config) -> np.ndarray | None:
  """Mean over the training split of the host's R x R images: float32 [R, R, 3], or [3]
  for input.mean='channel', or None for 'none'. Computed once (a full decode pass over the
  split) and cached under <data_dir>/alexnet_jax_stats/; the same file serves both the
  original and the pre-resized copy of a dataset."""
  kind = config.input.mean
  if kind == 'none' or config.dataset.name == SYNTHETIC:   # synthetic: no pass, no file
    return None
  if kind not in ('image', 'channel'):
    raise ValueError(f"input.mean={kind!r}: expected 'image', 'channel' or 'none'")
  path = mean_image_path(config)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      mean = np.load(f)
  else:
    mean = _compute_mean_image(config)
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = f'{path}.tmp{os.getpid()}'
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      np.save(f, mean)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  return mean.mean(axis=(0, 1)) if kind == 'channel' else mean


def _compute_mean_image(config) -> np.ndarray:
  total = np.zeros((config.input.resize_size,) * 2 + (3,), np.float64)
  count = 0
  for batch in create_eval_iterator(config, config.dataset.train_split, local_batch_size=256):
    mask = batch['mask']
    total += batch['image'][mask].sum(axis=0, dtype=np.float64)
    count += int(mask.sum())
  if count == 0:
    raise ValueError('mean_image: the training split has no decodable images')
  return (total / count).astype(np.float32)


__all__ = ['create_eval_iterator', 'create_train_iterator', 'eval_steps', 'mean_image',
           'num_classes', 'num_examples', 'skipped_examples']
