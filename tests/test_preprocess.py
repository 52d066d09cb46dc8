"""Each preprocessing op against an independent NumPy computation on real ImageNet photos."""

import glob
import io
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax import preprocess

SAMPLE_DIR = os.environ.get('ALEXNET_IMAGENET_SAMPLE', '/work/shared/data/imagenet-sample')
PHOTOS = sorted(glob.glob(os.path.join(SAMPLE_DIR, '*.JPEG')))
pytestmark = pytest.mark.skipif(not PHOTOS, reason='no sample photos')


def _photo(name: str) -> bytes:
  (path,) = [p for p in PHOTOS if name in os.path.basename(p)]
  with open(path, 'rb') as f:
    return f.read()


def _weights(n_in: int, size: int, method: str) -> np.ndarray:
  """[size, n_in] resampling weights. 'bilinear': triangle filter as wide as the scale when
  shrinking (1 when enlarging), pixel centres at i + 0.5, renormalised at the borders.
  'area': the overlap of output pixel i's box [i s, (i+1) s) with input pixel j, over s."""
  scale = n_in / size
  if method == 'area':
    lo = np.arange(size)[:, None] * scale
    j = np.arange(n_in)[None, :]
    w = np.clip(np.minimum(lo + scale, j + 1) - np.maximum(lo, j), 0.0, None)
  else:
    support = 1.0 if method == 'fast' else max(scale, 1.0)   # 'fast': no antialiasing
    centres = (np.arange(size) + 0.5) * scale
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None] + 0.5 - centres[:, None]) / support)
  return w / w.sum(axis=1, keepdims=True)


def _np_resize(image: np.ndarray, size: int, method: str) -> np.ndarray:
  """Separable resize of [h, w, 3] to [size, size, 3], rounded to uint8."""
  if image.shape[:2] == (size, size):
    return image
  if method == 'area' and min(image.shape[:2]) <= size:
    method = 'bilinear'  # 'area' only shrinks; enlarging is bilinear
  x = image.astype(np.float64)
  out = np.einsum('yh,hwc->ywc', _weights(x.shape[0], size, method), x)
  out = np.einsum('xw,ywc->yxc', _weights(x.shape[1], size, method), out)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _np_window(data: bytes, y: int, x: int, h: int, w: int, size: int) -> np.ndarray:
  """The window, decoded at the largest DCT scale 1/r keeping min(h, w) / r >= size (libjpeg
  does the 1/r scaling; the crop is NumPy's)."""
  r = max(r for r in (1, 2, 4, 8) if min(h, w) >= r * size or r == 1)
  full = tf.io.decode_jpeg(data, channels=3, ratio=r).numpy()
  return full[y // r:y // r + h // r, x // r:x // r + w // r]


def _np_centre(data: bytes, size: int, method: str) -> np.ndarray:
  h, w = tf.image.extract_jpeg_shape(data).numpy()[:2]
  side = min(h, w)
  return _np_resize(_np_window(data, (h - side) // 2, (w - side) // 2, side, side, size),
                    size, method)


def _full_decode(data: bytes) -> np.ndarray:
  return tf.io.decode_jpeg(data, channels=3).numpy()


# ------------------------------------------------------------------------------ host


@pytest.mark.parametrize('method', preprocess.RESIZE_METHODS)
@pytest.mark.parametrize('name,size', [
    ('n01440764_tench', 256),        # landscape 500x375
    ('pencil_sharpener', 256),        # grayscale portrait
    ('n01530575_brambling', 227),
    ('n01440764_tench', 64),         # 375 >= 4 * 64: decoded at 1/4 by libjpeg
])
def test_decode_centre_matches_numpy(name, size, method):
  data = _photo(name)
  got = preprocess.decode_centre(tf.constant(data), size, method).numpy()
  ref = _np_centre(data, size, method)
  assert got.shape == (size, size, 3) and got.dtype == np.uint8
  diff = np.abs(got.astype(int) - ref.astype(int))
  assert diff.max() <= 1, diff.max()
  assert diff.mean() < 0.05


def test_decode_centre_upscales_small_and_shrinks_large_photos():
  by_size = sorted(PHOTOS, key=os.path.getsize)
  for path, size in ((by_size[0], 256), (by_size[-1], 64), (by_size[-1], 256)):
    data = open(path, 'rb').read()
    for method in preprocess.RESIZE_METHODS:
      got = preprocess.decode_centre(tf.constant(data), size, method).numpy()
      ref = _np_centre(data, size, method)
      assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, (path, size, method)
  # The smallest photo is enlarged; the largest is decoded at 1/8 for 64 (1024 >= 8 * 64).
  assert min(tf.image.extract_jpeg_shape(open(by_size[0], 'rb').read()).numpy()[:2]) < 256
  h, w, _ = tf.image.extract_jpeg_shape(open(by_size[-1], 'rb').read()).numpy()
  assert preprocess.jpeg_ratio_index(h, w, 64).numpy() == 3


def test_area_and_bilinear_agree_roughly():
  """Two antialiased filters: close on a real photo, unlike plain (aliasing) bilinear."""
  data = _photo('n01440764_tench')
  area = preprocess.decode_centre(tf.constant(data), 200, 'area').numpy().astype(int)
  tri = preprocess.decode_centre(tf.constant(data), 200, 'bilinear').numpy().astype(int)
  assert np.abs(area - tri).mean() < 2.0


def test_preresized_image_passes_through():
  image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
  for method in preprocess.RESIZE_METHODS:
    np.testing.assert_array_equal(preprocess.resize_uint8(tf.constant(image), 48, method),
                                  image)


def _encode(image: Image.Image, fmt: str) -> bytes:
  buf = io.BytesIO()
  image.save(buf, format=fmt)
  return buf.getvalue()


def test_png_grayscale_and_cmyk_become_rgb():
  photo = Image.open(io.BytesIO(_photo('n01440764_tench'))).convert('RGB')
  rgb = np.asarray(photo)
  png = _encode(photo, 'PNG')                       # a PNG named .JPEG, as in ImageNet
  gray = _encode(photo.convert('L'), 'JPEG')
  cmyk = _encode(photo.convert('CMYK'), 'JPEG')
  assert not preprocess.is_jpeg(tf.constant(png)).numpy()
  assert preprocess.is_jpeg(tf.constant(cmyk)).numpy()

  out_png = preprocess.decode_centre(tf.constant(png), 96).numpy()
  ref_png = _np_resize(rgb[:, 62:437], 96, 'area')  # 500x375: centre square at x 62
  assert np.abs(out_png.astype(int) - ref_png.astype(int)).max() <= 1

  out_gray = preprocess.decode_centre(tf.constant(gray), 96).numpy()
  assert out_gray.shape == (96, 96, 3)
  assert (out_gray == out_gray[..., :1]).all()  # R == G == B
  ref_gray = _np_centre(gray, 96, 'area')
  assert np.abs(out_gray.astype(int) - ref_gray.astype(int)).max() <= 2

  out_cmyk = preprocess.decode_centre(tf.constant(cmyk), 96).numpy()
  ref_cmyk = _np_resize(np.asarray(Image.open(io.BytesIO(cmyk)).convert('RGB'))[:, 62:437],
                       96, 'area')
  assert out_cmyk.shape == (96, 96, 3)
  assert np.abs(out_cmyk.astype(int) - ref_cmyk.astype(int)).mean() < 2.0


@pytest.mark.parametrize('method', preprocess.RESIZE_METHODS)
def test_random_resized_crop_is_the_seeded_box(method):
  data = _photo('n01440764_tench')
  full = _full_decode(data)
  boxes = set()
  for s in range(4):
    seed = tf.constant([7, s], tf.int64)
    got = preprocess.decode_random_resized_crop(tf.constant(data), 64, seed,
                                                method=method).numpy()
    again = preprocess.decode_random_resized_crop(tf.constant(data), 64, seed,
                                                  method=method).numpy()
    np.testing.assert_array_equal(got, again)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.constant(full.shape), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=preprocess.RESIZED_CROP_RATIO,
        area_range=preprocess.RESIZED_CROP_SCALE, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    (y, x, _), (h, w, _) = begin.numpy(), size.numpy()
    boxes.add((y, x, h, w))
    area = h * w / (full.shape[0] * full.shape[1])
    assert 0.08 - 1e-3 <= area <= 1.0 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    # Non-square box -> 64x64 (aspect distortion, as torchvision): resize each axis alone.
    ref = _np_resize(_np_window(data, y, x, h, w, 64), 64, method)
    assert got.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
  assert len(boxes) == 4  # the seed moves the box


# ------------------------------------------------------------------------------ device


@pytest.fixture(scope='module')
def batch():
  """Eight real photos at 64x64 (the host's output), and a non-constant 'mean image'."""
  names = [os.path.basename(p) for p in PHOTOS[:8]]
  images = np.stack([preprocess.decode_centre(tf.constant(_photo(n)), 64).numpy()
                     for n in names])
  mean = images.astype(np.float32).mean(axis=0) + np.linspace(0, 5, 64)[None, :, None]
  return images, mean.astype(np.float32)


def _np_lighting(alpha):
  return (preprocess.PCA_EIGVEC.astype(np.float64)
          @ (alpha.astype(np.float64) * preprocess.PCA_EIGVAL).T).T * 255.0


def test_lighting_formula():
  alpha = np.array([[1.0, 0.0, 0.0], [0.1, -0.2, 0.3]], np.float32)
  got = np.asarray(preprocess.lighting_shift(alpha))
  np.testing.assert_allclose(got[0], 0.2175 * 255 * np.array([-0.5675, -0.5808, -0.5836]),
                             rtol=1e-5)
  np.testing.assert_allclose(got, _np_lighting(alpha), rtol=1e-5, atol=1e-4)


def test_train_preprocess_matches_numpy(batch):
  images, mean = batch
  key = jax.random.key(3)
  crop_size, sigma = 48, 0.1
  out = jax.jit(lambda im, k: preprocess.train_preprocess(
      im, k, crop_size=crop_size, mean=mean, pca_sigma=sigma))(images, key)
  aug = jax.tree.map(np.asarray, preprocess.sample_augmentation(
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
  aug = preprocess.sample_augmentation(jax.random.key(0), 4000, image_size=256, crop_size=224,
                                       random_crop=True, flip=True, pca_sigma=0.1)
  oy, ox = np.asarray(aug['offset_y']), np.asarray(aug['offset_x'])
  assert oy.min() == 0 and oy.max() == 32 and ox.min() == 0 and ox.max() == 32
  assert abs(np.corrcoef(oy, ox)[0, 1]) < 0.1   # independent axes
  assert 0.45 < np.asarray(aug['flip']).mean() < 0.55
  np.testing.assert_allclose(np.asarray(aug['alpha']).std(axis=0), 0.1, rtol=0.1)
  off = preprocess.sample_augmentation(jax.random.key(0), 4, image_size=256, crop_size=224,
                                       random_crop=False, flip=False, pca_sigma=0.0)
  assert (np.asarray(off['offset_y']) == 16).all() and not np.asarray(off['flip']).any()


def test_train_preprocess_per_channel_mean_and_no_augmentation(batch):
  images, _ = batch
  channel = np.array([120.0, 110.0, 100.0], np.float32)
  out = preprocess.train_preprocess(images, jax.random.key(0), crop_size=48, mean=channel,
                                    random_crop=False, flip=False, pca_sigma=0.0)
  ref = images[:, 8:56, 8:56].astype(np.float32) - channel
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_train_preprocess_host_cropped_images(batch):
  """random_crop='resized': the host already yields S x S; the mean image is resized to S."""
  images, mean = batch
  small = images[:, :48, :48]
  out = preprocess.train_preprocess(small, jax.random.key(1), crop_size=48, mean=mean,
                                    flip=False, pca_sigma=0.0)
  ref_mean = np.asarray(jax.image.resize(mean, (48, 48, 3), 'linear'))
  np.testing.assert_allclose(np.asarray(out), small.astype(np.float32) - ref_mean, atol=1e-3)


def test_eval_centre_and_ten_crops(batch):
  images, mean = batch
  s = 40
  centre = np.asarray(preprocess.eval_preprocess(images, crop_size=s, mean=mean))
  np.testing.assert_allclose(centre, images[:, 12:52, 12:52] - mean[12:52, 12:52], atol=1e-4)
  ten = np.asarray(preprocess.eval_preprocess(images, crop_size=s, mean=mean, crops=10))
  assert ten.shape == (8, 10, s, s, 3)
  windows = [(12, 12), (0, 0), (0, 24), (24, 0), (24, 24)]
  for j, (y, x) in enumerate(windows):
    ref = images[:, y:y + s, x:x + s].astype(np.float32) - mean[y:y + s, x:x + s]
    np.testing.assert_allclose(ten[:, j], ref, atol=1e-4)
    np.testing.assert_allclose(ten[:, j + 5], ref[:, :, ::-1], atol=1e-4)
