"""Shared test helpers: config overrides, the tiny training run, tiny ImageNet archives.

Importable from any test as `import data_utils` (setup.cfg puts tests/ on pytest's
pythonpath); the fixtures built on them are in conftest.py.

* `override_flags`: dotted config fields ('model.lrn') as `--config.model.lrn=none` flags
  for a subprocess (in a ConfigDict: alexnet_jax.common.fields).
* `TINY_RUN` / `tiny_config`: the few-second training run of the training tests (a
  narrow model on 256 + 101 images of the built-in dataset, 8 steps).
* `make_ilsvrc2012_manual_dir` writes `ILSVRC2012_img_train.tar` and
  `ILSVRC2012_img_val.tar` in exactly the layout of the real ILSVRC-2012 downloads,
  so the real TFDS `imagenet2012` builder can be run on them offline:

  - train tar: one tar per class (`n01440764.tar`, ...), each holding
    `<wnid>_<k>.JPEG` files;
  - val tar: flat `ILSVRC2012_val_%08d.JPEG` files.

  TFDS labels validation images by zipping the *sorted* member names with its own
  `validation_labels.txt` (one wnid per line, for val images 1..50000). A subset
  therefore only gets correct labels if it is a prefix 1..n; the first three
  validation labels (n01751748, n09193705, n02105855) are classes of which the
  sample holds a photo, so val image i is that class's photo.
* `make_tfds_cifar10` prepares the real TFDS `cifar10` builder offline from a few JPEGs
  (tests/data/cifar10, `CIFAR_DIR`): it writes the CIFAR-10 binary batches the builder
  downloads and hands them to it, so data_dir holds what `tfds build cifar10` writes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence

from alexnet_jax.common.fields import set_fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real ImageNet photos, kept in the repository so that a clone runs every test
# (tests/data/imagenet-sample/PROVENANCE.md); $ALEXNET_IMAGENET_SAMPLE may point elsewhere.
SAMPLE_DIR = os.environ.get('ALEXNET_IMAGENET_SAMPLE',
                            os.path.join(REPO, 'tests', 'data', 'imagenet-sample'))
# 200 CIFAR-10 training images as JPEGs in class folders (the first 20 of each class).
CIFAR_DIR = os.path.join(REPO, 'tests', 'data', 'cifar10')
# CIFAR-10's classes in label order (batches.meta.txt of the download), written out here
# as a check on alexnet_jax.data.classes.
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')

# The tiny training run (tests/test_train.py, test_multihost.py, test_logs.py): dotted
# config field -> value, applied on top of configs/default.py.
TINY_RUN = {
    'model.conv_widths': (8, 16, 24, 24, 16),
    'model.fc_widths': (32, 32),
    'dataset.shapes_train_size': 256,
    'dataset.shapes_validation_size': 101,      # odd: the last eval batch is partial
    'input.shuffle_buffer': 256,
    'batch_size': 32,
    'eval_batch_size': 32,
    'num_train_steps': 8,
    'log_every_steps': 4,
    'eval_every_steps': 8,
    'checkpoint_every_steps': 4,
    'mesh.model': 2,
}


def override_flags(overrides: dict) -> list[str]:
  """The same overrides as command-line flags: ['--config.model.lrn=none', ...]."""
  return [f'--config.{key}={value}' for key, value in overrides.items()]


def run_cli(module: str, *args: str, timeout: float = 120, env: dict | None = None
            ) -> subprocess.CompletedProcess:
  """`python -m module args...` from the repository root, on CPU; output captured as text.

  `env` is the whole environment (default: this one's). Tests run every CLI this way,
  never by importing it: CLI modules define absl flags at import, several the same ones.
  """
  env = {**(os.environ if env is None else env), 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


# 200 real CIFAR-10 JPEGs, 20 per class, in class folders (the tests of the CIFAR configs).
CIFAR_DIR = os.path.join(REPO, 'tests', 'data', 'cifar10')


def train_cifar(module: str, workdir: str, data_dir: str, *extra: str
                ) -> tuple[subprocess.CompletedProcess, list[dict]]:
  """Three steps of `configs/<module>.py` on CIFAR_DIR through the `main` command (batches
  of 16 on the 8 devices, one checkpoint and one evaluation at the end); fails the test
  unless it exits 0. Returns the process and the run's metrics.jsonl records."""
  r = run_cli('alexnet_jax.main', f'--config=configs/{module}.py', f'--workdir={workdir}',
              f'--config.dataset.folder={CIFAR_DIR}', f'--config.dataset.data_dir={data_dir}',
              '--config.num_train_steps=3', '--config.batch_size=16',
              '--config.eval_batch_size=16', '--config.log_every_steps=1',
              '--config.checkpoint_every_steps=3', '--config.eval_every_steps=3', *extra,
              timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return r, [json.loads(line) for line in f]


def write_metrics(workdir, final_top1, *, steps_per_epoch=78, evals=3, extra_lines=()):
  """A synthetic run: `workdir`/metrics.jsonl with a train record every 20 steps and an
  eval per epoch, the last eval at top-1 `final_top1`; returns the lines written."""
  os.makedirs(workdir, exist_ok=True)
  lines = []
  for e in range(1, evals + 1):
    for step in range((e - 1) * steps_per_epoch + 20, e * steps_per_epoch, 20):
      lines.append(json.dumps({'step': step, 'split': 'train', 'loss': 2.3 / (1 + step / 50),
                               'top1': min(0.9, step / 300), 'top5': 0.9,
                               'learning_rate': 0.01, 'images_per_sec': 500.0,
                               'epoch': step / steps_per_epoch}))
    top1 = final_top1 * e / evals
    lines.append(json.dumps({'step': e * steps_per_epoch, 'split': 'eval', 'loss': 2.0 / e,
                             'top1': top1, 'top5': min(1.0, top1 + 0.3), 'count': 1000.0,
                             'learning_rate': 0.01}))
  lines.extend(extra_lines)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return lines


def tiny_config(data_dir, **overrides):
  """configs/default.py with TINY_RUN, data in `data_dir`, then `overrides` (dotted keys
  as `**{'optimizer.learning_rate': 0.0}`)."""
  from configs import default
  config = set_fields(default.get_config(), TINY_RUN)
  config.dataset.data_dir = str(data_dir)
  return set_fields(config, overrides)

# Classes of the tiny train split: tench (label 0), a photo smaller than 256 (upscaled),
# a grayscale portrait-format JPEG, and the largest photo (1280x1024, downscaled 4x).
TRAIN_WNIDS = ('n01440764', 'n02356798', 'n03908714', 'n02086240')
# Number of leading validation images used (labels from TFDS's validation_labels.txt).
NUM_VAL = 3


@dataclasses.dataclass(frozen=True)
class TinyImagenet:
  manual_dir: str
  train: dict[str, str]          # member file name -> source photo path
  train_wnids: dict[str, str]    # member file name -> wnid
  validation: dict[str, str]     # member file name -> source photo path
  validation_wnids: dict[str, str]


def sample_photos(sample_dir: str = SAMPLE_DIR) -> dict[str, str]:
  """wnid -> path of the sample photo of that class."""
  out = {}
  for name in sorted(os.listdir(sample_dir)):
    if name.endswith('.JPEG'):
      out[name.split('_', 1)[0]] = os.path.join(sample_dir, name)
  return out


def tfds_validation_labels() -> list[str]:
  """The wnid of every validation image, as TFDS ships it (val image i is entry i-1)."""
  import tensorflow_datasets as tfds
  path = tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')
  return path.read_text().strip().splitlines()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def make_ilsvrc2012_manual_dir(
    manual_dir: str,
    *,
    train_wnids: Sequence[str] = TRAIN_WNIDS,
    images_per_class: int = 2,
    num_val: int = NUM_VAL,
    sample_dir: str = SAMPLE_DIR,
    write_train: bool = True,
    write_val: bool = True,
) -> TinyImagenet:
  """Writes the two ILSVRC-2012 tars into `manual_dir` from the sample photos."""
  photos = sample_photos(sample_dir)
  os.makedirs(manual_dir, exist_ok=True)
  train, train_wnids_out = {}, {}
  if write_train:
    with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar'), 'w') as outer:
      for wnid in train_wnids:
        data = open(photos[wnid], 'rb').read()
        inner_buf = io.BytesIO()
        with tarfile.open(fileobj=inner_buf, mode='w') as inner:
          for k in range(1, images_per_class + 1):
            name = f'{wnid}_{k}.JPEG'
            _add_bytes(inner, name, data)
            train[name], train_wnids_out[name] = photos[wnid], wnid
        _add_bytes(outer, f'{wnid}.tar', inner_buf.getvalue())
  validation, val_wnids = {}, {}
  if write_val:
    labels = tfds_validation_labels()[:num_val]
    missing = [w for w in labels if w not in photos]
    if missing:
      raise ValueError(f'no sample photo for validation classes {missing}; lower num_val')
    with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar'), 'w') as tar:
      for i, wnid in enumerate(labels, start=1):
        name = f'ILSVRC2012_val_{i:08d}.JPEG'
        _add_bytes(tar, name, open(photos[wnid], 'rb').read())
        validation[name], val_wnids[name] = photos[wnid], wnid
  return TinyImagenet(manual_dir, train, train_wnids_out, validation, val_wnids)


def resize_center_crop_pil(path: str, size: int = 256):
  """Independent reference: shorter side -> `size`, centre `size` x `size`; uint8 HWC.

  Done exactly, without rounding the resized size or the crop offset: the centre
  square of the photo (a float box when the side difference is odd) resized by PIL's
  bilinear filter, which is what resizing the whole photo and then cutting the centre
  would give in continuous coordinates.
  """
  import numpy as np
  from PIL import Image
  with Image.open(path) as im:
    im = im.convert('RGB')
    w, h = im.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(im.resize((size, size), Image.BILINEAR, box=box))


def sample_jpegs(sample_dir: str = SAMPLE_DIR) -> list[str]:
  """Paths of all the sample photos, sorted; raises if there are none, so that a test
  fails, not skips, when the photos are missing."""
  paths = (sorted(os.path.join(sample_dir, f) for f in os.listdir(sample_dir)
                  if f.endswith('.JPEG')) if os.path.isdir(sample_dir) else [])
  if not paths:
    raise FileNotFoundError(f'no *.JPEG sample photos in {sample_dir} '
                            '(tests/data/imagenet-sample, or $ALEXNET_IMAGENET_SAMPLE)')
  return paths


def make_class_folder(root, photos: Sequence[str], classes: int = 3):
  """A dataset.name='folder' tree: photo i copied into root/class{i % classes}/; -> root."""
  import shutil
  for i, src in enumerate(photos):
    d = root / f'class{i % classes}'
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, d / os.path.basename(src))
  return root


def folder_config(data_dir, folder, **input_fields):
  """A small config reading `folder` (R=40 host images, 32 crops, the 'area' filter the
  NumPy references model), with any input.* field overridden."""
  from alexnet_jax.common import config_lib
  c = config_lib.base()
  c.seed = 0
  c.dataset.name = 'folder'
  c.dataset.folder = str(folder)
  c.dataset.data_dir = str(data_dir)
  c.input.resize_size = 40
  c.model.input_size = 32
  c.input.shuffle_buffer = 1000
  c.input.resize_method = 'area'   # the NumPy references model the box filter
  for k, v in input_fields.items():
    c.input[k] = v
  return c


def _cifar_pixels(path: str):
  """The uint8 [32, 32, 3] pixels the folder pipeline decodes from the JPEG at `path`
  (decode.decode_centre: TensorFlow's INTEGER_FAST IDCT), so the two sources compare
  exactly."""
  from alexnet_jax.common.lazy_tf import tf
  from alexnet_jax.data import decode
  return decode.decode_centre(tf.io.read_file(path), 32).numpy()


def make_tfds_cifar10(data_dir, splits: dict[str, Sequence[tuple[str, int]]],
                      prepare: Callable[[], None] | None = None) -> str:
  """Prepares TFDS `cifar10` in `data_dir` from JPEGs, offline, with the real builder.

  `splits` maps 'train' / 'test' to (JPEG path, label) pairs, neither empty (TFDS refuses
  an empty split). Their pixels (decoded as the folder pipeline decodes them) go into the
  CIFAR-10 binary files the builder downloads (cifar-10-binary.tar.gz: data_batch_1..5.bin,
  test_batch.bin, one label byte then the R, G and B planes per image; batches.meta.txt the
  class names); the builder's download is pointed at them and the rest is TFDS's own:
  shuffling by key, TFRecords of PNGs, dataset_info.json with the split sizes and label
  names. The id of a train image is
  'train_%05d' of its position in `splits['train']`. `prepare`, when given, is called in
  place of the builder's download_and_prepare (e.g. the command a message names), with the
  download redirected the same way. -> the prepared version's folder."""
  import tempfile
  from unittest import mock

  import tensorflow_datasets as tfds

  def records(pairs):
    return b''.join(bytes([label]) + _cifar_pixels(p).transpose(2, 0, 1).tobytes()
                    for p, label in pairs)

  train = list(splits.get('train', ()))
  builder = tfds.builder('cifar10', data_dir=os.fspath(data_dir))
  with tempfile.TemporaryDirectory(prefix='cifar10_download_') as raw:
    batches = os.path.join(raw, 'cifar-10-batches-bin')
    os.makedirs(batches)
    with open(os.path.join(batches, 'batches.meta.txt'), 'w') as f:
      f.write('\n'.join(CIFAR10_CLASSES) + '\n\n')
    for i in range(5):    # the five training batches, in order
      with open(os.path.join(batches, f'data_batch_{i + 1}.bin'), 'wb') as f:
        f.write(records(train[i * len(train) // 5:(i + 1) * len(train) // 5]))
    with open(os.path.join(batches, 'test_batch.bin'), 'wb') as f:
      f.write(records(splits.get('test', ())))
    with mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                           lambda self, url: raw):
      if prepare is not None:
        prepare()
      else:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.fspath(builder.data_dir)
