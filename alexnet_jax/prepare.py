r"""Prepares ImageNet (ILSVRC-2012) for training: TFDS build, mean image, 256x256 copy.

  python -m alexnet_jax.prepare --config=configs/paper.py \
      [--config.dataset.data_dir=DIR] [--config.dataset.manual_dir=DIR] [--preresized]

ImageNet cannot be downloaded automatically: the two archives
ILSVRC2012_img_train.tar (~138 GB) and ILSVRC2012_img_val.tar (~6.3 GB) come from
https://image-net.org/download-images after registering. TFDS's `imagenet2012`
builder reads them from `manual_dir` (default <data_dir>/downloads/manual) and
writes TFRecords to <data_dir>/imagenet2012/5.1.0 (a few hours on a many-core
machine; TFDS shows a progress bar per split). Then the training-set mean image is
computed and cached, and with --preresized the paper's 256x256 copy is written as
the dataset <name>_resized256 (set --config.input.use_preresized=True to train on it).
Every stage is skipped when its output is already there, so re-running resumes.
"""

from __future__ import annotations

import sys
import time

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import imagenet, sources, statistics


def _define_flags() -> None:
  """Command-line flags, defined only when this module is the program (so that
  importing it next to the other entry points never defines a flag twice)."""
  global _CONFIG, _PRERESIZED
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/paper.py).')
  _PRERESIZED = flags.DEFINE_bool(
      'preresized', False, "Also write the paper's 256x256 pre-resized copy (section 2).")


def prepare(config, *, preresized: bool = False, log=print) -> None:
  """Builds the TFDS dataset, the mean image and (optionally) the pre-resized copy."""
  start = time.time()
  elapsed = lambda: f'[{time.time() - start:7.0f}s]'
  ddir = sources.data_dir(config)
  name = config.dataset.name

  log(f'{elapsed()} stage 1/3: TFDS {name!r} in {ddir}')
  b = tfds.builder(name, data_dir=ddir)
  if b.is_prepared():
    log(f'{elapsed()} already prepared: {b.data_dir}')
  else:
    download_config = None
    if name == 'imagenet2012':
      mdir = sources.manual_dir(config)
      download_config = tfds.download.DownloadConfig(manual_dir=mdir)
      log(f'{elapsed()} reading {", ".join(imagenet.MANUAL_FILES)} from {mdir}; this takes '
          'hours for the full dataset (TFDS progress bars below)')
    b.download_and_prepare(download_config=download_config)
  log(f'{elapsed()} splits: ' + ', '.join(
      f'{k}={v.num_examples}' for k, v in sorted(b.info.splits.items())))

  log(f'{elapsed()} stage 2/3: training-set mean image (input.mean={config.input.mean!r}; '
      'one decode pass over the training split, cached under data_dir)')
  mean = statistics.load_or_compute_mean_image(sources.without_preresized(config))
  if mean is None:
    log(f'{elapsed()} no mean needed')
  else:
    log(f'{elapsed()} mean {mean.shape} at {statistics.mean_image_path(config)}, '
        f'per-channel {[round(float(x), 2) for x in mean.reshape(-1, 3).mean(0)]}')

  if preresized:
    size = config.input.resize_size
    log(f'{elapsed()} stage 3/3: pre-resized copy {sources.preresized_name(config)} '
        f'(shorter side {size}, centre {size}x{size}, JPEG q{imagenet.JPEG_QUALITY})')
    imagenet.write_preresized(config, log=lambda m: log(f'{elapsed()} {m}'))
  else:
    log(f'{elapsed()} stage 3/3 skipped: pass --preresized for the 256x256 copy')
  log(f'{elapsed()} done')


def main(argv):
  del argv
  config = _CONFIG.value
  tf.config.set_visible_devices([], 'GPU')  # TF must not take the accelerators.
  logging.set_verbosity(logging.ERROR)  # TFDS warns about every absent optional file
  if (config.dataset.name == 'imagenet2012'
      and not sources.is_prepared(sources.without_preresized(config))
      and imagenet.check_manual_files(sources.manual_dir(config))):
    shown = config.copy_and_resolve_references()
    shown.input.use_preresized = _PRERESIZED.value  # the command then has --preresized
    print(sources.missing_message(shown), file=sys.stderr)
    sys.exit(1)
  prepare(config, preresized=_PRERESIZED.value)


if __name__ == '__main__':
  _define_flags()
  flags.mark_flag_as_required('config')
  app.run(main)
