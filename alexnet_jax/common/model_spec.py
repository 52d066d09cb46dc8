"""The model section of a config as a frozen value: its fields, defaults, rules, geometry.

`ModelSpec` is the one statement of the model's fields (their paper values are the
config's defaults, `config_lib.model_config`), of what each may be, and of the shapes
they imply (the layers' names, kernel sizes, spatial sizes, multiply-adds). It needs no
jax, so a config is checked (`config_lib.validate`) before anything heavy is imported;
`model/nets` computes with it, `tools/weights` maps published layouts onto it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from alexnet_jax.common import cifar_spec, fields

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
# (kernel size, stride, padding) of conv1..conv5; conv1's padding depends on the input.
CONV_GEOMETRY = {'conv1': (11, 4, None), 'conv2': (5, 1, 2), 'conv3': (3, 1, 1),
                 'conv4': (3, 1, 1), 'conv5': (3, 1, 1)}

# The model fields that take one of a fixed set of values, and those values (the
# 'model.*' rows of config_lib.ALLOWED).
CHOICES = {
    'arch': ('alexnet',) + cifar_spec.ARCHS,
    'towers': (1, 2),
    'lrn': ('none', 'paper', 'caffe', 'constant', 'cuda_convnet'),
    'pooling': ('overlapping', 'non_overlapping'),
    'activation': ('relu', 'tanh'),
    'dtype': ('float32', 'bfloat16'),
    'init': ('paper', 'caffe', 'he'),
    'dropout_scaling': ('test', 'inverted'),
    'dropout_placement': ('paper', 'torchvision'),
    'conv_impl': ('auto', 'split', 'grouped'),
    'pool_grad': ('auto', 'custom', 'autodiff'),
    'lrn_impl': ('auto', 'rsqrt', 'pow'),
    'conv_weight_grad': ('auto', 'matmul', 'native'),
}


def _bad(field: str, value: Any, allowed: str) -> ValueError:
  return fields.refuse(f'model.{field}', value, allowed)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A validated, hashable copy of a config's `model` section; its defaults are the
  paper's AlexNet (section 3) and the config's (`config_lib.model_config`)."""

  # 'alexnet' | the CIFAR-10 nets of cuda-convnet (model/cifar.py): 'cifar10_conv_local'
  # (the paper's 11%/13% net) | 'cifar10_18pct' | 'cifar10_80sec'
  arch: str = 'alexnet'
  towers: int = 2                               # 1 or 2 (the paper's two GPUs)
  conv_widths: tuple[int, ...] = (96, 256, 384, 384, 256)   # total over the towers
  fc_widths: tuple[int, ...] = (4096, 4096)     # fc6, fc7 (total over the towers)
  num_classes: int = 1000
  input_size: int = 224                         # 224 (edge padded) or 227
  conv1_padding: int = -1                       # -1: auto (0 for 227, 2 for 224)
  # 'none' | 'paper' | 'caffe' | 'constant' (the paper formula's k^-beta, no normalisation)
  # | 'cuda_convnet' (the CIFAR nets' own response norms)
  lrn: str = 'paper'
  lrn_across_towers: bool = False               # Caffe's window spans both towers
  lrn_gain: float = 1.0                         # LRN sees activations x gain (1: paper)
  pooling: str = 'overlapping'                  # 'overlapping' (3/2) | 'non_overlapping' (2/2)
  activation: str = 'relu'                      # 'relu' | 'tanh'
  dropout_rate: float = 0.5
  dropout_scaling: str = 'test'                 # 'test' (paper: x0.5 at test) | 'inverted'
  # 'paper': after the ReLU of fc6 and fc7 | 'torchvision': before fc6 and fc7
  dropout_placement: str = 'paper'
  dtype: str = 'float32'                        # compute dtype; params stay float32
  init: str = 'paper'                           # 'paper' | 'caffe' | 'he'
  # How the layers are computed (same results, different speed per backend); 'auto'
  # takes what was measured faster on XLA:CPU and the native forms on GPU/TPU.
  conv_impl: str = 'auto'                       # 'split' (a conv per tower) | 'grouped'
  pool_grad: str = 'auto'                       # 'custom' backward | 'autodiff'
  lrn_impl: str = 'auto'                        # 'rsqrt' (beta=3/4) | 'pow'
  conv_weight_grad: str = 'auto'                # 'matmul' (a product per offset) | 'native'

  @classmethod
  def from_config(cls, model_config: Any) -> ModelSpec:
    """Builds and validates a spec from a ConfigDict (or mapping) `model` section."""
    items = dict(model_config.items()) if hasattr(model_config, 'items') else dict(model_config)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - names)
    if unknown:
      raise ValueError(f'model config has unknown field(s) {unknown}; known: {sorted(names)}')
    for key in ('conv_widths', 'fc_widths'):
      if key in items:
        value = items[key]
        if isinstance(value, int | str) or not isinstance(value, Sequence):
          raise _bad(key, value, 'a sequence of positive ints')
        items[key] = tuple(value)
    spec = cls(**items)
    spec.validate()
    return spec

  def validate(self) -> None:
    """Raises ValueError naming the field, its value and what is allowed."""
    for field, allowed in CHOICES.items():
      fields.check_choice(f'model.{field}', getattr(self, field), allowed)
    if self.arch != 'alexnet':
      cifar_spec.validate(self)
      return
    if self.lrn == 'cuda_convnet':
      raise _bad('lrn', self.lrn, "'paper', 'caffe', 'constant', 'none' ('cuda_convnet' is "
                 'the CIFAR nets\' response norm)')
    if len(self.conv_widths) != 5 or not all(
        isinstance(w, int) and w > 0 for w in self.conv_widths):
      raise _bad('conv_widths', self.conv_widths, '5 positive ints (conv1..conv5)')
    if len(self.fc_widths) != 2 or not all(
        isinstance(w, int) and w > 0 for w in self.fc_widths):
      raise _bad('fc_widths', self.fc_widths, '2 positive ints (fc6, fc7)')
    for field in ('conv_widths', 'fc_widths'):
      widths = getattr(self, field)
      if any(w % self.towers for w in widths):
        raise _bad(field, widths, f'widths divisible by towers={self.towers}')
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise _bad('num_classes', self.num_classes, 'a positive int')
    if not (isinstance(self.lrn_gain, int | float) and self.lrn_gain > 0):
      raise _bad('lrn_gain', self.lrn_gain, 'a number > 0 (1 = the paper)')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise _bad('dropout_rate', self.dropout_rate, '0 <= rate < 1')
    if self.conv1_padding < -1:
      raise _bad('conv1_padding', self.conv1_padding, '-1 (auto) or >= 0')
    sizes = (self.spatial_sizes() if self.input_size >= CONV_GEOMETRY['conv1'][0]
             else {'pool5': 0})
    if sizes['pool5'] < 1:
      raise _bad('input_size', self.input_size,
                 'an input large enough to leave >= 1x1 after pool5 (e.g. >= 63)')

  def layer_names(self) -> tuple[str, ...]:
    """The names of the weight layers, the keys of the parameter tree."""
    return LAYERS if self.arch == 'alexnet' else cifar_spec.layer_names(self)

  def check_model_axis(self, model_axis: int) -> None:
    """Refuses a mesh whose 'model' axis does not divide the towers: each device along it
    holds whole towers (the config's check, and the forward pass's under a mesh)."""
    if self.towers % model_axis:
      raise ValueError(
          f'model.towers={self.towers} cannot be split over mesh.model={model_axis}; '
          'set --config.mesh.model=1 (or use towers=2)')

  def kernels(self, backend: str) -> tuple[str, str, str, str]:
    """(conv_impl, pool_grad, lrn_impl, conv_weight_grad) with 'auto' resolved for
    `backend`.

    Same results either way (tested); only speed differs. On XLA:CPU the split
    convolutions, the hand-written pooling backward, the rsqrt-form LRN
    (experiments/cpu_study) and the kernel gradients as matrix products
    (benchmarks/logs/step.md) were measured faster; on GPU/TPU 'auto' takes the
    native forms: one grouped convolution, autodiff's select_and_scatter, a plain power,
    autodiff's weight-gradient convolutions.
    """
    cpu = backend == 'cpu'
    pick = lambda value, on_cpu, native: value if value != 'auto' else (
        on_cpu if cpu else native)
    return (pick(self.conv_impl, 'split', 'grouped'), pick(self.pool_grad, 'custom', 'autodiff'),
            pick(self.lrn_impl, 'rsqrt', 'pow'), pick(self.conv_weight_grad, 'matmul', 'native'))

  # --- geometry -------------------------------------------------------------

  @property
  def conv1_pad(self) -> int:
    """conv1's padding per side: 0 if the input tiles exactly (227), else 2 (224)."""
    if self.conv1_padding >= 0:
      return self.conv1_padding
    size, stride, _ = CONV_GEOMETRY['conv1']
    return 0 if (self.input_size - size) % stride == 0 else 2

  @property
  def pool(self) -> tuple[int, int]:
    return (3, 2) if self.pooling == 'overlapping' else (2, 2)

  def spatial_sizes(self) -> dict[str, int]:
    """Output height (= width) of each conv layer and pooling."""
    window, stride = self.pool
    pooled = lambda s: (s - window) // stride + 1
    size, conv_stride, _ = CONV_GEOMETRY['conv1']
    s1 = (self.input_size + 2 * self.conv1_pad - size) // conv_stride + 1
    s2 = pooled(s1)
    s3 = pooled(s2)
    return {'conv1': s1, 'pool1': s2, 'conv2': s2, 'pool2': s3, 'conv3': s3,
            'conv4': s3, 'conv5': s3, 'pool5': pooled(s3)}

  def kernel_shapes(self) -> dict[str, tuple[int, ...]]:
    """Per-layer kernel shape with the leading tower axis."""
    t = self.towers
    w1, w2, w3, w4, w5 = (w // t for w in self.conv_widths)
    f6, f7 = (w // t for w in self.fc_widths)
    s5 = self.spatial_sizes()['pool5']
    conv_in = (3, w1, t * w2, w3, w4)            # conv3 sees both towers
    shapes = {name: (t, CONV_GEOMETRY[name][0], CONV_GEOMETRY[name][0], cin, cout)
              for name, cin, cout in zip(CONV_LAYERS, conv_in, (w1, w2, w3, w4, w5),
                                         strict=True)}
    shapes.update({
        'fc6': (t, s5 * s5 * t * w5, f6),        # sees both towers
        'fc7': (t, t * f6, f7),                  # sees both towers
        'fc8': (t, f7, self.num_classes),        # rows of its own tower's fc7 units
    })
    return shapes

  def layer_output_shapes(self) -> dict[str, tuple[int, ...]]:
    """Per-image output shape after each layer (after ReLU) and each pooling."""
    s = self.spatial_sizes()
    c = self.conv_widths
    out = {name: (s[name], s[name], c[i]) for i, name in enumerate(CONV_LAYERS)}
    out.update({'pool1': (s['pool1'], s['pool1'], c[0]), 'pool2': (s['pool2'], s['pool2'], c[1]),
                'pool5': (s['pool5'], s['pool5'], c[4]), 'fc6': (self.fc_widths[0],),
                'fc7': (self.fc_widths[1],), 'fc8': (self.num_classes,)})
    return out

  def macs_per_image(self) -> dict[str, int]:
    """Multiply-adds of each conv/fc layer for one image (biases, LRN, pooling excluded)."""
    if self.arch != 'alexnet':
      return cifar_spec.macs_per_image(self)
    s = self.spatial_sizes()
    out = {}
    for name, shape in self.kernel_shapes().items():
      per_tower = math.prod(shape[1:])
      if name in CONV_LAYERS:
        per_tower *= s[name] * s[name]
      out[name] = per_tower * self.towers
    return out
