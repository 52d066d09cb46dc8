"""sources: directories, folder listings, TFDS lookup (incl. the pre-resized copy), the one
missing-dataset message, split sizes."""

import os
import zlib

import data_utils
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from data_utils import make_class_folder as _make_folder
from etils import epath

from alexnet_jax.common import config_lib
from alexnet_jax.data import sources

PHOTOS = data_utils.sample_jpegs()


def _config(tmp, folder):
  return data_utils.folder_config(tmp / 'tfds', folder)


def test_data_dir_and_manual_dir(tmp_path):
  c = config_lib.base()
  assert sources.data_dir(c) == epath.Path(tfds.core.constants.DATA_DIR).expanduser()
  c.dataset.data_dir = str(tmp_path / 'tfds')
  assert sources.data_dir(c) == epath.Path(tmp_path / 'tfds')
  assert sources.manual_dir(c) == epath.Path(tmp_path / 'tfds' / 'downloads' / 'manual')
  c.dataset.manual_dir = str(tmp_path / 'archives')
  assert sources.manual_dir(c) == epath.Path(tmp_path / 'archives')
  c.dataset.data_dir = 'gs://bucket/tfds'
  assert os.fspath(sources.data_dir(c) / 'x') == 'gs://bucket/tfds/x'


def test_folder_listing_holds_out_a_stable_hashed_tenth(tmp_path):
  root = _make_folder(tmp_path / 'photos', PHOTOS[:60])
  train = sources.folder_listing(str(root), 'train')
  val = sources.folder_listing(str(root), 'validation')
  assert train.classes == val.classes == ('class0', 'class1', 'class2')
  assert len(train.paths) + len(val.paths) == 60 and not set(train.paths) & set(val.paths)
  for paths, labels, held_out in ((train.paths, train.labels, False),
                                  (val.paths, val.labels, True)):
    assert list(paths) == sorted(paths)
    for path, label in zip(paths, labels, strict=True):
      cls = os.path.basename(os.path.dirname(path))
      assert cls == f'class{label}'
      name = f'{cls}/{os.path.basename(path)}'
      assert (zlib.crc32(name.encode()) % 100 < sources.FOLDER_HOLDOUT_PERCENT) == held_out
  assert sources.folder_listing(str(root), 'test') == val


def test_folder_with_split_subfolders(tmp_path):
  root = tmp_path / 'splits'
  _make_folder(root / 'train', PHOTOS[:8], classes=2)
  _make_folder(root / 'validation', PHOTOS[8:11], classes=2)
  c = _config(tmp_path, root)
  assert sources.num_examples(c, 'train') == 8
  assert sources.num_examples(c, 'validation') == 3
  assert sources.num_classes(c) == 2


def test_missing_folder_is_a_clear_error(tmp_path):
  c = _config(tmp_path, tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    sources.num_examples(c, 'train')


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
  c = config_lib.base()
  c.dataset.name = 'cifar10'
  c.dataset.data_dir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match=r"'cifar10' is not prepared.*tfds build"):
    sources.num_examples(c, 'train')
  # The one message: what training raises is what `main`'s pre-check prints.
  with pytest.raises(FileNotFoundError) as raised:
    sources.num_classes(c)
  assert str(raised.value) == sources.missing_message(c)


def test_synthetic_split_sizes():
  c = config_lib.base()
  c.dataset.name = sources.SYNTHETIC
  assert sources.is_prepared(c) and sources.missing_message(c) == ''
  assert sources.num_examples(c, 'train[:10%]') == sources.SYNTHETIC_EXAMPLES['train']
  with pytest.raises(ValueError, match='synthetic'):
    sources.num_examples(c, 'test')


def test_dataset_dir_is_the_newest_complete_version(tmp_path):
  assert sources.dataset_dir(tmp_path, 'toy') is None
  for version, complete in (('1.0.0', True), ('1.10.0', True), ('2.0.0', False)):
    (tmp_path / 'toy' / version).mkdir(parents=True)
    if complete:
      (tmp_path / 'toy' / version / 'dataset_info.json').write_text('{}')
  assert sources.dataset_dir(tmp_path, 'toy') == epath.Path(tmp_path / 'toy' / '1.10.0')


def test_preresized_copy_is_found_by_one_rule(tmp_path):
  ddir = tmp_path / 'tfds'
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=2)})
  c = config_lib.base()
  c.dataset.name = 'toyset'
  c.dataset.data_dir = str(ddir)
  c.input.resize_size = 40
  c.input.use_preresized = True
  assert sources.preresized_name(c) == sources.dataset_name(c) == 'toyset_resized40'
  assert sources.preresized_dir(c) is None and not sources.is_prepared(c)
  message = sources.missing_message(c)
  assert "'toyset_resized40' is not prepared" in message
  assert ('python -m alexnet_jax.prepare --config=configs/paper.py '
          f'--config.dataset.name=toyset --config.dataset.data_dir={ddir} --preresized'
          in message)
  tfds.dataset_builders.store_as_tfds_dataset(
      name='toyset_resized40', version='1.0.0', features=features, data_dir=str(ddir),
      split_datasets={'train': tf.data.Dataset.from_tensor_slices(
          {'image': [open(p, 'rb').read() for p in PHOTOS[:3]], 'label': [0, 1, 0]})})
  assert sources.preresized_dir(c) == epath.Path(ddir / 'toyset_resized40' / '1.0.0')
  assert sources.is_prepared(c) and sources.missing_message(c) == ''
  assert sources.num_examples(c, 'train') == 3 and sources.num_classes(c) == 2
  original = sources.without_preresized(c)
  assert c.input.use_preresized and sources.dataset_name(original) == 'toyset'
  assert not sources.is_prepared(original)


def test_imagenet_missing_message_names_the_missing_archives(tmp_path):
  c = config_lib.base()
  c.dataset.data_dir = str(tmp_path / 'data')
  mdir = sources.manual_dir(c)
  data_utils.make_ilsvrc2012_manual_dir(os.fspath(mdir), write_val=False)
  missing = mdir / 'ILSVRC2012_img_val.tar'
  assert sources.check_manual_files(mdir) == [missing]
  message = sources.missing_message(c)
  assert f'missing: {missing}' in message
  assert 'ILSVRC2012_img_train.tar' not in message
  assert 'python -m alexnet_jax.prepare --config=configs/paper.py' in message
  assert f'--config.dataset.manual_dir={mdir}' in message
  assert ' --preresized' not in message
  c.input.use_preresized = True
  assert sources.missing_message(c).endswith(' --preresized')
  with pytest.raises(FileNotFoundError) as raised:  # training says the same
    sources.num_examples(c, 'train')
  assert str(raised.value) == sources.missing_message(c)
