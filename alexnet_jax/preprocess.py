"""The paper's preprocessing as pure ops: TensorFlow on the host, JAX on the accelerator.

The split follows one rule: the host does only what needs the encoded bytes (decode, and a
crop that lets `decode_and_crop_jpeg` skip pixels), the accelerator does everything that is
cheap arithmetic on pixels (random crop, flip, PCA lighting, mean subtraction). The host
therefore ships a fixed R x R uint8 image (R = input.resize_size, the paper's 256) and one
decode per example is all the CPU work a training step costs.

Nothing here reads a config: `input_pipeline` maps config fields to these arguments, so the
ops can be tested (and reused by evaluate/predict) one at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

try:  # TensorFlow is the host's decoder only; it must never take GPU memory from JAX.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # Devices already initialised elsewhere (with the same setting).
  pass

# PCA of ImageNet RGB pixels in [0, 1] (ALEXNET.md); the lighting noise is scaled x255
# because images here are in [0, 255].
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)  # columns are eigenvectors

# torchvision's RandomResizedCrop ranges.
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


# ------------------------------------------------------------------------------ host (TF)


def is_jpeg(data: tf.Tensor) -> tf.Tensor:
  """True when the bytes start with the JPEG SOI marker (ImageNet has PNGs named .JPEG)."""
  return tf.equal(tf.strings.substr(data, 0, 3), b'\xff\xd8\xff')


def centre_square(height, width):
  """(offset_y, offset_x, side) of the largest centred square."""
  side = tf.minimum(height, width)
  return (height - side) // 2, (width - side) // 2, side


RESIZE_METHODS = ('area', 'bilinear', 'fast')


def resize_uint8(image: tf.Tensor, size: int, method: str = 'area') -> tf.Tensor:
  """uint8 [h, w, 3] -> uint8 [size, size, 3], antialiased when shrinking.

  'area' (default): box filter when both sides shrink (OpenCV's INTER_AREA), ~1.8x cheaper
  on the host than 'bilinear', which is the triangle filter of PIL / torchvision (use it to
  match torchvision's evaluation exactly). Enlarging is plain bilinear for both, and an
  image already size x size (the pre-resized copy) is passed through untouched.
  """
  if method not in RESIZE_METHODS:
    raise ValueError(f'resize method {method!r}: expected one of {RESIZE_METHODS}')
  shape = tf.shape(image)
  h, w = shape[0], shape[1]

  def resized():
    if method == 'bilinear':
      out = tf.image.resize(image, [size, size], method='bilinear', antialias=True)
    elif method == 'fast':
      # No antialiasing: the DCT scaling above already halves anything 2x too big, so
      # what is left shrinks by < 2x; about 20% more host throughput than 'area'.
      out = tf.image.resize(image, [size, size], method='bilinear', antialias=False)
    else:
      out = tf.cond(
          tf.minimum(h, w) > size,
          lambda: tf.image.resize(image, [size, size], method='area'),
          lambda: tf.image.resize(image, [size, size], method='bilinear', antialias=True))
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

  out = tf.cond(tf.logical_and(tf.equal(h, size), tf.equal(w, size)), lambda: image, resized)
  return tf.ensure_shape(out, [size, size, 3])


JPEG_RATIOS = (1, 2, 4, 8)


def jpeg_ratio_index(height, width, size):
  """Index in JPEG_RATIOS of the largest libjpeg DCT down-scaling that keeps both sides
  >= size: decoding at 1/r is cheaper than decoding whole and shrinking (and antialiased)."""
  short = tf.minimum(height, width)
  return sum(tf.cast(short >= r * size, tf.int32) for r in JPEG_RATIOS[1:])


def _decode_window(data: tf.Tensor, window_fn, size: int) -> tf.Tensor:
  """Decodes only the window `window_fn(h, w) -> (y, x, h, w)` as uint8 [h', w', 3].

  JPEGs go through `decode_and_crop_jpeg` (pixels outside the window are never
  materialised), at the DCT scale `jpeg_ratio` allows for a later resize to `size`
  (then the window is in the scaled image's pixels); anything else (PNG, GIF, BMP, WebP) is
  decoded whole, then cropped. Grayscale and CMYK come out RGB.
  """

  def jpeg():
    shape = tf.image.extract_jpeg_shape(data)
    y, x, h, w = window_fn(shape[0], shape[1])

    def at(r):
      return lambda: tf.io.decode_and_crop_jpeg(
          data, tf.stack([y // r, x // r, h // r, w // r]), channels=3, ratio=r,
          dct_method='INTEGER_FAST')

    return tf.switch_case(jpeg_ratio_index(h, w, size), [at(r) for r in JPEG_RATIOS])

  def other():
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    shape = tf.shape(image)
    y, x, h, w = window_fn(shape[0], shape[1])
    return image[y:y + h, x:x + w]

  image = tf.cond(is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def decode_centre(data: tf.Tensor, size: int, method: str = 'area') -> tf.Tensor:
  """Paper: shorter side -> `size`, centre `size` x `size` crop; uint8 [size, size, 3].

  Done as crop-then-resize (the same pixels up to sub-pixel rounding), which decodes and
  resizes only the centre square.
  """

  def window(h, w):
    y, x, side = centre_square(h, w)
    return y, x, side, side

  return resize_uint8(_decode_window(data, window, size), size, method)


def decode_random_resized_crop(data: tf.Tensor, size: int, seed: tf.Tensor,
                               scale=RESIZED_CROP_SCALE, ratio=RESIZED_CROP_RATIO,
                               method: str = 'area') -> tf.Tensor:
  """torchvision's RandomResizedCrop: a random box of `scale` of the area and `ratio` aspect,
  decoded alone and resized to `size` x `size`. Stateless: the box is a function of `seed`
  (shape [2]), so a resumed run draws the same boxes."""

  def window(h, w):
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([h, w, 3]), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin[0], begin[1], box_size[0], box_size[1]

  return resize_uint8(_decode_window(data, window, size), size, method)


# ------------------------------------------------------------------------ device (JAX)


def lighting_shift(alpha: jax.Array) -> jax.Array:
  """Paper's PCA colour noise for pixels in [0, 255]: eigvec @ (alpha * eigval) * 255.

  alpha: [B, 3] -> [B, 3], one RGB offset per image.
  """
  return (alpha * PCA_EIGVAL) @ PCA_EIGVEC.T * 255.0


def sample_augmentation(key: jax.Array, batch: int, *, image_size: int, crop_size: int,
                        random_crop: bool, flip: bool, pca_sigma: float) -> dict[str, jax.Array]:
  """Per-image random numbers of one training batch, exposed so tests can replay them.

  Returns offset_y, offset_x (int32 [B], uniform in [0, image_size - crop_size], or the
  centre when `random_crop` is False), flip (bool [B]) and alpha (float32 [B, 3]).
  """
  k_y, k_x, k_flip, k_alpha = jax.random.split(key, 4)
  span = image_size - crop_size
  if random_crop:
    offset_y = jax.random.randint(k_y, (batch,), 0, span + 1, dtype=jnp.int32)
    offset_x = jax.random.randint(k_x, (batch,), 0, span + 1, dtype=jnp.int32)
  else:
    offset_y = offset_x = jnp.full((batch,), span // 2, jnp.int32)
  flips = jax.random.bernoulli(k_flip, 0.5, (batch,)) if flip else jnp.zeros((batch,), bool)
  alpha = pca_sigma * jax.random.normal(k_alpha, (batch, 3), jnp.float32)
  return dict(offset_y=offset_y, offset_x=offset_x, flip=flips, alpha=alpha)


def crop(images: jax.Array, offset_y: jax.Array, offset_x: jax.Array, size: int) -> jax.Array:
  """Per-image size x size windows of a [B, H, W, C] batch (vmapped dynamic_slice)."""

  def one(image, y, x):
    return jax.lax.dynamic_slice(image, (y, x, 0), (size, size, image.shape[-1]))

  return jax.vmap(one)(images, offset_y, offset_x)


def _mean_windows(mean, offset_y, offset_x, size, image_size):
  """The mean cut to each image's window, or a per-channel / zero mean as is."""
  if mean is None:
    return jnp.zeros((3,), jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  if mean.ndim == 1:
    return mean
  if mean.shape[0] != image_size:  # host already cropped+resized (RandomResizedCrop)
    mean = jax.image.resize(mean, (image_size, image_size, 3), 'linear')
  if image_size == size:
    return mean
  return crop(jnp.broadcast_to(mean, (offset_y.shape[0],) + mean.shape), offset_y, offset_x,
              size)


def _flip(x: jax.Array, flips: jax.Array) -> jax.Array:
  return jnp.where(flips[:, None, None, None], x[:, :, ::-1], x)


def train_preprocess(images: jax.Array, key: jax.Array, *, crop_size: int, mean=None,
                     random_crop: bool = True, flip: bool = True,
                     pca_sigma: float = 0.1) -> jax.Array:
  """uint8 [B, R, R, 3] -> float32 [B, S, S, 3]: crop, minus the mean of the same window,
  flip, plus PCA lighting. The lighting is a per-image constant, so adding it after the
  mean subtraction equals the paper's order. With R == S (host-side resized crops) the crop
  is the identity."""
  batch, image_size = images.shape[0], images.shape[1]
  aug = sample_augmentation(key, batch, image_size=image_size, crop_size=crop_size,
                            random_crop=random_crop, flip=flip, pca_sigma=pca_sigma)
  x = images if image_size == crop_size else crop(images, aug['offset_y'], aug['offset_x'],
                                                  crop_size)
  x = x.astype(jnp.float32) - _mean_windows(mean, aug['offset_y'], aug['offset_x'], crop_size,
                                            image_size)
  if flip:
    x = _flip(x, aug['flip'])
  if pca_sigma:
    x = x + lighting_shift(aug['alpha'])[:, None, None, :]
  return x


def eval_preprocess(images: jax.Array, *, crop_size: int, mean=None,
                    crops: int = 1) -> jax.Array:
  """uint8 [B, R, R, 3] -> the centre crop float32 [B, S, S, 3] minus the mean, or with
  crops=10 the paper's ten crops [B, 10, S, S, 3] (centre, 4 corners, then the same five
  flipped) for averaging the softmax over axis 1."""
  batch, image_size = images.shape[0], images.shape[1]
  centre = (image_size - crop_size) // 2
  if crops == 1:
    offsets = [(centre, centre)]
  elif crops == 10:
    far = image_size - crop_size
    offsets = [(centre, centre), (0, 0), (0, far), (far, 0), (far, far)]
  else:
    raise ValueError(f'eval crops must be 1 or 10, got {crops}')
  views = []
  for y, x in offsets:
    oy = jnp.full((batch,), y, jnp.int32)
    ox = jnp.full((batch,), x, jnp.int32)
    views.append(crop(images, oy, ox, crop_size).astype(jnp.float32)
                 - _mean_windows(mean, oy, ox, crop_size, image_size))
  if crops == 1:
    return views[0]
  views += [v[:, :, ::-1] for v in views]
  return jnp.stack(views, axis=1)
