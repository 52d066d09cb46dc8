"""The device half of the paper's preprocessing, as JAX ops inside the jitted step.

The host (`decode`, `input_pipeline`) ships a fixed R x R uint8 image; here, where it costs
next to nothing, come the random S x S crop, the horizontal flip, the PCA lighting noise,
the mean subtraction and the input scale (S = model.input_size). The jitted train and eval
steps call one entry, `device_preprocess`, which maps config fields to the pure ops below
(exposed so tests can replay them one at a time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax.common import config_lib

# PCA of ImageNet RGB pixels in [0, 1] as published (fb.resnet.torch; ALEXNET.md): the
# input.pca_source='published' fallback, ImageNet only. The default is the training set's own
# (statistics.load_or_compute_rgb_pca). The noise is scaled x255: images here are in [0, 255].
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)  # columns are eigenvectors


def device_preprocess(images: jax.Array, key: jax.Array | None, *,
                      config: ml_collections.ConfigDict, mean, train: bool,
                      lighting: dict | None = None) -> jax.Array:
  """Inside the jitted step: uint8 [B, H, W, 3] -> float32 [B, S, S, 3], S=model.input_size,
  divided by input.std_rgb per channel and times input.scale: what the model takes.

  train: random S x S crop (input.random_crop='paper'; centre for 'none'; the host's crop
  for 'resized'), random horizontal flip (input.flip), PCA lighting (input.pca_lighting,
  input.pca_reading) along `lighting` ({'eigval': [3], 'eigvec': [3, 3]}, step inputs from
  statistics.load_or_compute_rgb_pca(config); needed when the lighting is on), minus `mean`
  (statistics.load_or_compute_mean_image(config)) cut to the same window.
  eval (`key` and `lighting` unused): the centre crop minus the mean, or with
  input.eval_crops=10 the paper's ten crops as [B, 10, S, S, 3].
  """
  s = config.model.input_size
  if train:
    sigma = float(config.input.pca_lighting)
    if sigma and lighting is None:
      raise ValueError('input.pca_lighting > 0 needs `lighting`, the eigen-decomposition '
                       '(statistics.load_or_compute_rgb_pca)')
    pca = {} if not sigma else dict(eigval=lighting['eigval'], eigvec=lighting['eigvec'],
                                     reading=config.input.pca_reading)
    x = train_preprocess(
        images, key, crop_size=s, mean=mean, random_crop=config.input.random_crop != 'none',
        flip=bool(config.input.flip), pca_sigma=sigma, **pca)
  else:
    x = eval_preprocess(images, crop_size=s, mean=mean, crops=int(config.input.eval_crops))
  std = tuple(float(v) for v in config.input.std_rgb)
  if std != (1.0, 1.0, 1.0):
    x = x / jnp.asarray(std, jnp.float32)
  return x * config.input.scale


def _reading_scale(eigval, reading: str, sqrt):
  """What alpha multiplies under input.pca_reading `reading` (an old name is accepted)."""
  reading = config_lib.choice('input.pca_reading', reading)
  return eigval if reading == 'unit_pixel_eigenvalues' else sqrt(eigval)


def lighting_shift(alpha: jax.Array, eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC,
                   reading: str = 'unit_pixel_eigenvalues') -> jax.Array:
  """PCA colour noise for pixels in [0, 255], one RGB offset per image: alpha [B, 3] -> [B, 3].

  eigval, eigvec: the eigen-decomposition of the RGB covariance of pixels in [0, 1]
  (columns of eigvec). The paper (section 4.1) adds eigvec @ (alpha * eigval) without
  saying in which pixel units eigval is; the readings:
  'unit_pixel_eigenvalues' (was 'paper'): eigval of pixels in [0, 1] as they are, the
  shift then x255 to pixel levels: eigvec @ (alpha * eigval) * 255. (The same formula with
  the eigenvalues of 0-255 pixels would be 255x larger, hundreds of levels: not offered.)
  'component_std' (was 'cuda_convnet2', Krizhevsky's code): alpha times the std along each
  component, which is the same in any pixel unit: eigvec @ (alpha * sqrt(eigval)) * 255,
  i.e. sqrt(255^2 eigval).
  """
  scale = _reading_scale(eigval, reading, jnp.sqrt)
  # The barriers keep XLA's arithmetic what it was when the published constants were baked
  # into the trace (bit for bit): with eigval an input it would fold alpha's sigma into it
  # (sigma * eigval first), and contract a transposed input in another order.
  alpha, rows = jax.lax.optimization_barrier((alpha, jnp.asarray(eigvec).T))
  return (alpha * scale) @ rows * 255.0


def lighting_noise_std(eigval, eigvec, sigma: float,
                       reading: str = 'unit_pixel_eigenvalues') -> np.ndarray:
  """float64 [3]: the std of `lighting_shift` per RGB channel, in pixel levels (0-255), for
  alpha ~ N(0, sigma^2): sigma * 255 * sqrt(sum_i eigvec[c, i]^2 scale_i^2)."""
  scale = _reading_scale(np.asarray(eigval, np.float64), reading, np.sqrt)
  return sigma * 255.0 * np.sqrt((np.asarray(eigvec, np.float64) ** 2) @ scale ** 2)


def describe_lighting(config: ml_collections.ConfigDict, pca) -> str:
  """The start-of-run log line's text: which eigen-decomposition, which reading, how much
  noise. `pca`: statistics.load_or_compute_rgb_pca(config) (None: lighting off)."""
  if pca is None:
    return 'off (input.pca_lighting=0)'
  i = config.input
  reading = config_lib.choice('input.pca_reading', i.pca_reading)
  std = lighting_noise_std(pca.eigval, pca.eigvec, float(i.pca_lighting), reading)
  return (f'{pca.describe()}; reading {reading!r}, sigma {i.pca_lighting:g}: '
          f'noise std (R, G, B) {", ".join(f"{v:.2f}" for v in std)} pixel levels')


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
                     random_crop: bool = True, flip: bool = True, pca_sigma: float = 0.1,
                     eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC,
                     reading: str = 'unit_pixel_eigenvalues') -> jax.Array:
  """uint8 [B, R, R, 3] -> float32 [B, S, S, 3]: crop, minus the mean of the same window,
  flip, plus PCA lighting (`lighting_shift`; the eigen-decomposition defaults to ImageNet's
  published one for this op only; `device_preprocess` always passes the config's). The
  lighting is a per-image constant, so adding it after the mean subtraction equals the
  paper's order. With R == S (host-side resized crops) the crop is the identity."""
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
    x = x + lighting_shift(aug['alpha'], eigval, eigvec, reading)[:, None, None, :]
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
