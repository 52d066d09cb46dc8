"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in Flax NNX.

Representation. Every layer of the paper is split into `towers` halves (the
two GTX 580s). A layer's kernel is stored with a leading tower axis, e.g. conv2
is (towers, 5, 5, 48, 128). `param_specs` is the one statement of how the
parameters are sharded: that tower axis over the mesh axis 'model'. So with
model=2 tower A's weights live only on the devices with model index 0, as on the
paper's GPU 0. Everything else (initialising into shardings, the optimizer
state's shardings, the shard_map of the forward pass) is derived from it.

Compute. The forward pass is one per-device function. Inside it each local
tower is a plain convolution (not a `feature_group_count=2` grouped
convolution, which XLA's CPU backend runs 2-3x slower), and the towers meet
only where the paper connects them: conv3, fc6, fc7 (all-gather over 'model')
and fc8 (each tower holds the rows of fc8 for its own fc7 units; the partial
logits are summed over 'model'). Under a mesh with a 'model' axis the function
runs in `jax.shard_map`, so conv2, conv4 and conv5 cannot communicate by
construction; without a mesh the same function runs with all towers local.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.common import config_lib
from alexnet_jax.model import layers

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
# (kernel size, stride, padding) of conv2..conv5; conv1's padding depends on the input.
_CONV_GEOMETRY = {'conv1': (11, 4, None), 'conv2': (5, 1, 2), 'conv3': (3, 1, 1),
                  'conv4': (3, 1, 1), 'conv5': (3, 1, 1)}
# Every op of the forward pass runs in a jax.named_scope: the layer's name, or
# '<layer>_<part>' for the LRN, pooling and dropout that follow it. The compiled
# program keeps these names, which is how report.py attributes a collective to
# a layer (`layer_of_scope`).
SCOPE_PARTS = ('lrn', 'pool', 'dropout')


def scope(layer: str, part: str | None = None) -> str:
  return layer if part is None else f'{layer}_{part}'


def layer_of_scope(name: str) -> str | None:
  """The layer a named_scope belongs to ('conv1_lrn' -> 'conv1'), or None."""
  base, _, part = name.rpartition('_')
  if base in LAYERS and part in SCOPE_PARTS:
    return base
  return name if name in LAYERS else None


_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _bad(field: str, value: Any, allowed: str) -> ValueError:
  return config_lib.refuse(f'model.{field}', value, allowed)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A validated, hashable copy of a config's `model` section."""

  towers: int = 2
  conv_widths: tuple[int, ...] = (96, 256, 384, 384, 256)
  fc_widths: tuple[int, ...] = (4096, 4096)
  num_classes: int = 1000
  input_size: int = 224
  conv1_padding: int = -1
  lrn: str = 'paper'
  lrn_across_towers: bool = False
  lrn_gain: float = 1.0
  pooling: str = 'overlapping'
  activation: str = 'relu'
  dropout_rate: float = 0.5
  dropout_scaling: str = 'test'
  dropout_placement: str = 'paper'
  dtype: str = 'float32'
  init: str = 'paper'
  conv_impl: str = 'auto'
  pool_grad: str = 'auto'
  lrn_impl: str = 'auto'
  conv_weight_grad: str = 'auto'

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
    for field in config_lib.ALLOWED:
      if field.startswith('model.'):
        config_lib.check_choice(field, getattr(self, field[len('model.'):]))
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
    sizes = self.spatial_sizes() if self.input_size >= 11 else {'pool5': 0}
    if sizes['pool5'] < 1:
      raise _bad('input_size', self.input_size,
                 'an input large enough to leave >= 1x1 after pool5 (e.g. >= 63)')

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
    return 0 if (self.input_size - 11) % 4 == 0 else 2

  @property
  def pool(self) -> tuple[int, int]:
    return (3, 2) if self.pooling == 'overlapping' else (2, 2)

  def spatial_sizes(self) -> dict[str, int]:
    """Output height (= width) of each conv layer and pooling."""
    window, stride = self.pool
    pooled = lambda s: (s - window) // stride + 1
    s1 = (self.input_size + 2 * self.conv1_pad - 11) // 4 + 1
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
    return {
        'conv1': (t, 11, 11, 3, w1),
        'conv2': (t, 5, 5, w1, w2),
        'conv3': (t, 3, 3, t * w2, w3),          # sees both towers
        'conv4': (t, 3, 3, w3, w4),
        'conv5': (t, 3, 3, w4, w5),
        'fc6': (t, s5 * s5 * t * w5, f6),        # sees both towers
        'fc7': (t, t * f6, f7),                  # sees both towers
        'fc8': (t, f7, self.num_classes),        # rows of its own tower's fc7 units
    }

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
    s = self.spatial_sizes()
    out = {}
    for name, shape in self.kernel_shapes().items():
      per_tower = math.prod(shape[1:])
      if name in CONV_LAYERS:
        per_tower *= s[name] * s[name]
      out[name] = per_tower * self.towers
    return out


# --- initialisation ----------------------------------------------------------

def _init_std_and_bias(spec: ModelSpec, name: str, fan_in: int) -> tuple[float, float]:
  ones = name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')
  if spec.init == 'paper':      # Section 5: N(0, 0.01); bias 1 in conv2,4,5, fc6,7.
    return 0.01, 1.0 if ones else 0.0
  if spec.init == 'caffe':      # bvlc_alexnet: std 0.005 in fc6/fc7, bias 0.1.
    return (0.005 if name in ('fc6', 'fc7') else 0.01), 0.1 if ones else 0.0
  gain = 1.0 if name == 'fc8' else 2.0   # 'he'
  return math.sqrt(gain / fan_in), 0.0


class TowerLayer(nnx.Module):
  """A conv or fc layer stored as one kernel per tower (leading 'tower' axis)."""

  def __init__(self, name: str, kernel_shape: tuple[int, ...], spec: ModelSpec, *,
               rngs: nnx.Rngs):
    fan_in = math.prod(kernel_shape[1:-1])
    if name == 'fc8':
      # fc8's rows are split over the towers, but each logit sums both towers' rows.
      fan_in *= kernel_shape[0]
    std, bias = _init_std_and_bias(spec, name, fan_in)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), kernel_shape, jnp.float32))
    # fc8's rows are split over the towers; its bias is added once, after the sum.
    bias_shape = kernel_shape[-1:] if name == 'fc8' else (kernel_shape[0], kernel_shape[-1])
    self.bias = nnx.Param(jnp.full(bias_shape, bias, jnp.float32))


class AlexNet(nnx.Module):
  """The paper's network as a Flax NNX module (see the module docstring).

  The module holds the parameters; the computation is the pure `apply`, so the
  jitted training step can work on a plain dict of parameters (`params_tree`).
  """

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    for name, shape in spec.kernel_shapes().items():
      setattr(self, name, TowerLayer(name, shape, spec, rngs=rngs))

  def params_tree(self) -> dict[str, dict[str, jax.Array]]:
    return {name: {'kernel': getattr(self, name).kernel[...],
                   'bias': getattr(self, name).bias[...]} for name in LAYERS}

  def __call__(self, images: jax.Array, *, train: bool = False,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits (float32) for NHWC float images of size spec.input_size."""
    return apply(self.spec, self.params_tree(), images, train=train, dropout_key=dropout_key)


def intermediates(spec: ModelSpec, params: dict, images: jax.Array, *, train: bool = False,
                  dropout_key: jax.Array | None = None) -> dict[str, jax.Array]:
  """Every layer's output after its ReLU and after each pooling (no mesh); with
  dropout active (rate > 0, or test-time scaling) also what the next layer
  receives from each dropped-out layer: 'fc6_dropout', 'fc7_dropout' (the paper's
  placement), 'pool5_dropout', 'fc6_dropout' (model.dropout_placement='torchvision')."""
  if train and spec.dropout_rate > 0 and dropout_key is None:
    raise ValueError('train=True with dropout needs a dropout_key')
  return _forward(spec, params, images, dropout_key, train=train, axis=None, capture=True)


def param_specs(spec: ModelSpec) -> dict[str, dict[str, P]]:
  """How the parameters are sharded (the only place that says so): the leading tower
  axis of every kernel and bias over the mesh axis 'model'; fc8's bias, added once
  after the towers' partial logits are summed, replicated."""
  return {name: {'kernel': P('model'), 'bias': P() if name == 'fc8' else P('model')}
          for name in LAYERS}


def param_shardings(spec: ModelSpec, mesh: Mesh) -> dict[str, dict[str, NamedSharding]]:
  return jax.tree.map(lambda p: NamedSharding(mesh, p), param_specs(spec))


def init_params(spec: ModelSpec, *, seed: int = 0, mesh: Mesh | None = None) -> dict:
  """Fresh parameters {layer: {'kernel', 'bias'}}.

  With a mesh, jit with out_shardings makes XLA generate each tower's random
  weights on its own devices: no full copy is ever materialised on one device.
  The values do not depend on the mesh.
  """
  return _initializer(spec, mesh)(seed)


@functools.cache
def _initializer(spec: ModelSpec, mesh: Mesh | None):
  """One compiled initialiser per (model, mesh), the seed an argument: XLA:CPU takes
  seconds to compile each threefry random-number kernel, so the compile is reused."""
  make = lambda seed: AlexNet(spec, rngs=nnx.Rngs(params=jax.random.key(seed))).params_tree()
  if mesh is None:
    return jax.jit(make)
  return jax.jit(make, out_shardings=param_shardings(spec, mesh))


def _mesh_model_axis() -> Any | None:
  """The ambient mesh (jax.set_mesh) if it has a 'model' axis, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or 'model' not in mesh.axis_names:
    return None
  return mesh


def apply(spec: ModelSpec, params: dict, images: jax.Array, *, train: bool = False,
          dropout_key: jax.Array | None = None) -> jax.Array:
  """Forward pass; under a mesh with ('data', 'model') axes, one tower per model index."""
  if train and spec.dropout_rate > 0 and dropout_key is None:
    raise ValueError('train=True with dropout needs a dropout_key')
  key = dropout_key if dropout_key is not None else jax.random.key(0)
  mesh = _mesh_model_axis()
  if mesh is None:
    return _forward(spec, params, images, key, train=train, axis=None)
  model_size = mesh.shape['model']
  if spec.towers % model_size:
    raise ValueError(f'model.towers={spec.towers} cannot be split over mesh.model='
                     f'{model_size}; use mesh.model=1 or a multiple-tower model')
  data_axes = tuple(a for a in mesh.axis_names if a != 'model')
  if math.prod(mesh.shape.values()) == 1:
    # One device: shard_map would add only an all-reduce of every gradient over that one
    # device, which XLA does not elide (a copy of all the gradients each step, 66 ms of a
    # one-tower step on a 2-core Zen 3). Same numbers: shard 0's dropout key, as there.
    for _ in data_axes:
      key = jax.random.fold_in(key, 0)
    return _forward(spec, params, images, key, train=train, axis=None)
  fn = functools.partial(_forward, spec, train=train, axis='model',
                         data_axes=data_axes)
  return jax.shard_map(
      fn, mesh=mesh,
      in_specs=(param_specs(spec), P(data_axes), P()),
      out_specs=P(data_axes),
  )(params, images, key)


def _forward(spec: ModelSpec, params: dict, x: jax.Array, key: jax.Array | None, *,
             train: bool, axis: str | None, data_axes: tuple[str, ...] = (),
             capture: bool = False):
  """The per-device forward pass; `axis` names the mesh axis the towers are split on."""
  dtype = _DTYPES[spec.dtype]
  conv_impl, pool_grad, lrn_impl, weight_grad = spec.kernels(jax.default_backend())
  act = jax.nn.relu if spec.activation == 'relu' else jnp.tanh
  window, stride = spec.pool
  local = params['conv1']['kernel'].shape[0]        # towers on this device
  if axis is None:
    first_tower = 0
  else:
    first_tower = jax.lax.axis_index(axis) * local
  if key is not None and axis is not None:
    for a in data_axes:
      key = jax.random.fold_in(key, jax.lax.axis_index(a))
  captured = {}

  def w(name, part, t=None):
    v = params[name][part]
    return (v if t is None else v[t]).astype(dtype)

  def gather(xs):
    """Every tower's activations, concatenated on the channel axis."""
    if axis is None:
      return jnp.concatenate(xs, axis=-1) if len(xs) > 1 else xs[0]
    full = jax.lax.all_gather(jnp.stack(xs), axis, axis=0, tiled=True)
    return jnp.concatenate(list(full), axis=-1) if full.shape[0] > 1 else full[0]

  def record(name, xs):
    if capture:
      captured[name] = jnp.concatenate(xs, axis=-1)
    return xs

  def conv(name, xs_in, shared_input=False):
    size, conv_stride, pad = _CONV_GEOMETRY[name]
    pad = spec.conv1_pad if pad is None else pad
    with jax.named_scope(name):
      if conv_impl == 'split' or local == 1:
        return [act(layers.conv2d(xs_in if shared_input else xs_in[t], w(name, 'kernel', t),
                                  w(name, 'bias', t), conv_stride, pad,
                                  weight_grad=weight_grad))
                for t in range(local)]
      # 'grouped': the local towers as one convolution (Caffe's group: 2), their kernels
      # side by side on the output axis; a shared input is one group.
      kernel = w(name, 'kernel')                        # (local, kh, kw, cin, cout)
      kernel = jnp.moveaxis(kernel, 0, 3).reshape(kernel.shape[1:4] + (-1,))
      x = xs_in if shared_input else jnp.concatenate(xs_in, axis=-1)
      y = act(layers.conv2d(x, kernel, w(name, 'bias').reshape(-1), conv_stride, pad,
                            groups=1 if shared_input else local, weight_grad=weight_grad))
      return jnp.split(y, local, axis=-1)

  def norm(name, xs):
    if spec.lrn == 'none':
      return xs
    with jax.named_scope(scope(name, 'lrn')):
      if not spec.lrn_across_towers or spec.towers == 1:
        return [layers.lrn(h, spec.lrn, impl=lrn_impl, gain=spec.lrn_gain) for h in xs]
      # Caffe: the window spans all channels of both towers.
      scale = layers.lrn_scale(gather(xs), spec.lrn, impl=lrn_impl, gain=spec.lrn_gain)
      width = xs[0].shape[-1]
      return [h * jax.lax.dynamic_slice_in_dim(scale, (first_tower + t) * width, width, -1)
              for t, h in enumerate(xs)]

  def pool(name, xs):
    with jax.named_scope(scope(name, 'pool')):
      return [layers.max_pool(h, window, stride, grad=pool_grad) for h in xs]

  def drop(name, xs):
    rate = spec.dropout_rate
    if rate == 0 or (not train and spec.dropout_scaling == 'inverted'):
      return xs
    with jax.named_scope(scope(name, 'dropout')):
      if not train:
        return [layers.dropout_test_scale(h, rate) for h in xs]
      lkey = jax.random.fold_in(key, LAYERS.index(name))
      return [layers.dropout(h, rate, jax.random.fold_in(lkey, first_tower + t),
                             inverted=spec.dropout_scaling == 'inverted')
              for t, h in enumerate(xs)]

  x = x.astype(dtype)
  h = record('conv1', conv('conv1', x, shared_input=True))
  h = record('pool1', pool('conv1', norm('conv1', h)))
  h = record('conv2', conv('conv2', h))
  h = record('pool2', pool('conv2', norm('conv2', h)))
  with jax.named_scope('conv3'):
    h = gather(h)
  h = record('conv3', conv('conv3', h, shared_input=True))
  h = record('conv4', conv('conv4', h))
  h = record('conv5', conv('conv5', h))
  h = record('pool5', pool('conv5', h))
  # Dropout on the outputs of (conv5's pool, fc6) before fc6 and fc7 (torchvision's
  # classifier), or of (fc6, fc7) after their ReLUs (the paper's section 4.2).
  dropped = ('conv5', 'fc6') if spec.dropout_placement == 'torchvision' else ('fc6', 'fc7')
  if 'conv5' in dropped:
    h = drop('conv5', h)
    if spec.dropout_rate > 0:
      record('pool5_dropout', h)
  for name in ('fc6', 'fc7'):
    with jax.named_scope(name):
      full = gather(h)
      full = full.reshape(full.shape[0], -1)
      # Per-tower dots on kernel[t]: on one device the slice copies the weights, but
      # a dot batched over the towers measured slower still on XLA:CPU (1.80 vs 1.41
      # CPU-s per paper step, benchmarks/logs/step.md). With one tower per
      # device (mesh.model=2) the slice is free.
      h = [act(full @ w(name, 'kernel', t) + w(name, 'bias', t)) for t in range(local)]
    h = record(name, h)
    if name in dropped:
      h = drop(name, h)
      if spec.dropout_rate > 0:
        record(name + '_dropout', h)
  with jax.named_scope('fc8'):
    logits = sum((h[t] @ w('fc8', 'kernel', t)).astype(jnp.float32) for t in range(local))
    if axis is not None:
      logits = jax.lax.psum(logits, axis)
    logits = logits + params['fc8']['bias']
  if capture:
    captured['fc8'] = logits
    return captured
  return logits


def create_model(model_config: Any, *, rngs: nnx.Rngs) -> AlexNet:
  """Builds AlexNet from a config's `model` section (ConfigDict, dict or ModelSpec)."""
  spec = model_config if isinstance(model_config, ModelSpec) else ModelSpec.from_config(
      model_config)
  return AlexNet(spec, rngs=rngs)


def count_params(model_or_state: Any) -> int:
  """Number of parameters (works on abstract shapes from nnx.eval_shape)."""
  state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) \
      else model_or_state
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))
