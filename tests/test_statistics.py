"""statistics: the training-set mean image, computed once and cached under data_dir."""

import os

import data_utils
import numpy as np
import pytest

from alexnet_jax import config_lib, input_pipeline, sources, statistics

PHOTOS = data_utils.sample_jpegs()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return data_utils.make_class_folder(tmp_path_factory.mktemp('photos'), PHOTOS[:60])


@pytest.mark.skipif(not PHOTOS, reason='no sample photos')
def test_mean_image_is_the_training_mean_and_cached(tmp_path, folder):
  c = data_utils.folder_config(tmp_path / 'stats_tfds', folder)
  path = statistics.mean_image_path(c)
  assert not path.exists()
  mean = statistics.load_or_compute_mean_image(c)
  assert path.exists()  # written by the first call
  images = np.concatenate([b['image'][b['mask']] for b in
                           input_pipeline.create_eval_iterator(c, 'train', local_batch_size=16)])
  assert images.shape[0] == sources.num_examples(c, 'train')
  assert mean.shape == (40, 40, 3) and mean.dtype == np.float32
  np.testing.assert_allclose(mean, images.astype(np.float64).mean(axis=0), rtol=1e-5)
  np.testing.assert_array_equal(statistics.compute_mean_image(c), mean)
  assert os.fspath(path).startswith(str(tmp_path / 'stats_tfds' / 'alexnet_jax_stats'))
  np.save(path, np.full((40, 40, 3), 7.0, np.float32))  # the cache is what gets read
  assert (statistics.load_or_compute_mean_image(c) == 7.0).all()
  c.input.mean = 'channel'
  assert statistics.load_or_compute_mean_image(c).shape == (3,)
  c.input.mean = 'none'
  assert statistics.load_or_compute_mean_image(c) is None
  # The cache is per training split and resize_size, and shared with the pre-resized copy.
  other = data_utils.folder_config(tmp_path / 'stats_tfds', folder, resize_size=48)
  assert statistics.mean_image_path(other) != path
  other.dataset.train_split = 'train[:50%]'
  assert os.fspath(statistics.mean_image_path(other)).endswith('_train_-50pc_48.npy')
  c.input.use_preresized = True
  assert statistics.mean_image_path(c) == path


def test_synthetic_has_no_mean_and_no_file(tmp_path):
  c = config_lib.base()
  c.dataset.name = sources.SYNTHETIC
  c.dataset.data_dir = str(tmp_path)
  assert statistics.load_or_compute_mean_image(c) is None
  assert not (tmp_path / statistics.STATS_DIR).exists()
