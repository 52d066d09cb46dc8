"""`alexnet_shapes`: the project's built-in, fully offline image-classification dataset.

ImageNet cannot be downloaded in CI or on a laptop, yet the training pipeline, the JPEG
decoding path and the model all need a real test. This builder procedurally renders shapes
and textures (circle, square, star, stripes, checker, ...) with random colour, position,
scale and rotation on noisy, shaded backgrounds, and stores them JPEG-encoded exactly like
`imagenet2012`, so the input pipeline exercised here is the one used for ImageNet.

Design constraints, and why:

* Colours (foreground and background) are drawn independently of the class, so neither the
  mean colour nor the colour histogram identifies the class: a model has to look at spatial
  structure, i.e. be a CNN doing its job.
* Shapes are large and always contrast with the background, so a small AlexNet-like CNN
  still learns the task to >90% in a couple of CPU minutes at 64x64.
* Example ``i`` of split ``s`` is a pure function of ``(seed, s, i)``; builds are therefore
  reproducible bit-for-bit and independent of generation order or parallelism.
* ``variant='hard'`` (the ablation base, configs/ablation_base.py) keeps the classes and the
  class-blind colours but makes the object smaller (radius 22-32% of the image instead of
  24-36%), lowers its contrast, adds clutter (1-2 line strokes and elongated blobs in random
  colours) and in a fifth of the images hides part of the object behind a bar, so a
  small CNN stays well below the ceiling after a few CPU minutes and ablations have room to
  show an effect.
  ``variant='easy'`` (the default) renders exactly what it always did.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from alexnet_jax.common import lazy_tf

# Its classes subclass TFDS's: the real module, imported the way every TFDS import here is
# (alexnet_jax.common.lazy_tf).
tfds = lazy_tf.tfds.load()

__all__ = ['CLASS_NAMES', 'SPLITS', 'VARIANTS', 'AlexnetShapes', 'ShapesConfig', 'builder',
           'config_name', 'render_example']

# Order is part of the dataset (label i = CLASS_NAMES[i]); append, never reorder.
CLASS_NAMES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'cross', 'ring',
                                'crescent', 'stripes', 'checker', 'dots')

# Stable ids mixed into the per-example RNG seed; never renumber (it would change the data).
SPLITS: dict[str, int] = {'train': 0, 'validation': 1}

_SUPERSAMPLE = 2  # Shapes are drawn at 2x and box-filtered: anti-aliased edges, as in photos.
_MIN_COLOUR_DISTANCE = 120.0  # Euclidean RGB distance fg<->bg; keeps every shape visible.
_JPEG_QUALITY = 90
# 'easy': the original dataset (bit-identical); 'hard': small, cluttered, occluded objects.
VARIANTS: tuple[str, ...] = ('easy', 'hard')
# The cache-directory tag of each non-default variant; a new tag whenever its rendering
# changes, so a build made by older code is never read as the new data.
_CACHE_TAGS = {'hard': 'hard3'}


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Size and resolution knobs; the training config picks them, so all are explicit.

  Attributes:
    image_size: side length S of the square S x S x 3 images.
    train_size: number of examples in the `train` split.
    validation_size: number of examples in the `validation` split.
    num_classes: uses the first `num_classes` entries of `CLASS_NAMES`.
    seed: global seed; every example is a pure function of (seed, split, index).
    variant: 'easy' (default, the original rendering) or 'hard' (see the module docstring).
  """

  image_size: int = 64
  train_size: int = 10_000
  validation_size: int = 1_000
  num_classes: int = len(CLASS_NAMES)
  seed: int = 0
  variant: str = 'easy'

  def __post_init__(self) -> None:
    if self.variant not in VARIANTS:
      raise ValueError(f'variant must be one of {VARIANTS}, got {self.variant!r}')
    if self.image_size < 16:
      raise ValueError(f'image_size must be >= 16, got {self.image_size}')
    if not 2 <= self.num_classes <= len(CLASS_NAMES):
      raise ValueError(f'num_classes must be in [2, {len(CLASS_NAMES)}]')
    if self.train_size < 1 or self.validation_size < 1:
      raise ValueError('train_size and validation_size must be >= 1')
    if self.seed < 0:
      raise ValueError('seed must be non-negative (it seeds np.random.default_rng)')


def config_name(image_size: int, train_size: int, validation_size: int, num_classes: int,
                seed: int, variant: str = 'easy') -> str:
  """Derives a config name from the values, so each distinct dataset gets its own cache
  directory under data_dir and a stale build can never be reused for other settings.
  The 'easy' variant keeps the names it always had."""
  name = f's{image_size}_tr{train_size}_va{validation_size}_c{num_classes}_seed{seed}'
  return name if variant == 'easy' else f'{name}_{_CACHE_TAGS[variant]}'


# s64 matches configs/default.py (10k/1k at 64x64), so the default run and
# `tfds.load('alexnet_shapes')` share one cache directory. It builds in about 10 s.
_PREDEFINED = (
    ShapesConfig(name='s64', description='Default: 64x64, 10 classes, 10k train / 1k validation.',
                 image_size=64, train_size=10_000, validation_size=1_000),
    ShapesConfig(name='tiny', description='Unit tests: 32x32, 10 classes, 500 train / 200 val.',
                 image_size=32, train_size=500, validation_size=200),
)


# --------------------------------------------------------------------------- rendering


def _rotation(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s], [s, c]])


def _polygon(unit_xy: np.ndarray, cx: float, cy: float, r: float, angle: float) -> list:
  pts = unit_xy @ _rotation(angle).T * r + np.array([cx, cy])
  return [tuple(p) for p in pts]


def _regular(n: int) -> np.ndarray:
  t = np.arange(n) * 2 * np.pi / n - np.pi / 2
  return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
  t = np.arange(2 * points) * np.pi / points - np.pi / 2
  rad = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
  return np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)


def _cross(arm: float = 0.36) -> np.ndarray:
  a = arm
  return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                   [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]])


# Unit polygons scaled so every shape spans a similar extent (about 2r across).
_UNIT_SQUARE = _regular(4) * 0.92
_UNIT_TRIANGLE = _regular(3) * 1.1
_UNIT_STAR = _star()
_UNIT_CROSS = _cross() * 0.9


def _shape_mask(label: int, rng: np.random.Generator, size: int,
                radius: tuple[float, float] = (0.24, 0.36)) -> np.ndarray:
  """Coverage in [0, 1] of the foreground colour, at `size` x `size`; the shape's radius is
  drawn from `radius` (fractions of the side)."""
  n = size * _SUPERSAMPLE
  r = rng.uniform(*radius) * n
  # Keep the whole shape inside the frame: ImageNet objects are mostly in view too.
  cx, cy = rng.uniform(r + 0.03 * n, n - r - 0.03 * n, size=2)
  angle = rng.uniform(0.0, 2 * np.pi)
  canvas = Image.new('L', (n, n), 0)
  draw = ImageDraw.Draw(canvas)
  name = CLASS_NAMES[label]

  def disk(rad: float, x: float = cx, y: float = cy, fill: int = 255) -> None:
    draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill)

  pattern = None
  if name == 'circle':
    disk(r)
  elif name == 'square':
    draw.polygon(_polygon(_UNIT_SQUARE, cx, cy, r, angle), fill=255)
  elif name == 'triangle':
    draw.polygon(_polygon(_UNIT_TRIANGLE, cx, cy, r, angle), fill=255)
  elif name == 'star':
    draw.polygon(_polygon(_UNIT_STAR, cx, cy, r * 1.1, angle), fill=255)
  elif name == 'cross':
    draw.polygon(_polygon(_UNIT_CROSS, cx, cy, r, angle), fill=255)
  elif name == 'ring':
    disk(r)
    disk(r * rng.uniform(0.5, 0.62), fill=0)
  elif name == 'crescent':
    disk(r)
    off = r * rng.uniform(0.4, 0.55)
    disk(r * 0.9, cx + off * np.cos(angle), cy + off * np.sin(angle), fill=0)
  else:
    # Texture classes: the texture fills a disk or a rotated square, chosen at random, so
    # the outline says nothing and only the interior pattern identifies the class.
    # The region is a little larger than the plain shapes so it holds >= 3 periods.
    if rng.random() < 0.5:
      disk(r)
    else:
      draw.polygon(_polygon(_regular(4), cx, cy, r, angle), fill=255)
    period = r * rng.uniform(0.55, 0.75)
    theta = rng.uniform(0.0, 2 * np.pi)
    phase_u, phase_v = rng.uniform(0.0, 1.0, size=2)
    coords = np.arange(n, dtype=np.float32) + 0.5
    x, y = coords[None, :] - cx, coords[:, None] - cy
    u = (x * np.cos(theta) + y * np.sin(theta)) / period + phase_u
    v = (-x * np.sin(theta) + y * np.cos(theta)) / period + phase_v
    if name == 'stripes':
      pattern = np.mod(u, 1.0) < 0.5
    elif name == 'checker':
      pattern = (np.floor(2 * u) + np.floor(2 * v)) % 2 == 0
    elif name == 'dots':
      du, dv = np.mod(u, 1.0) - 0.5, np.mod(v, 1.0) - 0.5
      pattern = du * du + dv * dv < 0.27**2
    else:  # pragma: no cover - guarded by ShapesConfig.num_classes
      raise ValueError(f'unknown class {name!r}')

  mask = np.asarray(canvas, dtype=np.float32) / 255.0
  if pattern is not None:
    mask = mask * pattern
  k = _SUPERSAMPLE  # Box filter as a sum of strided views: much cheaper than .mean(axis).
  return sum(mask[i::k, j::k] for i in range(k) for j in range(k)) / (k * k)


def _colour_pair(rng: np.random.Generator,
                 min_distance: float = _MIN_COLOUR_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
  """Foreground/background colours, uniform over RGB and blind to the class by design."""
  while True:
    fg, bg = rng.uniform(0.0, 255.0, size=(2, 3))
    if np.linalg.norm(fg - bg) >= min_distance:
      return fg, bg


def _smooth_field(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
  """Low-frequency RGB shading (a few random plane waves): lighting-like variation that
  stops a model from keying on perfectly flat regions.

  Each wave sin(a*x + b*y + phase) is expanded into two separable outer products, so the
  whole field is one small matmul instead of per-pixel trigonometry (3x faster overall).
  """
  waves = 3
  coords = np.arange(size) / size
  freq = rng.uniform(0.3, 1.5, size=waves)
  theta = rng.uniform(0.0, 2 * np.pi, size=waves)
  phase = rng.uniform(0.0, 2 * np.pi, size=waves)
  amp = rng.uniform(-amplitude, amplitude, size=(waves, 3))
  ax = 2 * np.pi * freq * np.cos(theta)
  by = 2 * np.pi * freq * np.sin(theta)
  arg_x = coords[:, None] * ax  # (S, waves)
  arg_y = coords[:, None] * by + phase
  along_x = np.concatenate([np.sin(arg_x), np.cos(arg_x)], axis=1)  # (S, 2*waves)
  along_y = np.concatenate([np.cos(arg_y), np.sin(arg_y)], axis=1)
  outer = (along_y[:, None, :] * along_x[None, :, :]).reshape(size * size, 2 * waves)
  field = outer @ np.concatenate([amp, amp], axis=0)
  return field.reshape(size, size, 3).astype(np.float32)


def _downsample(mask: np.ndarray) -> np.ndarray:
  k = _SUPERSAMPLE
  return sum(mask[i::k, j::k] for i in range(k) for j in range(k)) / (k * k)


def _clutter_mask(rng: np.random.Generator, size: int) -> np.ndarray:
  """One distractor: a line stroke or an elongated ellipse (never a class shape), as
  coverage in [0, 1] at `size` x `size`."""
  n = size * _SUPERSAMPLE
  canvas = Image.new('L', (n, n), 0)
  draw = ImageDraw.Draw(canvas)
  if rng.random() < 0.6:
    x0, y0 = rng.uniform(0.0, n, size=2)
    length = rng.uniform(0.2, 0.6) * n
    angle = rng.uniform(0.0, 2 * np.pi)
    x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
    draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(2, 7)))
  else:
    cx, cy = rng.uniform(0.0, n, size=2)
    long, short = rng.uniform(0.08, 0.2) * n, rng.uniform(0.02, 0.04) * n
    angle = rng.uniform(0.0, np.pi)
    t = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    pts = np.stack([long * np.cos(t), short * np.sin(t)], axis=1)
    draw.polygon(_polygon(pts, cx, cy, 1.0, angle), fill=255)
  return _downsample(np.asarray(canvas, dtype=np.float32) / 255.0)


def _occluder_mask(rng: np.random.Generator, size: int, object_mask: np.ndarray) -> np.ndarray:
  """A bar through a point of the object (coverage in [0, 1]) hiding part of it."""
  n = size * _SUPERSAMPLE
  ys, xs = np.nonzero(object_mask > 0.5)
  if len(xs) == 0:
    return np.zeros((size, size), np.float32)
  i = rng.integers(len(xs))
  cx, cy = (xs[i] + 0.5) * _SUPERSAMPLE, (ys[i] + 0.5) * _SUPERSAMPLE
  angle = rng.uniform(0.0, np.pi)
  half_width = rng.uniform(0.025, 0.045) * n
  half_length = n  # across the whole frame
  pts = np.array([[-half_length, -half_width], [half_length, -half_width],
                  [half_length, half_width], [-half_length, half_width]])
  canvas = Image.new('L', (n, n), 0)
  ImageDraw.Draw(canvas).polygon(_polygon(pts, cx, cy, 1.0, angle), fill=255)
  return _downsample(np.asarray(canvas, dtype=np.float32) / 255.0)


def _render_hard(config: ShapesConfig, rng: np.random.Generator, label: int) -> np.ndarray:
  """The 'hard' variant: smaller object, lower contrast, clutter and occlusion."""
  size = config.image_size
  alpha = _shape_mask(label, rng, size, radius=(0.22, 0.32))[:, :, None]
  fg, bg = _colour_pair(rng, min_distance=110.0)
  image = bg.astype(np.float32) + _smooth_field(rng, size, 25.0)
  # Clutter behind the object, in colours of their own.
  for _ in range(int(rng.integers(1, 3))):
    colour = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
    m = _clutter_mask(rng, size)[:, :, None]
    image = image * (1.0 - m) + colour * m
  foreground = fg.astype(np.float32) + _smooth_field(rng, size, 15.0)
  image = image * (1.0 - alpha) + foreground * alpha
  if rng.random() < 0.2:
    colour = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
    m = _occluder_mask(rng, size, alpha[:, :, 0])[:, :, None]
    image = image * (1.0 - m) + colour * m
  sigma = rng.uniform(4.0, 14.0)
  image += rng.standard_normal((size, size, 3), dtype=np.float32) * sigma
  return image


def render_example(config: ShapesConfig, split: str, index: int) -> tuple[np.ndarray, int]:
  """Renders example `index` of `split` as a uint8 (S, S, 3) array plus its label.

  Public so tests and notebooks can look at the exact pixels that get JPEG-encoded without
  building a TFDS dataset. Only config.seed, image_size and num_classes matter: the split
  sizes do not, so a small build is a prefix of a larger one with the same seed.
  """
  size = config.image_size
  # Balanced classes by construction; the example's content comes from its own RNG stream.
  label = index % config.num_classes
  rng = np.random.default_rng([config.seed, SPLITS[split], index])
  if config.variant == 'hard':
    image = _render_hard(config, rng, label)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label
  alpha = _shape_mask(label, rng, size)[:, :, None]
  fg, bg = _colour_pair(rng)
  background = bg.astype(np.float32) + _smooth_field(rng, size, 20.0)
  foreground = fg.astype(np.float32) + _smooth_field(rng, size, 10.0)
  image = background * (1.0 - alpha) + foreground * alpha
  sigma = rng.uniform(4.0, 16.0)
  image += rng.standard_normal((size, size, 3), dtype=np.float32) * sigma
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _encode_jpeg(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=_JPEG_QUALITY)
  return buf.getvalue()


# --------------------------------------------------------------------------- builder


class AlexnetShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes-and-textures dataset; see the module docstring for the rationale."""

  name = 'alexnet_shapes'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = list(_PREDEFINED)
  DEFAULT_CONFIG_NAME = 's64'

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: ShapesConfig = self.builder_config
    size = cfg.image_size
    # DatasetInfo is built directly (not via dataset_info_from_configs) so that a README
    # dropped into this package can never silently replace the description.
    names = list(CLASS_NAMES[:cfg.num_classes])
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f'Procedurally generated shapes and textures ({", ".join(names)}) in random '
            'colour, position, scale and rotation on noisy, shaded backgrounds. Colours are '
            'independent of the class, so colour statistics alone cannot classify it. '
            'Fully offline and deterministic from the seed.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=names),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download: the whole point is to work offline.
    cfg: ShapesConfig = self.builder_config
    return {'train': self._generate_examples('train', cfg.train_size),
            'validation': self._generate_examples('validation', cfg.validation_size)}

  def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
    cfg: ShapesConfig = self.builder_config
    for index in range(num_examples):
      image, label = render_example(cfg, split, index)
      yield index, {'image': _encode_jpeg(image), 'label': label}


def builder(data_dir: str | os.PathLike | None = None, *, image_size: int = 64,
            train_size: int = 10_000, validation_size: int = 1_000,
            num_classes: int = len(CLASS_NAMES), seed: int = 0,
            variant: str = 'easy') -> AlexnetShapes:
  """Returns a builder for arbitrary settings, because the training config (not this file)
  decides size and resolution.

  Settings equal to a predefined config reuse it (and so its cache directory); anything else
  gets an on-the-fly config named by `config_name`. Call `.download_and_prepare()` on the
  result; it never touches the network.
  """
  values = dict(image_size=image_size, train_size=train_size,
                validation_size=validation_size, num_classes=num_classes, seed=seed,
                variant=variant)
  for cfg in _PREDEFINED:
    if all(getattr(cfg, k) == v for k, v in values.items()):
      return AlexnetShapes(data_dir=data_dir, config=cfg.name)
  cfg = ShapesConfig(name=config_name(**values),
                     description='Created by alexnet_jax.data.datasets.shapes.builder().', **values)
  return AlexnetShapes(data_dir=data_dir, config=cfg)
