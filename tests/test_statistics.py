"""statistics: the training-set mean image, computed once and cached under data_dir."""

import os

import data_utils
import numpy as np
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.data import pipeline, sources, statistics

PHOTOS = data_utils.sample_jpegs()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return data_utils.make_class_folder(tmp_path_factory.mktemp('photos'), PHOTOS[:60])


def test_mean_image_is_the_training_mean_and_cached(tmp_path, folder):
  c = data_utils.folder_config(tmp_path / 'stats_tfds', folder)
  path = statistics.mean_image_path(c)
  assert not path.exists()
  mean = statistics.load_or_compute_mean_image(c)
  assert path.exists()  # written by the first call
  images = np.concatenate([b['image'][b['mask']] for b in
                           pipeline.create_eval_iterator(c, 'train', local_batch_size=16)])
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
  # Squashed images are other pixels: their own cache; the default mode keeps the old name.
  squash = data_utils.folder_config(tmp_path / 'stats_tfds', folder, resize_mode='squash')
  assert os.fspath(statistics.mean_image_path(squash)) == os.fspath(path)[:-4] + '_squash.npy'
  assert not os.fspath(path).endswith('_squash.npy')


def test_synthetic_has_no_mean_and_no_file(tmp_path):
  c = config_lib.base()
  c.dataset.name = sources.SYNTHETIC
  c.dataset.data_dir = str(tmp_path)
  assert statistics.load_or_compute_mean_image(c) is None
  assert not (tmp_path / statistics.STATS_DIR).exists()


# ------------------------------------------------------------------------- PCA lighting


def _host_train_images(c):
  return np.concatenate([b['image'][b['mask']] for b in pipeline.create_eval_iterator(
      c, c.dataset.train_split, local_batch_size=16)])


def _numpy_pca(images):
  """Independent reference: np.cov over every pixel in [0, 1], np.linalg.eig, sorted."""
  pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
  cov = np.cov(pixels, rowvar=False, bias=True)
  eigval, eigvec = np.linalg.eig(cov)
  order = np.argsort(eigval)[::-1]
  return cov, eigval[order], eigvec[:, order]


def _assert_same_axes(got, want, atol):
  """Eigenvectors agree up to sign (alpha is symmetric, the sign is a convention)."""
  dots = np.abs(np.sum(np.asarray(got, np.float64) * want, axis=0))
  np.testing.assert_allclose(dots, 1.0, atol=atol)


def test_rgb_pca_is_numpys_on_the_sample_photos(tmp_path, folder):
  c = data_utils.folder_config(tmp_path / 'pca_tfds', folder)
  images = _host_train_images(c)
  got = statistics.compute_rgb_pca(c)
  cov, eigval, eigvec = _numpy_pca(images)
  assert int(got['images']) == len(images) == sources.num_examples(c, 'train')
  np.testing.assert_allclose(got['covariance'], cov, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(got['eigval'], eigval, rtol=1e-9)
  assert (np.diff(got['eigval']) < 0).all()
  _assert_same_axes(got['eigvec'], eigvec, atol=1e-9)
  np.testing.assert_allclose(got['eigvec'].T @ got['eigvec'], np.eye(3), atol=1e-12)
  # Against an independent decode (PIL, exact box) of the same photos: the host's
  # shrink filter moves the statistics by about 1% (0.6% on the full-size originals,
  # 1.4% on tests/data's copies, shrunk to a shorter side of 192).
  listing = sources.folder_listing(c.dataset.folder, 'train')
  _, eigval_pil, eigvec_pil = _numpy_pca(
      np.stack([data_utils.resize_center_crop_pil(p, 40) for p in listing.paths]))
  np.testing.assert_allclose(got['eigval'], eigval_pil, rtol=0.03)
  _assert_same_axes(got['eigvec'][:, :2], eigvec_pil[:, :2], atol=1e-3)


def test_statistics_one_pass_cached_and_read_back(tmp_path, folder, monkeypatch):
  c = data_utils.folder_config(tmp_path / 'both_tfds', folder)
  passes = []
  real = statistics._training_images
  monkeypatch.setattr(statistics, '_training_images',
                      lambda config: (passes.append(1), real(config))[1])
  stats = statistics.load_or_compute_statistics(c)
  assert len(passes) == 1                        # the mean and the PCA from one pass
  pca_path = statistics.rgb_pca_path(c)
  assert pca_path.exists() and statistics.mean_image_path(c).exists()
  assert os.fspath(pca_path).endswith('_40_rgb_pca.npz')
  assert pca_path.parent == statistics.mean_image_path(c).parent
  ref = statistics.compute_rgb_pca(c)
  np.testing.assert_allclose(stats.pca.eigval, ref['eigval'], rtol=1e-6)
  assert stats.pca.source == 'dataset' and stats.pca.images == int(ref['images'])
  assert stats.pca.path == os.fspath(pca_path)
  assert stats.pca.eigval.dtype == np.float32 and stats.pca.eigvec.shape == (3, 3)
  assert f'folder training pixels ({stats.pca.images} images, cached at {pca_path})' in (
      stats.pca.describe())
  # The second call reads the cache: no pass at all.
  monkeypatch.setattr(statistics, '_training_images', lambda config: 1 / 0)
  again = statistics.load_or_compute_statistics(c)
  np.testing.assert_array_equal(again.pca.eigval, stats.pca.eigval)
  np.testing.assert_array_equal(again.mean, stats.mean)
  statistics._write(pca_path, {**ref, 'eigval': np.array([3.0, 2.0, 1.0])})
  assert statistics.load_or_compute_rgb_pca(c).eigval.tolist() == [3.0, 2.0, 1.0]
  # A cap is its own file, unless the all-images one is there (it is: read that).
  c.input.pca_max_images = 5
  assert os.fspath(statistics.rgb_pca_path(c)).endswith('_rgb_pca_n5.npz')
  assert statistics.load_or_compute_rgb_pca(c).path == os.fspath(pca_path)
  # No lighting, no PCA.
  c.input.pca_lighting = 0.0
  assert statistics.load_or_compute_statistics(c).pca is None


def test_pca_max_images_reads_only_the_first_images(tmp_path, folder, monkeypatch):
  c = data_utils.folder_config(tmp_path / 'cap_tfds', folder, pca_max_images=5)
  pca = statistics.load_or_compute_rgb_pca(c)
  assert pca.images == 5 and pca.path.endswith('_rgb_pca_n5.npz')
  _, eigval, eigvec = _numpy_pca(_host_train_images(c)[:5])
  np.testing.assert_allclose(pca.eigval, eigval, rtol=1e-5)
  _assert_same_axes(pca.eigvec, eigvec, atol=1e-5)
  assert not statistics.mean_image_path(c).exists()  # the PCA alone: the mean not computed


def test_published_constants_are_refused_for_other_datasets(tmp_path):
  from configs import default, paper
  c = default.get_config()                  # alexnet_shapes: computes its own
  assert c.input.pca_source == 'dataset' and c.input.pca_reading == 'unit_pixel_eigenvalues'
  assert paper.get_config().input.pca_source == 'dataset'
  c.input.pca_source = 'published'
  with pytest.raises(ValueError, match="pca_source='published' is ImageNet's.*"
                     "'alexnet_shapes'.*--config.input.pca_source=dataset"):
    config_lib.validate(c)
  c.dataset.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match="pca_source='published'"):
    statistics.load_or_compute_statistics(c)
  c.input.pca_lighting = 0.0                # no lighting: nothing is applied, nothing refused
  config_lib.validate(c)
  c = paper.get_config()
  c.input.pca_source = 'published'
  config_lib.validate(c)
  pca = statistics.load_or_compute_rgb_pca(c)
  assert pca.source == 'published' and pca.path is None
  assert pca.describe().startswith('published ImageNet constants')
  np.testing.assert_array_equal(pca.eigval, np.float32([0.2175, 0.0188, 0.0045]))
  c.input.pca_max_images = 0
  with pytest.raises(ValueError, match='input.pca_max_images=0 is invalid'):
    config_lib.validate(c)


def test_synthetic_uses_the_published_pca_without_a_pass(tmp_path):
  c = config_lib.base()
  c.dataset.name = sources.SYNTHETIC
  c.dataset.data_dir = str(tmp_path)
  stats = statistics.load_or_compute_statistics(c)
  assert stats.mean is None and stats.pca.source == 'published'
  assert not (tmp_path / statistics.STATS_DIR).exists()
