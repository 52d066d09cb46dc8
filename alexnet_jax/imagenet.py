"""ImageNet helpers: where the files live, the TFDS builders, the pre-resized copy.

The paper (section 2) stored ImageNet down-sampled to 256x256 (shorter side 256,
then the central square), so that training decodes a ~256x256 JPEG instead of a
full-size photo (on average ~400x350, up to several thousand pixels a side).
`write_preresized` makes that copy as a second TFDS dataset
`<name>_resized<size>` next to the original, with the same features and splits,
so the input pipeline reads either with the same code (`input.use_preresized`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import decode

# The two archives the TFDS `imagenet2012` builder reads from its manual_dir
# (the test archive is optional and not used here).
MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
PRERESIZED_VERSION = '1.0.0'
JPEG_QUALITY = 90


def data_dir(config: ml_collections.ConfigDict) -> str:
  """config.dataset.data_dir, or TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return config.dataset.data_dir or os.path.expanduser(tfds.core.constants.DATA_DIR)


def manual_dir(config: ml_collections.ConfigDict) -> str:
  """config.dataset.manual_dir, or TFDS's default <data_dir>/downloads/manual."""
  return config.dataset.manual_dir or os.path.join(data_dir(config), 'downloads', 'manual')


def preresized_name(config: ml_collections.ConfigDict) -> str:
  return f'{config.dataset.name}_resized{config.input.resize_size}'


def builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  return tfds.builder(name, data_dir=data_dir)


def _reencode_fn(size: int, quality: int, method: str) -> Callable[[dict], dict]:
  def fn(example):
    out = dict(example)
    # The same decode + resize as the training pipeline's (input_pipeline), so training
    # on the copy sees the same pixels up to the JPEG re-encoding.
    out['image'] = tf.io.encode_jpeg(decode.decode_centre(example['image'], size, method),
                                     quality=quality, chroma_downsampling=True)
    return out
  return fn


def preresize_method(config: ml_collections.ConfigDict) -> str:
  """The copy is made once: it gets an antialiased filter even when training shrinks with
  the faster 'fast' (bilinear without antialiasing)."""
  return 'area' if config.input.resize_method == 'fast' else config.input.resize_method


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
  ddir, size = data_dir(config), config.input.resize_size
  name = preresized_name(config)
  out_dir = os.path.join(ddir, name, PRERESIZED_VERSION)
  if tf.io.gfile.exists(os.path.join(out_dir, 'dataset_info.json')):
    log(f'pre-resized copy already there: {out_dir}')
    return tfds.builder_from_directory(out_dir)

  src = builder(config.dataset.name, ddir)
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
      name=name,
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


def check_manual_files(manual_dir: str) -> list[str]:
  """The ILSVRC-2012 archives missing from `manual_dir` (full paths; empty: all there)."""
  return [os.path.join(manual_dir, f) for f in MANUAL_FILES
          if not tf.io.gfile.exists(os.path.join(manual_dir, f))]


def is_prepared(config) -> bool:
  """Whether the dataset training reads (the pre-resized copy if asked for) is built."""
  ddir = data_dir(config)
  if config.input.use_preresized:
    version_dir = os.path.join(ddir, preresized_name(config),
                               PRERESIZED_VERSION)
    return tf.io.gfile.exists(os.path.join(version_dir, 'dataset_info.json'))
  try:
    return builder(config.dataset.name, ddir).is_prepared()
  except Exception:  # an unknown or unbuildable name is simply "not prepared"
    return False


def missing_message(config) -> str:
  """'' when the dataset is ready; otherwise what is missing, where it goes, what to run."""
  if is_prepared(config):
    return ''
  mdir, ddir = manual_dir(config), data_dir(config)
  missing = check_manual_files(mdir)
  flag = ' --preresized' if config.input.use_preresized else ''
  command = (f'  python -m alexnet_jax.prepare --config=configs/paper.py '
             f'--config.dataset.data_dir={ddir} --config.dataset.manual_dir={mdir}{flag}')
  if not missing:
    what = (preresized_name(config) if config.input.use_preresized
            else config.dataset.name)
    return (f'{what} is not prepared in {ddir}; the archives are in {mdir}. Run:\n'
            + command)
  lines = [
      f'ImageNet (ILSVRC-2012) is not prepared in {ddir} and '
      f'{len(missing)} of the {len(MANUAL_FILES)} archives TFDS builds it from '
      'are missing:',
      *[f'  missing: {p}' for p in missing],
      'Download them from https://image-net.org/download-images (registration needed),',
      f'put them in {mdir}/ (or pass --config.dataset.manual_dir=DIR) and run:',
      command,
  ]
  return '\n'.join(lines)
