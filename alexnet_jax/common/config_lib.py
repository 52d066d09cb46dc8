"""The one place where every config field is declared, with its paper value.

Each file in configs/ (default.py, paper.py, ...) starts from `base()` and changes a
few fields, so that a field overridden on the command line
(`--config.model.lrn=none`) always exists and has a known type.
"""

import dataclasses
from typing import Any

import ml_collections
from absl import logging

from alexnet_jax.common import fields
from alexnet_jax.common.fields import refuse
from alexnet_jax.common.model_spec import CHOICES, ModelSpec


def model_config() -> ml_collections.ConfigDict:
  """The paper's AlexNet (section 3); every ablation is one field. The fields and their
  values are `ModelSpec`'s, so the config and the model it builds cannot disagree."""
  return ml_collections.ConfigDict(dataclasses.asdict(ModelSpec()))


def base() -> ml_collections.ConfigDict:
  """All fields, paper values where the paper has one."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = model_config()

  # Mesh ('data', 'model'); model=2 is the paper's two-GPU split. data=-1: the rest.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.model = 2

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'imagenet2012'                # any TFDS name, 'alexnet_shapes', or 'folder'
  c.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.dataset.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.dataset.folder = ml_collections.FieldReference(None, field_type=str)
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'validation'
  c.dataset.shapes_image_size = 64               # built-in dataset only
  c.dataset.shapes_train_size = 10000
  c.dataset.shapes_validation_size = 1000
  c.dataset.shapes_variant = 'easy'              # 'easy' | 'hard' (small, cluttered, occluded)

  # Paper's preprocessing (section 2 and 4.1).
  c.input = ml_collections.ConfigDict()
  c.input.resize_size = 256                      # shorter side, then centre square
  c.input.resize_method = 'fast'                 # host shrink: 'fast' | 'area' | 'bilinear' (PIL)
  # 'shorter_side': the paper's shorter side -> resize_size, centre square | 'squash':
  # Caffe's both sides -> resize_size, aspect ratio not kept (bvlc_alexnet's inputs).
  c.input.resize_mode = 'shorter_side'
  c.input.mean = 'image'                         # 'image' | 'channel' | 'constant' | 'none'
  c.input.mean_rgb = (0.0, 0.0, 0.0)             # input.mean='constant': R, G, B in 0-255
  # Per-channel divisor after the mean (R, G, B, 0-255 units), before input.scale:
  # torchvision's normalisation is 255 * (0.229, 0.224, 0.225).
  c.input.std_rgb = (1.0, 1.0, 1.0)
  c.input.random_crop = 'paper'                  # 'paper' | 'resized' (torchvision) | 'none'
  c.input.flip = True
  c.input.pca_lighting = 0.1                     # sigma of alpha; 0 turns it off
  # PCA lighting's eigen-decomposition (of the RGB covariance, pixels in [0, 1]):
  # 'dataset': of this dataset's training pixels, computed once and cached (paper) |
  # 'published': fb.resnet.torch's ImageNet constants (refused for other datasets).
  c.input.pca_source = 'dataset'
  # What alpha multiplies (the paper leaves the eigenvalues' units open):
  # 'unit_pixel_eigenvalues': the eigenvalues of pixels in [0, 1], eigvec @ (alpha * eigval)
  # x255 (the paper's formula; was 'paper') | 'component_std': the std along each component,
  # eigvec @ (alpha * sqrt(eigval)) x255, the same in any pixel unit (cuda-convnet2's; was
  # 'cuda_convnet2'): on ImageNet's photos 2.2-2.4x the noise (docs/deviations.md).
  c.input.pca_reading = 'unit_pixel_eigenvalues'
  c.input.pca_max_images = -1                    # training images the PCA reads; -1: all (paper)
  c.input.scale = 1.0                            # x after mean subtraction (paper: raw 0-255)
  c.input.eval_crops = 1                         # 1 (centre) or 10 (paper's 10 crops)
  c.input.shuffle_buffer = 16384
  c.input.prefetch = 2
  c.input.use_preresized = False                 # prepare's shorter-side-256 copy
  c.input.max_skipped_fraction = 0.01            # more of a split undecodable: stop, loudly
  # A folder of local images that decodes to at most this many MB is decoded once and kept
  # in memory for every epoch and evaluation (CIFAR-10: 138 MB); 0 decodes on every pass.
  c.input.memory_cache_mb = 1024

  c.batch_size = 128                             # global
  c.eval_batch_size = 128
  c.num_epochs = 90.0
  c.num_train_steps = -1                         # -1: from num_epochs

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_biases = True                # Caffe: False
  c.optimizer.nesterov = False
  # x the learning rate for biases (cuda-convnet's epsB / epsW = 2, as Caffe's lr_mult).
  c.optimizer.bias_lr_multiplier = 1.0
  # Per-layer weight decay {layer: decay}, replacing optimizer.weight_decay for the layers
  # named (cuda-convnet's per-layer `wc`); empty: every layer decays by weight_decay.
  c.optimizer.layer_weight_decay = ml_collections.ConfigDict()

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'plateau'                    # 'plateau' | 'step' | 'linear' | 'constant'
  c.schedule.factor = 0.1
  c.schedule.patience = 2                        # evaluations without improvement
  c.schedule.max_reductions = 3
  c.schedule.min_delta = 1e-4
  c.schedule.step_epochs = (30.0, 60.0, 80.0)    # for 'step'
  c.schedule.warmup_epochs = 0.0                 # linear warm-up (0: none, the paper)

  c.log_every_steps = 100
  c.eval_every_steps = -1                        # -1: once per epoch
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Stop once a whole epoch's training error (the mean over its steps of 1 - the batch
  # top-1) is at or below this; 0: off. The paper's Figure 1 measures epochs to 25%.
  c.stop_at_train_error = 0.0
  c.init_from = ml_collections.FieldReference(None, field_type=str)
  return c


def one_tower() -> ml_collections.ConfigDict:
  """torchvision's one-tower AlexNet ("one weird trick" widths 64-192-384-256-256, no LRN)
  with the paper's recipe: configs/one_tower.py, and the architecture `weights` maps
  torchvision's state dict onto (configs/ is not installed with the package)."""
  c = base()
  c.model.towers = 1
  c.model.conv_widths = (64, 192, 384, 256, 256)
  c.model.lrn = 'none'
  c.mesh.model = 1
  return c


def parse_arg(arg: str | None, **defaults):
  """Parses a big_vision-style config argument `key=value,key2=value2`.

  Values are converted to the type of their default; unknown keys are an error
  that lists the allowed ones.
  """
  out = dict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep or key not in defaults:
      raise ValueError(f'config argument {item!r}: expected key=value with key in '
                       f'{sorted(defaults)}')
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.strip().lower() in ('1', 'true', 'yes')
    else:
      out[key] = kind(value.strip())
  return out


# Every field that takes one of a fixed set of values, and those values: the one
# table the config is checked against (the model.* rows are ModelSpec's, which checks them).
ALLOWED = {
    **{f'model.{field}': allowed for field, allowed in CHOICES.items()},
    'dataset.shapes_variant': ('easy', 'hard'),
    'input.resize_method': ('fast', 'area', 'bilinear'),
    'input.resize_mode': ('shorter_side', 'squash'),
    'input.mean': ('image', 'channel', 'constant', 'none'),
    'input.random_crop': ('paper', 'resized', 'none'),
    'input.eval_crops': (1, 10),
    'input.pca_source': ('dataset', 'published'),
    'input.pca_reading': ('unit_pixel_eigenvalues', 'component_std'),
    'schedule.name': ('plateau', 'step', 'linear', 'constant'),
}

# Old names of choices, still accepted: `choice` maps them to the new ones, and `validate`
# rewrites the config's field and logs the new name (a run's config.json holds it).
ALIASES = {
    'input.pca_reading': {'paper': 'unit_pixel_eigenvalues', 'cuda_convnet2': 'component_std'},
}


# Datasets whose training pixels are ILSVRC-2012's, for which input.pca_source='published'
# (ImageNet's constants) is allowed; 'synthetic' stands in for ImageNet in the benchmarks.
PUBLISHED_PCA_DATASETS = ('imagenet2012', 'imagenet2012_subset', 'synthetic')


def check_pca_source(config) -> None:
  """Refuses ImageNet's published PCA constants for another dataset's lighting noise.

  An error, not a warning: colour noise along ImageNet's principal components is wrong
  for other pixels, a warning scrolls away in a long log, and the fix costs one flag (the
  'dataset' pass shares the mean image's decode pass).
  """
  i, name = config.input, config.dataset.name
  if i.pca_lighting and i.pca_source == 'published' and name not in PUBLISHED_PCA_DATASETS:
    raise ValueError(
        f"input.pca_source='published' is ImageNet's PCA (fb.resnet.torch's constants), but "
        f'dataset.name={name!r}; use --config.input.pca_source=dataset (the eigen-decomposition '
        f"of this dataset's training pixels, computed once and cached) or "
        f'--config.input.pca_lighting=0')


def choice(field: str, value: Any) -> Any:
  """`value` if ALLOWED[field] lists it, the new name if it is an old one (ALIASES), else a
  ValueError naming the allowed values (and the old names)."""
  aliases = ALIASES.get(field, {})
  if isinstance(value, str) and value in aliases:
    return aliases[value]
  try:
    fields.check_choice(field, value, ALLOWED[field])
  except ValueError:
    if not aliases:
      raise
    old = ', '.join(f'{a!r} for {n!r}' for a, n in aliases.items())
    raise refuse(field, value, f'{", ".join(map(repr, ALLOWED[field]))} (old names: {old})'
                 ) from None
  return value


def check_choice(field: str, value) -> None:
  """Refuses `value` unless ALLOWED[field] lists it or it is an old name (ALIASES) of one
  (True is not 1 here)."""
  choice(field, value)


def validate(config, *, mesh_shape: dict[str, int] | None = None, process_count: int = 1):
  """Refuses a bad config before anything is compiled; errors name the field.

  The one check at the boundary: the commands call it once and hand the
  validated `ModelSpec` it returns to the code below them. An old name of a choice
  (ALIASES) is replaced in `config` by its new one, with a log line. mesh_shape
  ({'data': d, 'model': m}) adds the checks that depend on the devices: the
  'data' axis must divide the batch sizes, the 'model' axis the towers.
  """
  spec = ModelSpec.from_config(config.model)
  for field in ALLOWED:
    if not field.startswith('model.'):
      value = fields.get_field(config, field)
      new = choice(field, value)
      if new != value:
        logging.info('%s=%r is the old name of %r (the same behaviour); set to %r: write '
                      '--config.%s=%s', field, value, new, new, field, new)
        fields.set_fields(config, {field: new})
  mesh_shape = mesh_shape or {'data': 1, 'model': 1}
  data_parallel = mesh_shape['data']
  if config.dataset.name == 'folder' and not config.dataset.folder:
    raise refuse('dataset.folder', config.dataset.folder,
                 "a directory of class sub-folders of images (dataset.name='folder')")
  if spec.arch != 'alexnet' and mesh_shape['model'] != 1:
    raise ValueError(
        f'mesh.model={mesh_shape["model"]} is invalid for model.arch={spec.arch!r}: the '
        'CIFAR nets have no towers and are data parallel only; set --config.mesh.model=1')
  known = spec.layer_names()
  for name, decay in config.optimizer.layer_weight_decay.items():
    if name not in known:
      raise refuse(f'optimizer.layer_weight_decay.{name}', decay,
                   f'a layer of model.arch={spec.arch!r}: {", ".join(known)}')
    if not isinstance(decay, int | float) or isinstance(decay, bool) or decay < 0:
      raise refuse(f'optimizer.layer_weight_decay.{name}', decay, 'a number >= 0')
  if not config.optimizer.bias_lr_multiplier > 0:
    raise refuse('optimizer.bias_lr_multiplier', config.optimizer.bias_lr_multiplier,
                 'a number > 0')
  spec.check_model_axis(mesh_shape['model'])
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    if not isinstance(value, int) or value < 1:
      raise refuse(field, value, 'a positive int')
    for divisor, what in ((data_parallel, f"the mesh's data axis ({data_parallel} devices)"),
                          (process_count, f'the {process_count} processes')):
      if value % divisor:
        raise refuse(field, value, f'a multiple of {what}')
  for field, lo in (('optimizer.learning_rate', 0.0), ('optimizer.momentum', 0.0),
                    ('optimizer.weight_decay', 0.0), ('input.pca_lighting', 0.0)):
    value = fields.get_field(config, field)
    if not isinstance(value, int | float) or value < lo:
      raise refuse(field, value, f'a number >= {lo}')
  check_pca_source(config)
  for field, positive in (('input.mean_rgb', False), ('input.std_rgb', True)):
    value = fields.get_field(config, field)
    if (not isinstance(value, tuple | list) or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or (positive and not all(v > 0 for v in value))):
      raise refuse(field, value, f'3 {"positive " if positive else ""}numbers (R, G, B, 0-255)')
  cap = config.input.pca_max_images
  if not isinstance(cap, int) or isinstance(cap, bool) or (cap < 1 and cap != -1):
    raise refuse('input.pca_max_images', cap, 'a positive int, or -1 for all')
  cache = config.input.memory_cache_mb
  if not isinstance(cache, int) or isinstance(cache, bool) or cache < 0:
    raise refuse('input.memory_cache_mb', cache, 'an int >= 0 (MB; 0 turns the cache off)')
  if not 0.0 <= config.input.max_skipped_fraction <= 1.0:
    raise refuse('input.max_skipped_fraction', config.input.max_skipped_fraction,
                 'a fraction between 0 and 1')
  if not 0.0 <= config.optimizer.momentum < 1.0:
    raise refuse('optimizer.momentum', config.optimizer.momentum, '0 <= momentum < 1')
  if not config.schedule.warmup_epochs >= 0.0:
    raise refuse('schedule.warmup_epochs', config.schedule.warmup_epochs, 'a number >= 0')
  if not 0.0 < config.schedule.factor < 1.0:
    raise refuse('schedule.factor', config.schedule.factor, '0 < factor < 1')
  if config.num_train_steps < 1 and config.num_epochs <= 0:
    raise refuse('num_epochs', config.num_epochs, '> 0 (or set num_train_steps)')
  if not 0.0 <= config.stop_at_train_error < 1.0:
    raise refuse('stop_at_train_error', config.stop_at_train_error,
                 'a training error in [0, 1), e.g. 0.25 (0: train every epoch)')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    if config[field] < 1:
      raise refuse(field, config[field], 'a positive int')
  if config.input.resize_mode == 'squash' and config.input.use_preresized:
    raise refuse('input.resize_mode', 'squash',
                 "'shorter_side' with input.use_preresized=True (the pre-resized copy holds "
                 'centre squares, the sides already cut); or keep squash and set '
                 '--config.input.use_preresized=False')
  if config.input.resize_size < config.model.input_size:
    raise refuse('input.resize_size', config.input.resize_size,
                 f'>= model.input_size ({config.model.input_size}), the crop taken from it')
  return spec
