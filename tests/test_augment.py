"""Each device preprocessing op against an independent NumPy computation on real photos,
and `device_preprocess`, the one entry the jitted steps call."""

import logging

import data_utils
import jax
import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax.common import config_lib, fields
from alexnet_jax.data import augment, decode

PHOTOS = data_utils.sample_jpegs()


def _host_images(paths, size):
  """What the host ships: uint8 [B, size, size, 3] centre squares (decode.decode_centre)."""
  return np.stack([decode.decode_centre(tf.constant(open(p, 'rb').read()), size).numpy()
                   for p in paths])


@pytest.fixture(scope='module')
def batch():
  """Eight real photos at 64x64 (the host's output), and a non-constant 'mean image'."""
  images = _host_images(PHOTOS[:8], 64)
  mean = images.astype(np.float32).mean(axis=0) + np.linspace(0, 5, 64)[None, :, None]
  return images, mean.astype(np.float32)


PUBLISHED = {'eigval': augment.PCA_EIGVAL, 'eigvec': augment.PCA_EIGVEC}


def _np_lighting(alpha, eigval=augment.PCA_EIGVAL, eigvec=augment.PCA_EIGVEC,
                 reading='unit_pixel_eigenvalues'):
  scale = np.asarray(eigval, np.float64)
  scale = scale if reading == 'unit_pixel_eigenvalues' else np.sqrt(scale)
  return (np.asarray(eigvec, np.float64) @ (alpha.astype(np.float64) * scale).T).T * 255.0


def test_lighting_formula():
  alpha = np.array([[1.0, 0.0, 0.0], [0.1, -0.2, 0.3]], np.float32)
  got = np.asarray(augment.lighting_shift(alpha))
  np.testing.assert_allclose(got[0], 0.2175 * 255 * np.array([-0.5675, -0.5808, -0.5836]),
                             rtol=1e-5)
  np.testing.assert_allclose(got, _np_lighting(alpha), rtol=1e-5, atol=1e-4)
  # Krizhevsky's cuda-convnet2: alpha times the std along each component, in 0-255 units.
  got = np.asarray(augment.lighting_shift(alpha, reading='component_std'))
  np.testing.assert_allclose(got[0], np.sqrt(0.2175 * 255**2) * np.array([-0.5675, -0.5808,
                                                                          -0.5836]), rtol=1e-5)
  np.testing.assert_allclose(got, _np_lighting(alpha, reading='component_std'), rtol=1e-5,
                             atol=1e-4)
  with pytest.raises(ValueError, match='input.pca_reading'):
    augment.lighting_shift(alpha, reading='sqrt')


def test_old_reading_names_are_aliases_and_unknown_ones_are_refused(caplog):
  """'paper' and 'cuda_convnet2' were the readings' names: they still compute the same
  noise, and validate() rewrites them to the new names with a log line."""
  assert config_lib.choice('input.pca_reading', 'paper') == 'unit_pixel_eigenvalues'
  assert config_lib.choice('input.pca_reading', 'cuda_convnet2') == 'component_std'
  assert config_lib.choice('input.pca_reading', 'component_std') == 'component_std'
  alpha = np.array([[0.1, -0.2, 0.3]], np.float32)
  for old, new in (('paper', 'unit_pixel_eigenvalues'), ('cuda_convnet2', 'component_std')):
    np.testing.assert_array_equal(np.asarray(augment.lighting_shift(alpha, reading=old)),
                                  np.asarray(augment.lighting_shift(alpha, reading=new)))
  c = config_lib.base()
  assert c.input.pca_reading == 'unit_pixel_eigenvalues'       # the default is unchanged
  c.input.pca_reading = 'cuda_convnet2'
  with caplog.at_level(logging.INFO):
    config_lib.validate(c)
  assert c.input.pca_reading == 'component_std'
  assert "--config.input.pca_reading=component_std" in caplog.text
  for bad in ('sqrt', 'Paper', 'cuda-convnet2'):
    with pytest.raises(ValueError) as e:
      config_lib.validate(fields.set_fields(config_lib.base(), {'input.pca_reading': bad}))
    assert str(e.value).startswith(
        f"input.pca_reading={bad!r} is invalid; allowed: 'unit_pixel_eigenvalues', "
        "'component_std' (old names: 'paper' for 'unit_pixel_eigenvalues', 'cuda_convnet2' "
        "for 'component_std')")


@pytest.mark.parametrize('reading', ['unit_pixel_eigenvalues', 'component_std'])
def test_lighting_noise_in_pixel_levels(reading):
  """The std of the per-image shift per channel, sampled, is lighting_noise_std's."""
  rng = np.random.default_rng(0)
  eigval, eigvec = np.float32([0.19, 0.016, 0.004]), np.linalg.qr(rng.normal(size=(3, 3)))[0]
  alpha = 0.1 * rng.standard_normal((200_000, 3)).astype(np.float32)
  shift = np.asarray(augment.lighting_shift(alpha, eigval, eigvec.astype(np.float32), reading))
  want = augment.lighting_noise_std(eigval, eigvec, 0.1, reading)
  np.testing.assert_allclose(shift.std(axis=0), want, rtol=0.01)
  # Published constants, sigma 0.1: about 3 levels (paper) vs about 7 (cuda-convnet2).
  std = augment.lighting_noise_std(augment.PCA_EIGVAL, augment.PCA_EIGVEC, 0.1, reading)
  lo, hi = (3.0, 3.3) if reading == 'unit_pixel_eigenvalues' else (7.0, 7.4)
  assert ((lo < std) & (std < hi)).all(), std


def test_train_preprocess_matches_numpy(batch):
  images, mean = batch
  key = jax.random.key(3)
  crop_size, sigma = 48, 0.1
  out = jax.jit(lambda im, k: augment.train_preprocess(
      im, k, crop_size=crop_size, mean=mean, pca_sigma=sigma))(images, key)
  aug = jax.tree.map(np.asarray, augment.sample_augmentation(
      key, len(images), image_size=64, crop_size=crop_size, random_crop=True, flip=True,
      pca_sigma=sigma))
  assert out.shape == (8, 48, 48, 3) and out.dtype == np.float32
  assert len(set(zip(aug['offset_y'], aug['offset_x'], strict=True))) > 1
  assert 0 < aug['flip'].sum() < 8
  shift = _np_lighting(aug['alpha'])
  for i in range(len(images)):
    y, x = aug['offset_y'][i], aug['offset_x'][i]
    ref = (images[i, y:y + crop_size, x:x + crop_size].astype(np.float64)
           - mean[y:y + crop_size, x:x + crop_size])
    if aug['flip'][i]:
      ref = ref[:, ::-1]
    ref = ref + shift[i]
    np.testing.assert_allclose(np.asarray(out[i]), ref, atol=1e-3)


def test_augmentation_distribution():
  aug = augment.sample_augmentation(jax.random.key(0), 4000, image_size=256, crop_size=224,
                                       random_crop=True, flip=True, pca_sigma=0.1)
  oy, ox = np.asarray(aug['offset_y']), np.asarray(aug['offset_x'])
  assert oy.min() == 0 and oy.max() == 32 and ox.min() == 0 and ox.max() == 32
  assert abs(np.corrcoef(oy, ox)[0, 1]) < 0.1   # independent axes
  assert 0.45 < np.asarray(aug['flip']).mean() < 0.55
  np.testing.assert_allclose(np.asarray(aug['alpha']).std(axis=0), 0.1, rtol=0.1)
  off = augment.sample_augmentation(jax.random.key(0), 4, image_size=256, crop_size=224,
                                       random_crop=False, flip=False, pca_sigma=0.0)
  assert (np.asarray(off['offset_y']) == 16).all() and not np.asarray(off['flip']).any()


def test_train_preprocess_per_channel_mean_and_no_augmentation(batch):
  images, _ = batch
  channel = np.array([120.0, 110.0, 100.0], np.float32)
  out = augment.train_preprocess(images, jax.random.key(0), crop_size=48, mean=channel,
                                    random_crop=False, flip=False, pca_sigma=0.0)
  ref = images[:, 8:56, 8:56].astype(np.float32) - channel
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_train_preprocess_host_cropped_images(batch):
  """random_crop='resized': the host already yields S x S; the mean image is resized to S."""
  images, mean = batch
  small = images[:, :48, :48]
  out = augment.train_preprocess(small, jax.random.key(1), crop_size=48, mean=mean,
                                    flip=False, pca_sigma=0.0)
  ref_mean = np.asarray(jax.image.resize(mean, (48, 48, 3), 'linear'))
  np.testing.assert_allclose(np.asarray(out), small.astype(np.float32) - ref_mean, atol=1e-3)


def test_eval_centre_and_ten_crops(batch):
  images, mean = batch
  s = 40
  centre = np.asarray(augment.eval_preprocess(images, crop_size=s, mean=mean))
  np.testing.assert_allclose(centre, images[:, 12:52, 12:52] - mean[12:52, 12:52], atol=1e-4)
  ten = np.asarray(augment.eval_preprocess(images, crop_size=s, mean=mean, crops=10))
  assert ten.shape == (8, 10, s, s, 3)
  windows = [(12, 12), (0, 0), (0, 24), (24, 0), (24, 24)]
  for j, (y, x) in enumerate(windows):
    ref = images[:, y:y + s, x:x + s].astype(np.float32) - mean[y:y + s, x:x + s]
    np.testing.assert_allclose(ten[:, j], ref, atol=1e-4)
    np.testing.assert_allclose(ten[:, j + 5], ref[:, :, ::-1], atol=1e-4)


def test_device_preprocess_from_config():
  c = config_lib.base()
  c.input.resize_size = 40
  c.model.input_size = 32
  images = _host_images(PHOTOS[:4], 40)
  mean = np.full((40, 40, 3), 100.0, np.float32)
  fn = jax.jit(lambda im, k: augment.device_preprocess(im, k, config=c, mean=mean, train=True,
                                                       lighting=PUBLISHED))
  out = fn(images, jax.random.key(0))
  assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
  assert not np.array_equal(out, fn(images, jax.random.key(1)))
  ev = augment.device_preprocess(images, None, config=c, mean=mean, train=False)
  np.testing.assert_allclose(ev, images[:, 4:36, 4:36] - 100.0)
  c.input.eval_crops = 10
  ten = augment.device_preprocess(images, None, config=c, mean=None, train=False)
  assert ten.shape == (4, 10, 32, 32, 3)


def test_device_preprocess_applies_the_input_scale():
  c = config_lib.base()
  c.input.resize_size = 40
  c.model.input_size = 32
  images = _host_images(PHOTOS[:4], 40)
  mean = np.full((40, 40, 3), 100.0, np.float32)
  key = jax.random.key(2)
  unscaled = augment.device_preprocess(images, key, config=c, mean=mean, train=True,
                                      lighting=PUBLISHED)
  c.input.scale = 1 / 64
  scaled = augment.device_preprocess(images, key, config=c, mean=mean, train=True,
                                    lighting=PUBLISHED)
  np.testing.assert_allclose(scaled, np.asarray(unscaled) / 64, rtol=1e-6)
  ev = augment.device_preprocess(images, None, config=c, mean=mean, train=False)
  np.testing.assert_allclose(ev, (images[:, 4:36, 4:36] - 100.0) / 64, rtol=1e-6)


def _former_lighting_shift(alpha, *unused):
  """lighting_shift before the PCA became an input: ImageNet's constants in the trace."""
  return (alpha * augment.PCA_EIGVAL) @ augment.PCA_EIGVEC.T * 255.0


@pytest.mark.parametrize('batch_size', [4, 16])
def test_published_lighting_as_an_input_is_bit_identical_to_the_former_constants(
    batch_size, monkeypatch):
  c = config_lib.base()
  c.input.resize_size, c.model.input_size = 40, 32
  images = _host_images((PHOTOS * 4)[:batch_size], 40)
  mean = np.random.default_rng(0).uniform(90, 110, (40, 40, 3)).astype(np.float32)
  key = jax.random.key(5)
  now = jax.jit(lambda im, k, m, light: augment.device_preprocess(
      im, k, config=c, mean=m, train=True, lighting=light))(images, key, mean, PUBLISHED)
  monkeypatch.setattr(augment, 'lighting_shift', _former_lighting_shift)
  before = jax.jit(lambda im, k, m: augment.device_preprocess(
      im, k, config=c, mean=m, train=True, lighting=PUBLISHED))(images, key, mean)
  np.testing.assert_array_equal(now, before)


def test_device_preprocess_lighting_is_an_input():
  """The eigen-decomposition enters as arrays (not constants of the trace): another
  dataset's needs no recompilation, and the config's reading applies to it."""
  c = config_lib.base()
  c.input.resize_size, c.model.input_size = 40, 32
  images = _host_images(PHOTOS[:4], 40)
  mean = np.full((40, 40, 3), 100.0, np.float32)
  key = jax.random.key(5)
  step = jax.jit(lambda im, k, light: augment.device_preprocess(
      im, k, config=c, mean=mean, train=True, lighting=light))
  step(images, key, PUBLISHED)
  # Another dataset's statistics: the same compiled function, the shift they give.
  other = {'eigval': np.float32([0.19, 0.016, 0.004]),
           'eigvec': np.float32([[0.56, 0.72, -0.4], [0.58, 0.0, 0.81], [0.59, -0.69, -0.42]])}
  got = step(images, key, other)
  assert step._cache_size() == 1
  aug = augment.sample_augmentation(key, 4, image_size=40, crop_size=32, random_crop=True,
                                    flip=True, pca_sigma=0.1)
  unlit = jax.jit(lambda im, k: augment.train_preprocess(im, k, crop_size=32, mean=mean,
                                                         pca_sigma=0.0))(images, key)
  shift = _np_lighting(np.asarray(aug['alpha']), other['eigval'], other['eigvec'])
  np.testing.assert_allclose(np.asarray(got - unlit), np.broadcast_to(
      shift[:, None, None, :], got.shape), atol=1e-3)
  # The reading is the config's: cuda-convnet2 scales by sqrt(eigval).
  c.input.pca_reading = 'component_std'
  got = jax.jit(lambda im, k, light: augment.device_preprocess(
      im, k, config=c, mean=mean, train=True, lighting=light))(images, key, other)
  shift = _np_lighting(np.asarray(aug['alpha']), other['eigval'], other['eigvec'],
                       'component_std')
  np.testing.assert_allclose(np.asarray(got - unlit), np.broadcast_to(
      shift[:, None, None, :], got.shape), atol=1e-3)
  with pytest.raises(ValueError, match='needs `lighting`'):
    augment.device_preprocess(images, key, config=c, mean=mean, train=True)
