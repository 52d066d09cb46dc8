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
Every stage is skipped when its output is already there, so re-running resumes. On a
terminal the builds show TFDS's progress bars and the statistics pass its own. Exit status
(alexnet_jax/common/exits.py): 0 prepared; 2 a bad flag or config, or the archives are
missing (the message names them and where they go). The work is `data.prepare.prepare`;
this module is its command line only.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax.common import exits

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/paper.py).')
_PRERESIZED = flags.DEFINE_bool(
    'preresized', False, "Also write the paper's 256x256 pre-resized copy (section 2).")
flags.mark_flag_as_required('config')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _PRERESIZED.value and _CONFIG.value.input.resize_mode == 'squash':
    raise app.UsageError("--preresized writes centre squares (input.resize_mode="
                         "'shorter_side'); input.resize_mode='squash' reads the original "
                         'images: drop --preresized')
  from alexnet_jax.data import prepare  # after flags: keeps --help fast

  logging.set_verbosity(logging.ERROR)  # TFDS warns about every absent optional file
  try:
    prepare.prepare(_CONFIG.value, preresized=_PRERESIZED.value)
  except FileNotFoundError as e:  # what is missing and what to run: no traceback
    print(e, file=sys.stderr)
    return exits.USAGE
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
