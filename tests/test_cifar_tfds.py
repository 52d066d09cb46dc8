"""The CIFAR-10 configs on TFDS `cifar10` (`:source=tfds`), with no network: the real
`cifar10` builder is prepared in a tmp data_dir from the 200 JPEGs of tests/data/cifar10
(data_utils.make_tfds_cifar10), so sources' is_prepared / builder / split parsing
('train[:90%]', 'train[90%:]') and the pipeline's PNG decoding run as on a real download.

The TFDS copy's `train` split is the folder's training part (167 images) and its `test`
split the folder's hash-held-out part (33), written from the pixels the folder pipeline
decodes from the JPEGs: so the two sources must give the same eval batches and the same
mean image exactly (a real TFDS cifar10 holds the original pixels, the JPEG folder their
lossy copy: equal up to the JPEG error).
"""

import json
import os
import re

import numpy as np
import pytest
from data_utils import CIFAR10_CLASSES, CIFAR_DIR, make_tfds_cifar10, run_cli

from alexnet_jax.common import config_lib
from alexnet_jax.data import classes, pipeline, sources, statistics
from alexnet_jax.data import prepare as data_prepare
from configs import cifar10_18pct, cifar10_conv_local, cifar10_fast

MODULES = (cifar10_conv_local, cifar10_fast, cifar10_18pct)
# The TFDS copy's train split (167 images), as the configs cut it: TFDS rounds 90% of 167
# to 150.
TRAIN_PART, EVAL_PART = 150, 17


@pytest.fixture(scope='module')
def folder_splits():
  return {split: sources.folder_listing(CIFAR_DIR, split) for split in ('train', 'validation')}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory, folder_splits) -> str:
  """A data_dir with TFDS cifar10 3.0.2 prepared: train = the folder's training part,
  test = its held-out part."""
  ddir = tmp_path_factory.mktemp('tfds_cifar10')
  make_tfds_cifar10(ddir, {
      split: list(zip(folder_splits[part].paths, folder_splits[part].labels, strict=True))
      for split, part in (('train', 'train'), ('test', 'validation'))})
  return os.fspath(ddir)


def _tfds_config(module, data_dir, **dataset_fields):
  c = module.get_config('source=tfds')
  c.dataset.data_dir = os.fspath(data_dir)
  for k, v in dataset_fields.items():
    c.dataset[k] = v
  return c


def _tfds_images(data_dir, split: str) -> np.ndarray:
  """The decoded images of `split`, read by TFDS itself (not by our pipeline)."""
  import tensorflow_datasets as tfds
  ds = tfds.builder('cifar10', data_dir=data_dir).as_dataset(split=split)
  return np.stack([ex['image'] for ex in tfds.as_numpy(ds)])


def _examples(config, split: str) -> list[tuple[int, bytes]]:
  """(label, pixels) of every real example of the eval pipeline over `split`, sorted: the
  two sources order their examples differently (sorted file names; TFDS's key hash)."""
  out = []
  for batch in pipeline.create_eval_iterator(config, split, local_batch_size=16):
    for image, label in zip(batch['image'][batch['mask']], batch['label'][batch['mask']],
                            strict=True):
      assert image.shape == (32, 32, 3) and image.dtype == np.uint8
      out.append((int(label), image.tobytes()))
  return sorted(out)


@pytest.mark.parametrize('module', MODULES, ids=lambda m: m.__name__.split('.')[-1])
def test_cifar_configs_read_the_prepared_tfds_cifar10(module, tfds_dir):
  c = _tfds_config(module, tfds_dir)
  config_lib.validate(c)                       # no dataset.folder needed
  assert (c.dataset.name, c.dataset.train_split, c.dataset.eval_split) == (
      'cifar10', 'train[:90%]', 'train[90%:]')
  assert sources.is_prepared(c) and sources.missing_message(c) == ''
  assert sources.num_examples(c, c.dataset.train_split) == TRAIN_PART
  assert sources.num_examples(c, c.dataset.eval_split) == EVAL_PART
  assert sources.num_examples(c, 'test') == 33
  assert sources.num_classes(c) == c.model.num_classes == 10
  assert tuple(x.name for x in classes.class_info(c)) == CIFAR10_CLASSES
  features = sources.builder(c).info.features
  assert features['image'].shape == (32, 32, 3) and features['image'].dtype.name == 'uint8'
  assert tuple(features['label'].names) == CIFAR10_CLASSES


def test_the_two_tfds_parts_split_the_train_split(tfds_dir):
  c = _tfds_config(cifar10_conv_local, tfds_dir)
  train, held_out = _examples(c, 'train[:90%]'), _examples(c, 'train[90%:]')
  assert (len(train), len(held_out)) == (TRAIN_PART, EVAL_PART)
  assert sorted(train + held_out) == _examples(c, 'train')


def test_folder_and_tfds_give_the_same_eval_batches_and_mean(tfds_dir, folder_splits):
  folder = cifar10_conv_local.get_config()
  folder.dataset.folder = CIFAR_DIR
  folder.dataset.data_dir = tfds_dir          # the statistics caches: none written here
  tfds_c = _tfds_config(cifar10_conv_local, tfds_dir)
  # The same 33 images and labels (the folder's hash holdout = the TFDS copy's test split).
  held_out = _examples(folder, 'validation')
  assert len(held_out) == 33
  assert _examples(tfds_c, 'test') == held_out
  assert [label for label, _ in held_out] == sorted(folder_splits['validation'].labels)
  # The mean image of the same 167 training images, from either source.
  folder.dataset.train_split, tfds_c.dataset.train_split = 'train', 'train'
  folder_mean = statistics.compute_mean_image(folder)
  tfds_mean = statistics.compute_mean_image(tfds_c)
  assert folder_mean.shape == tfds_mean.shape == (32, 32, 3)
  np.testing.assert_allclose(tfds_mean, folder_mean, atol=1e-3)
  assert 100 < folder_mean.mean() < 150       # 0-255 pixels, not a blank mean


def test_prepare_caches_the_mean_of_the_tfds_training_part(tfds_dir):
  """`alexnet_jax.prepare` with a CIFAR config: TFDS already prepared, the mean image of
  train[:90%] at 32x32 computed and cached in data_dir (copied with it)."""
  c = _tfds_config(cifar10_fast, tfds_dir)
  lines = []
  data_prepare.prepare(c, log=lines.append)
  assert any('already prepared' in line for line in lines)
  assert any('splits: test=33, train=167' in line for line in lines)
  path = statistics.mean_image_path(c)
  assert path.exists() and path.is_relative_to(tfds_dir)
  mean = statistics.load_or_compute_mean_image(c)
  images = _tfds_images(tfds_dir, 'train[:90%]')
  assert images.shape == (TRAIN_PART, 32, 32, 3)
  np.testing.assert_allclose(mean, images.mean(0, dtype=np.float64), atol=1e-3)


@pytest.mark.parametrize('module', MODULES, ids=lambda m: m.__name__.split('.')[-1])
def test_missing_tfds_cifar10_says_what_to_run(module, tmp_path):
  ddir = tmp_path / 'empty'
  c = _tfds_config(module, ddir)
  message = sources.missing_message(c)
  assert message.startswith(f"TFDS dataset 'cifar10' is not prepared in data_dir {ddir}")
  assert sources.download_command('cifar10', ddir) in message
  assert f'tfds build cifar10 --data_dir={ddir}' in message
  # A run copied without its data still names CIFAR-10's classes.
  assert tuple(x.name for x in classes.class_info(c)) == CIFAR10_CLASSES


def test_the_named_command_prepares_cifar10(tmp_path):
  """The Python line of the message, run as it stands (its download redirected to three
  local images): afterwards the config finds the dataset."""
  ddir = tmp_path / 'data'
  c = _tfds_config(cifar10_fast, ddir)
  (code,) = re.findall(r'python -c "(.*?)"', sources.missing_message(c))
  paths = sources.folder_listing(CIFAR_DIR, 'train').paths
  make_tfds_cifar10(ddir, {'train': [(paths[0], 0), (paths[1], 0)], 'test': [(paths[2], 0)]},
                    prepare=lambda: exec(code, {}))
  assert sources.is_prepared(c) and sources.missing_message(c) == ''
  assert (sources.num_examples(c, 'train'), sources.num_examples(c, 'test')) == (2, 1)


def test_main_without_tfds_cifar10_exits_2_before_making_the_workdir(tmp_path):
  workdir = tmp_path / 'run'
  r = run_cli('alexnet_jax.main', '--config=configs/cifar10_conv_local.py:source=tfds',
              f'--workdir={workdir}', f'--config.dataset.data_dir={tmp_path / "empty"}',
              timeout=300)
  assert r.returncode == 2, r.stderr[-3000:]
  assert sources.download_command('cifar10', tmp_path / 'empty') in r.stderr
  assert r.stderr.count('is not prepared') == 1 and 'Traceback' not in r.stderr
  assert not workdir.exists() and not (tmp_path / 'empty' / 'downloads').exists()


@pytest.mark.slow
def test_three_training_steps_and_an_evaluation_on_tfds_cifar10(tfds_dir, tmp_path):
  workdir = tmp_path / 'run'
  r = run_cli('alexnet_jax.main', '--config=configs/cifar10_fast.py:source=tfds',
              f'--workdir={workdir}', f'--config.dataset.data_dir={tfds_dir}',
              '--config.num_train_steps=3', '--config.batch_size=16',
              '--config.eval_batch_size=16', '--config.log_every_steps=1',
              '--config.checkpoint_every_steps=3', '--config.eval_every_steps=3',
              timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'{TRAIN_PART} train examples' in r.stderr
  records = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert [x['step'] for x in records if x['split'] == 'train'] == [1, 2, 3]
  (evaluated,) = [x for x in records if x['split'] == 'eval']
  assert evaluated['count'] == EVAL_PART
  # The subtracted mean is that of the TFDS training part, read here by TFDS itself.
  images = _tfds_images(tfds_dir, 'train[:90%]')
  assert images.shape == (TRAIN_PART, 32, 32, 3)
  with np.load(workdir / 'preprocessing.npz') as f:
    np.testing.assert_allclose(f['mean'], images.mean(0, dtype=np.float64), atol=1e-3)
  r = run_cli('alexnet_jax.evaluate', f'--workdir={workdir}', '--checkpoint=latest',
              timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  # Named after the eval split, shell-safe: train[90%:] -> eval_train_90pct_latest.json.
  (written,) = re.findall(r'^written: (.*)$', r.stdout, flags=re.M)
  assert written == os.fspath(workdir / 'eval_train_90pct_latest.json')
  result = json.load(open(written))
  assert result['crops_1']['count'] == result['crops_10']['count'] == EVAL_PART
  config = json.load(open(workdir / 'config.json'))
  assert config['dataset']['name'] == 'cifar10'
  from alexnet_jax.run import workdir as workdir_lib
  run_config = workdir_lib.load_config(os.fspath(workdir))
  assert tuple(x.name for x in classes.class_info(run_config)) == CIFAR10_CLASSES
