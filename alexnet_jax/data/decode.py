"""The host half of the paper's preprocessing, as pure TensorFlow ops inside tf.data.

The host does only what needs the encoded bytes: decode, and a crop that lets
`decode_and_crop_jpeg` skip pixels, then one resize to a fixed R x R uint8 square
(R = input.resize_size, the paper's 256). Everything that is cheap arithmetic on pixels
(random crop, flip, PCA lighting, mean subtraction) runs on the accelerator (`augment`), so
one decode per example is all the CPU work a training step costs.

Nothing here reads a config: `input_pipeline` maps config fields to these arguments, so the
ops can be tested (and reused by `imagenet` to write the pre-resized copy) one at a time.
"""

from __future__ import annotations

from alexnet_jax.common.lazy_tf import tf  # imported on first use (its GPUs hidden: lazy_tf)

# torchvision's RandomResizedCrop ranges.
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# The allowed values of input.resize_method (see resize_uint8).
RESIZE_METHODS = ('area', 'bilinear', 'fast')
# The allowed values of input.resize_mode (see decode_resized).
RESIZE_MODES = ('shorter_side', 'squash')


def is_jpeg(data: tf.Tensor) -> tf.Tensor:
  """True when the bytes start with the JPEG SOI marker (ImageNet has PNGs named .JPEG)."""
  return tf.equal(tf.strings.substr(data, 0, 3), b'\xff\xd8\xff')


def centre_square(height, width):
  """(offset_y, offset_x, side) of the largest centred square."""
  side = tf.minimum(height, width)
  return (height - side) // 2, (width - side) // 2, side


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


def decode_squash(data: tf.Tensor, size: int, method: str = 'area') -> tf.Tensor:
  """Caffe: both sides -> `size`, whatever the aspect ratio (the whole image, squashed);
  uint8 [size, size, 3]. How bvlc_alexnet's training and test images were made, so its
  mean image and weights expect this geometry."""

  def window(h, w):
    return 0, 0, h, w

  return resize_uint8(_decode_window(data, window, size), size, method)


def decode_resized(data: tf.Tensor, size: int, method: str = 'area',
                   mode: str = 'shorter_side') -> tf.Tensor:
  """The host's fixed `size` x `size` square of an image for input.resize_mode `mode`:
  'shorter_side' (the paper: `decode_centre`) or 'squash' (Caffe: `decode_squash`)."""
  if mode not in RESIZE_MODES:
    raise ValueError(f'resize mode {mode!r}: expected one of {RESIZE_MODES}')
  return (decode_squash if mode == 'squash' else decode_centre)(data, size, method)


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
