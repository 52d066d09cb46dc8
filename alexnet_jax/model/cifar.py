"""Krizhevsky's CIFAR-10 networks (cuda-convnet's example-layers), from the layers AlexNet
is made of.

The paper's CIFAR-10 statements (section 3.1's ReLU-vs-tanh speed, section 3.3's "13% test
error without normalization and 11% with") are about these small nets, so they run through
the same config, steps, checkpoints and commands as AlexNet: `nets.apply`, `init_params`,
`param_specs` and `ModelSpec.macs_per_image` hand a spec with model.arch != 'alexnet' to the
functions here. The layer tables are cuda-convnet's layers-*.cfg (the rates and decays of
its layer-params-*.cfg are in configs/cifar10_conv_local.py):

- 'cifar10_conv_local' (conv-local-11pct): conv1 64 5x5 -> cmrnorm -> max 3/2 -> conv2 64
  5x5 -> cmrnorm -> max 3/2 -> local3 32 3x3 -> local4 32 3x3 -> fc10; with
  model.lrn='none' the two norms go: conv-local-13pct.
- 'cifar10_18pct': conv1 32 5x5 -> max 3/2 -> rnorm -> conv2 32 5x5 -> avg 3/2 -> rnorm ->
  conv3 64 5x5 -> avg 3/2 -> fc10.
- 'cifar10_80sec': 18pct without the norms and with fc64 before fc10.

cuda-convnet's 18pct/80sec put the ReLU of conv1 after its max-pooling; max-pooling commutes
with any increasing activation (ReLU, tanh), so here it comes first, as everywhere else.
Parameters are {layer: {'kernel', 'bias'}} without AlexNet's tower axis (one tower: the nets
are data parallel only, mesh.model=1). A local layer's kernel is (Ho, Wo, kh, kw, Cin, Cout)
and its bias (Ho, Wo, Cout), one per output unit as in cuda-convnet.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from alexnet_jax.common.cifar_spec import ARCHS, NETS, Op, layer_names, ops, shapes, validate
from alexnet_jax.model import layers

__all__ = ['ARCHS', 'NETS', 'Op', 'apply', 'init_params', 'layer_names', 'ops', 'param_specs',
           'shapes', 'validate']
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

def param_specs(spec: Any) -> dict[str, dict[str, P]]:
  """Every parameter replicated: the CIFAR nets are data parallel only."""
  return {name: {'kernel': P(), 'bias': P()} for name in layer_names(spec)}


def init_params(spec: Any, *, seed: int = 0, mesh: Any = None) -> dict:
  """cuda-convnet's init (model.init='paper'): weights N(0, initW^2), biases 0; or He's."""
  return _initializer(spec, mesh)(seed)


@functools.cache
def _initializer(spec: Any, mesh: Any):
  def make(seed):
    key = jax.random.key(seed)
    params = {}
    for i, op in enumerate(o for o in ops(spec) if o.name):
      shape = shapes(spec)[op.name]
      # Inputs per output unit: kh kw Cin (conv, local: after the local layer's Ho, Wo).
      fan_in = math.prod(shape['kernel'][2 if op.kind == 'local' else 0:-1])
      std = op.std if spec.init == 'paper' else math.sqrt((2.0 if op.act else 1.0) / fan_in)
      params[op.name] = {
          'kernel': std * jax.random.normal(jax.random.fold_in(key, i), shape['kernel']),
          'bias': jnp.zeros(shape['bias'], jnp.float32)}
    return params
  if mesh is None:
    return jax.jit(make)
  from jax.sharding import NamedSharding
  shardings = jax.tree.map(lambda p: NamedSharding(mesh, p), param_specs(spec))
  return jax.jit(make, out_shardings=shardings)


# --- forward ----------------------------------------------------------------------------

def apply(spec: Any, params: dict, images: jax.Array, *, train: bool = False,
          dropout_key: jax.Array | None = None, capture: bool = False):
  """Logits (float32) of NHWC images of spec.input_size; with capture=True every step's
  output instead: each weight layer's after its activation (and dropout), each pooling's
  and norm's as '<previous layer>_<kind>' ('conv1_max', 'conv2_avg', 'conv1_cmrnorm').

  Under a mesh of more than one device the forward runs in shard_map, the batch split
  over the data axes and the parameters replicated: each device computes its own rows and
  the gradients meet in one all-reduce. Left to jit's partitioner, the locally connected
  layers' weight gradients all-gathered their input patches over 'data' instead (16 MB
  per step of conv-local at batch 128, seen in `alexnet_jax.summary`).
  """
  if train and spec.dropout_rate > 0 and dropout_key is None:
    raise ValueError('train=True with dropout needs a dropout_key')
  key = dropout_key if dropout_key is not None else jax.random.key(0)
  mesh = jax.sharding.get_abstract_mesh()
  if capture or mesh is None or mesh.empty or math.prod(mesh.shape.values()) == 1:
    return _forward(spec, params, images, key, train=train, capture=capture)
  data_axes = tuple(a for a in mesh.axis_names if a != 'model')

  def per_device(params, images, key):
    for a in data_axes:                   # a different dropout mask on every data shard
      key = jax.random.fold_in(key, jax.lax.axis_index(a))
    return _forward(spec, params, images, key, train=train)

  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(data_axes), P()),
                       out_specs=P(data_axes))(params, images, key)


def _forward(spec: Any, params: dict, images: jax.Array, key: jax.Array, *, train: bool,
             capture: bool = False):
  dtype = _DTYPES[spec.dtype]
  _, pool_grad, lrn_impl, weight_grad = spec.kernels(jax.default_backend())
  act = jax.nn.relu if spec.activation == 'relu' else jnp.tanh
  rate = spec.dropout_rate
  captured = {}
  x = images.astype(dtype)
  last = None
  for op in ops(spec):
    w = (lambda part, op=op: params[op.name][part].astype(dtype)) if op.name else None
    with jax.named_scope(op.name or f'{last}_{op.kind}'):
      if op.kind == 'conv':
        x = layers.conv2d(x, w('kernel'), w('bias'), 1, op.pad, weight_grad=weight_grad)
      elif op.kind == 'local':
        x = layers.locally_connected(x, w('kernel'), w('bias'), op.pad)
      elif op.kind == 'fc':
        x = x.reshape(x.shape[0], -1) @ w('kernel') + w('bias')
      elif op.kind == 'max':
        x = layers.max_pool_ceil(x, op.size, op.stride, grad=pool_grad)
      elif op.kind == 'avg':
        x = layers.avg_pool_ceil(x, op.size, op.stride)
      elif op.kind == 'cmrnorm':
        x = layers.cross_map_norm(x, op.size, op.scale, op.power, impl=lrn_impl,
                                  gain=spec.lrn_gain)
      else:
        x = layers.within_map_norm(x, op.size, op.scale, op.power, impl=lrn_impl,
                                   gain=spec.lrn_gain)
      if op.name and op.act:
        x = act(x)
      if op.kind == 'fc' and op.act and rate > 0:      # hidden fc: the paper's dropout
        if train:
          key = jax.random.fold_in(key, layer_names(spec).index(op.name))
          x = layers.dropout(x, rate, key, inverted=spec.dropout_scaling == 'inverted')
        elif spec.dropout_scaling != 'inverted':
          x = layers.dropout_test_scale(x, rate)
    if op.name:
      last = op.name
    if capture:
      captured[op.name or f'{last}_{op.kind}'] = x
  if capture:
    return captured
  return x.astype(jnp.float32)
