"""Preparing ImageNet (ILSVRC-2012): the archive check and the pre-resized copy.

Where the files live, which builder reads them and what to say when they are missing is
`sources`.

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
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from alexnet_jax import decode, sources

# The two archives the TFDS `imagenet2012` builder reads from its manual_dir
# (the test archive is optional and not used here).
MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
PRERESIZED_VERSION = '1.0.0'
JPEG_QUALITY = 90


def check_manual_files(manual_dir: str | epath.PathLike) -> list[epath.Path]:
  """The ILSVRC-2012 archives missing from `manual_dir` (full paths; empty: all there)."""
  manual_dir = epath.Path(manual_dir)
  return [manual_dir / f for f in MANUAL_FILES if not (manual_dir / f).exists()]


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
