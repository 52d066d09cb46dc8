"""Each host decode op against an independent NumPy computation on real ImageNet photos."""

import io
import os

import data_utils
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.data import decode

PHOTOS = data_utils.sample_jpegs()


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


@pytest.mark.parametrize('method', decode.RESIZE_METHODS)
@pytest.mark.parametrize('name,size', [
    ('n01440764_tench', 256),        # landscape 500x375
    ('pencil_sharpener', 256),        # grayscale portrait
    ('n01530575_brambling', 227),
    ('n01440764_tench', 64),         # 375 >= 4 * 64: decoded at 1/4 by libjpeg
])
def test_decode_centre_matches_numpy(name, size, method):
  data = _photo(name)
  got = decode.decode_centre(tf.constant(data), size, method).numpy()
  ref = _np_centre(data, size, method)
  assert got.shape == (size, size, 3) and got.dtype == np.uint8
  diff = np.abs(got.astype(int) - ref.astype(int))
  assert diff.max() <= 1, diff.max()
  assert diff.mean() < 0.05


@pytest.mark.parametrize('method', decode.RESIZE_METHODS)
@pytest.mark.parametrize('name,size', [
    ('n01440764_tench', 256),        # landscape 500x375: both sides to 256
    ('pencil_sharpener', 227),        # grayscale portrait
    ('n01440764_tench', 64),         # 375 >= 4 * 64: decoded at 1/4 by libjpeg
])
def test_decode_squash_is_the_whole_photo_resized_to_a_square(name, size, method):
  """input.resize_mode='squash' (Caffe): the whole photo, both sides to `size`."""
  data = _photo(name)
  h, w = tf.image.extract_jpeg_shape(data).numpy()[:2]
  got = decode.decode_resized(tf.constant(data), size, method, 'squash').numpy()
  ref = _np_resize(_np_window(data, 0, 0, h, w, size), size, method)
  assert got.shape == (size, size, 3) and got.dtype == np.uint8
  diff = np.abs(got.astype(int) - ref.astype(int))
  assert diff.max() <= 1, diff.max()
  assert diff.mean() < 0.05
  # Not the centre square: the squash keeps the sides the centre crop cuts away.
  centre = decode.decode_resized(tf.constant(data), size, method, 'shorter_side').numpy()
  np.testing.assert_array_equal(centre, decode.decode_centre(tf.constant(data), size,
                                                             method).numpy())
  assert np.abs(centre.astype(int) - got.astype(int)).mean() > 10
  with pytest.raises(ValueError, match="resize mode 'stretch'"):
    decode.decode_resized(tf.constant(data), size, method, 'stretch')


def test_decode_centre_upscales_small_and_shrinks_large_photos():
  by_size = sorted(PHOTOS, key=os.path.getsize)
  for path, size in ((by_size[0], 256), (by_size[-1], 64), (by_size[-1], 256)):
    data = open(path, 'rb').read()
    for method in decode.RESIZE_METHODS:
      got = decode.decode_centre(tf.constant(data), size, method).numpy()
      ref = _np_centre(data, size, method)
      assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, (path, size, method)
  # The smallest photo is enlarged; the largest is decoded at 1/8 for 64 (1024 >= 8 * 64).
  assert min(tf.image.extract_jpeg_shape(open(by_size[0], 'rb').read()).numpy()[:2]) < 256
  h, w, _ = tf.image.extract_jpeg_shape(open(by_size[-1], 'rb').read()).numpy()
  assert decode.jpeg_ratio_index(h, w, 64).numpy() == 3


def test_area_and_bilinear_agree_roughly():
  """Two antialiased filters: close on a real photo, unlike plain (aliasing) bilinear."""
  data = _photo('n01440764_tench')
  area = decode.decode_centre(tf.constant(data), 200, 'area').numpy().astype(int)
  tri = decode.decode_centre(tf.constant(data), 200, 'bilinear').numpy().astype(int)
  assert np.abs(area - tri).mean() < 2.0


def test_preresized_image_passes_through():
  image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
  for method in decode.RESIZE_METHODS:
    np.testing.assert_array_equal(decode.resize_uint8(tf.constant(image), 48, method),
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
  assert not decode.is_jpeg(tf.constant(png)).numpy()
  assert decode.is_jpeg(tf.constant(cmyk)).numpy()

  out_png = decode.decode_centre(tf.constant(png), 96).numpy()
  ref_png = _np_resize(rgb[:, 62:437], 96, 'area')  # 500x375: centre square at x 62
  assert np.abs(out_png.astype(int) - ref_png.astype(int)).max() <= 1

  out_gray = decode.decode_centre(tf.constant(gray), 96).numpy()
  assert out_gray.shape == (96, 96, 3)
  assert (out_gray == out_gray[..., :1]).all()  # R == G == B
  ref_gray = _np_centre(gray, 96, 'area')
  assert np.abs(out_gray.astype(int) - ref_gray.astype(int)).max() <= 2

  out_cmyk = decode.decode_centre(tf.constant(cmyk), 96).numpy()
  ref_cmyk = _np_resize(np.asarray(Image.open(io.BytesIO(cmyk)).convert('RGB'))[:, 62:437],
                       96, 'area')
  assert out_cmyk.shape == (96, 96, 3)
  assert np.abs(out_cmyk.astype(int) - ref_cmyk.astype(int)).mean() < 2.0


@pytest.mark.parametrize('method', decode.RESIZE_METHODS)
def test_random_resized_crop_is_the_seeded_box(method):
  data = _photo('n01440764_tench')
  full = _full_decode(data)
  boxes = set()
  for s in range(4):
    seed = tf.constant([7, s], tf.int64)
    got = decode.decode_random_resized_crop(tf.constant(data), 64, seed,
                                                method=method).numpy()
    again = decode.decode_random_resized_crop(tf.constant(data), 64, seed,
                                                  method=method).numpy()
    np.testing.assert_array_equal(got, again)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.constant(full.shape), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=decode.RESIZED_CROP_RATIO,
        area_range=decode.RESIZED_CROP_SCALE, max_attempts=10,
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
