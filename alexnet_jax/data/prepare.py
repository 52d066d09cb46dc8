"""Preparing ImageNet (ILSVRC-2012): the archive check, the TFDS build, the pre-resized copy.

The library behind `python -m alexnet_jax.prepare`; where the files live, which builder
reads them and what to say when they are missing is `sources`.

The paper (section 2) stored ImageNet down-sampled to 256x256 (shorter side 256,
then the central square), so that training decodes a ~256x256 JPEG instead of a
full-size photo (on average ~400x350, up to several thousand pixels a side).
`write_preresized` makes that copy as a second TFDS dataset
`<name>_resized<size>` (`sources.preresized_name`) next to the original, with the same
features and splits, so the input pipeline reads either with the same code
(`input.use_preresized`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ml_collections
import numpy as np

from alexnet_jax.common.lazy_tf import tf, tfds  # imported on first use
from alexnet_jax.data import decode, sources, statistics

PRERESIZED_VERSION = '1.0.0'
JPEG_QUALITY = 90


def preresize_method(config: ml_collections.ConfigDict) -> str:
  """The copy is made once: it gets an antialiased filter even when training shrinks with
  the faster 'fast' (bilinear without antialiasing)."""
  return 'area' if config.input.resize_method == 'fast' else config.input.resize_method


def _reencode_fn(size: int, quality: int, method: str) -> Callable[[dict], dict]:
  def fn(example):
    out = dict(example)
    # The same decode + resize as the training pipeline's (input_pipeline), so training
    # on the copy sees the same pixels up to the JPEG re-encoding.
    out['image'] = tf.io.encode_jpeg(decode.decode_centre(example['image'], size, method),
                                     quality=quality, chroma_downsampling=True)
    return out
  return fn


def write_preresized(
    config: ml_collections.ConfigDict,
    *,
    quality: int = JPEG_QUALITY,
    log: Callable[[str], None] = print,
) -> tfds.core.DatasetBuilder:
  """Writes the paper's 256x256 copy of the prepared dataset; returns its builder.

  Reads the original TFDS dataset (JPEG bytes, no TFDS decoding), decodes the
  centre square, resizes it (`decode.decode_centre`) and re-encodes it in a
  parallel tf.data map (all cores), and stores the result with the same label and
  file_name features and the same splits. Already there: returned as is.
  """
  done = sources.preresized_dir(config)
  if done is not None:
    log(f'pre-resized copy already there: {done}')
    return tfds.builder_from_directory(done)

  ddir, size = sources.data_dir(config), config.input.resize_size
  src = sources.builder(sources.without_preresized(config))
  src_features = src.info.features
  features = {
      'image': tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
  }
  for key in ('label', 'file_name'):
    if key in src_features:
      features[key] = src_features[key]
  splits = {}
  for split in src.info.splits:
    ds = src.as_dataset(split=split, shuffle_files=False,
                        decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: {k: ex[k] for k in features})
    ds = ds.map(_reencode_fn(size, quality, preresize_method(config)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    splits[split] = ds.prefetch(64)
    log(f'pre-resized copy: split {split!r}, {src.info.splits[split].num_examples} images')

  start = time.time()
  out = tfds.dataset_builders.store_as_tfds_dataset(
      name=sources.preresized_name(config),
      version=PRERESIZED_VERSION,
      features=tfds.features.FeaturesDict(features),
      split_datasets=splits,
      data_dir=ddir,
      description=(f'{config.dataset.name} with the shorter side resized to {size} '
                   f'({preresize_method(config)!r} filter), centre '
                   f'{size}x{size} crop, JPEG quality '
                   f'{quality} (Krizhevsky et al. 2012, section 2).'),
  )
  log(f'pre-resized copy written to {out.data_dir} in {time.time() - start:.0f}s')
  return out


def prepare(config: ml_collections.ConfigDict, *, preresized: bool = False,
            log: Callable[[str], None] = print) -> None:
  """Builds the TFDS dataset, the mean image and the lighting's RGB PCA, and (optionally)
  the pre-resized copy.

  Every stage is skipped when its output is already there, so re-running resumes. ImageNet
  without its archives (and not yet built) raises FileNotFoundError with
  `sources.missing_message`, before anything is written.
  """
  original = sources.without_preresized(config)
  name, ddir, mdir = config.dataset.name, sources.data_dir(config), sources.manual_dir(config)
  if (name == sources.IMAGENET and not sources.is_prepared(original)
      and sources.check_manual_files(mdir)):
    shown = original.copy_and_resolve_references()
    shown.input.use_preresized = preresized  # the command then has --preresized
    raise FileNotFoundError(sources.missing_message(shown))

  start = time.time()
  elapsed = lambda: f'[{time.time() - start:7.0f}s]'
  log(f'{elapsed()} stage 1/3: TFDS {name!r} in {ddir}')
  b = tfds.builder(name, data_dir=ddir)
  if b.is_prepared():
    log(f'{elapsed()} already prepared: {b.data_dir}')
  else:
    download_config = None
    if name == sources.IMAGENET:
      download_config = tfds.download.DownloadConfig(manual_dir=mdir)
      log(f'{elapsed()} reading {", ".join(sources.MANUAL_FILES)} from {mdir}; this takes '
          'hours for the full dataset (TFDS progress bars below)')
    b.download_and_prepare(download_config=download_config)
  log(f'{elapsed()} splits: ' + ', '.join(
      f'{k}={v.num_examples}' for k, v in sorted(b.info.splits.items())))

  log(f'{elapsed()} stage 2/3: training-set mean image (input.mean={config.input.mean!r}) '
      f'and RGB PCA for the lighting (input.pca_source={config.input.pca_source!r}); one '
      'decode pass over the training split for what is missing, cached under data_dir')
  stats = statistics.load_or_compute_statistics(original)
  if stats.mean is None:
    log(f'{elapsed()} no mean needed')
  elif config.input.mean == 'constant':
    log(f'{elapsed()} constant mean input.mean_rgb={tuple(config.input.mean_rgb)}: no pass')
  else:
    log(f'{elapsed()} mean {stats.mean.shape} at {statistics.mean_image_path(original)}, '
        f'per-channel {[round(float(x), 2) for x in stats.mean.reshape(-1, 3).mean(0)]}')
  if stats.pca is None:
    log(f'{elapsed()} no PCA needed (input.pca_lighting=0)')
  else:
    log(f'{elapsed()} PCA lighting: {stats.pca.describe()}, eigenvectors (columns) '
        f'{np.round(stats.pca.eigvec, 4).tolist()}')

  if preresized:
    size = config.input.resize_size
    log(f'{elapsed()} stage 3/3: pre-resized copy {sources.preresized_name(config)} '
        f'(shorter side {size}, centre {size}x{size}, JPEG q{JPEG_QUALITY})')
    write_preresized(config, log=lambda m: log(f'{elapsed()} {m}'))
  else:
    log(f'{elapsed()} stage 3/3 skipped: pass --preresized for the 256x256 copy')
  log(f'{elapsed()} done')
