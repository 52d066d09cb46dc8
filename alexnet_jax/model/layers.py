"""Small pure functions the AlexNet forward pass is made of.

They work on one tower's activations in NHWC layout; the model decides which
tower lives where.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

# (k, n, alpha, beta, alpha divided by n?) for each LRN formula.
LRN_FORMULAS = {
    # Section 3.3: b = a / (k + alpha * sum a^2)^beta, alpha NOT divided by n.
    'paper': (2.0, 5, 1e-4, 0.75, False),
    # Caffe's bvlc_alexnet: k = 1 and alpha / n per term.
    'caffe': (1.0, 5, 1e-4, 0.75, True),
}


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int,
           padding: int, *, groups: int = 1, weight_grad: str = 'native') -> jax.Array:
  """Convolution NHWC x HWIO with symmetric zero padding, plus bias; `groups` splits
  the input and output channels into that many independent convolutions.

  weight_grad='native' leaves the backward to autodiff (XLA's transposed convolutions);
  'matmul' computes the kernel's gradient as one matrix product per kernel offset
  (`conv_weight_grad`), the input's as autodiff does. Same gradient; on XLA:CPU the
  native weight-gradient convolution ran at 11-47 GFLOP/s against 70-85 for the
  products (a 2-core Zen 3, benchmarks/logs/step.md).
  """
  if weight_grad == 'matmul':
    y = _conv_matmul_wgrad(x, kernel, stride, padding, groups)
  elif weight_grad == 'native':
    y = _conv(x, kernel, stride, padding, groups)
  else:
    raise ValueError(f"weight_grad={weight_grad!r}: use 'native' or 'matmul'")
  return y + bias


def _conv(x, kernel, stride, padding, groups):
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_matmul_wgrad(x, kernel, stride, padding, groups):
  return _conv(x, kernel, stride, padding, groups)


def _conv_matmul_wgrad_fwd(x, kernel, stride, padding, groups):
  return _conv(x, kernel, stride, padding, groups), (x, kernel)


def _conv_matmul_wgrad_bwd(stride, padding, groups, residuals, g):
  x, kernel = residuals
  # The input's gradient as autodiff computes it (XLA drops it when x needs none, as
  # for the images into conv1).
  _, input_vjp = jax.vjp(lambda x: _conv(x, kernel, stride, padding, groups), x)
  (dx,) = input_vjp(g)
  size = kernel.shape[0]
  xs = jnp.split(x, groups, axis=-1) if groups > 1 else [x]
  gs = jnp.split(g, groups, axis=-1) if groups > 1 else [g]
  dk = [conv_weight_grad(xi, gi, size, stride, padding) for xi, gi in zip(xs, gs, strict=True)]
  dk = jnp.concatenate(dk, axis=-1) if groups > 1 else dk[0]
  # Inside shard_map the kernel is the same on every data shard while x and g differ:
  # sum the shards' gradients, as autodiff does for a replicated input.
  summed = tuple(sorted(_varying_axes(dk) - _varying_axes(kernel)))
  if summed:
    dk = lax.psum(dk, summed)
  return dx, dk.astype(kernel.dtype)


def _varying_axes(x: jax.Array) -> frozenset:
  """The shard_map mesh axes x varies over (empty outside shard_map)."""
  aval = jax.typeof(x)
  mat = getattr(aval, 'manual_axis_type', None)          # jax 0.10
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, 'vma', ()))             # jax 0.6-0.9 spelling


_conv_matmul_wgrad.defvjp(_conv_matmul_wgrad_fwd, _conv_matmul_wgrad_bwd)


def conv_weight_grad(x: jax.Array, g: jax.Array, size: int, stride: int,
                     padding: int) -> jax.Array:
  """d(loss)/d(kernel) of a size x size convolution (NHWC x HWIO, symmetric zero padding)
  with output gradient g, as matrix products: kernel[i, j] = x_ij^T g over every output
  position, x_ij the input window at offset (i, j), for each of the size^2 offsets.

  With a stride s > 1 the padded input is first cut into s x s blocks stacked on the
  channel axis (space-to-depth): the convolution becomes a ceil(size/s)^2-offset one
  with s^2 times the channels, so each product has s^2 C rows instead of C (3 for the
  images into conv1) and there are about s^2 times fewer of them.
  """
  n, ho, wo, co = g.shape
  h, w, c = x.shape[1:]
  blocks = -(-size // stride)                       # ceil(size / stride)
  # Rows/columns the (blocked) windows read: stride * (out + blocks - 1), from the top
  # left of the padded input; pad or crop the far edge to exactly that.
  need_h, need_w = stride * (ho + blocks - 1), stride * (wo + blocks - 1)
  xp = jnp.pad(x, ((0, 0), (padding, max(0, need_h - h - padding)),
                   (padding, max(0, need_w - w - padding)), (0, 0)))[:, :need_h, :need_w]
  if stride > 1:
    hb, wb = need_h // stride, need_w // stride
    xp = xp.reshape(n, hb, stride, wb, stride, c).transpose(0, 1, 3, 2, 4, 5)
    xp = xp.reshape(n, hb, wb, stride * stride * c)
  cb = xp.shape[-1]
  g2 = g.reshape(n * ho * wo, co)
  rows = []
  for i in range(blocks):
    for j in range(blocks):
      window = lax.slice(xp, (0, i, j, 0), (n, i + ho, j + wo, cb)).reshape(-1, cb)
      rows.append(jnp.dot(window.T, g2))
  dk = jnp.stack(rows).reshape(blocks, blocks, cb, co)
  if stride > 1:   # (bi, bj, (si, sj, c), co) -> (bi si, bj sj, c, co), cut to size
    dk = dk.reshape(blocks, blocks, stride, stride, c, co).transpose(0, 2, 1, 3, 4, 5)
    dk = dk.reshape(blocks * stride, blocks * stride, c, co)[:size, :size]
  return dk


def max_pool(x: jax.Array, window: int, stride: int, *, grad: str = 'custom') -> jax.Array:
  """Max-pooling over H and W without padding (the paper's 3/2, or 2/2).

  The forward is XLA's reduce_window. grad='autodiff' leaves the backward to
  autodiff (XLA's select_and_scatter, the native form on GPU/TPU); grad='custom'
  writes it out (below), because select_and_scatter runs 6-10x slower on XLA:CPU
  (experiments/cpu_study). The gradient is the same: each window sends its
  gradient to its first maximal element, in row-major order.
  """
  if grad == 'autodiff':
    return _pool_max(x, window, stride)
  return _max_pool_custom(x, window, stride)


def _pool_max(x, window, stride):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), 'VALID')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_custom(x: jax.Array, window: int, stride: int) -> jax.Array:
  return _pool_max(x, window, stride)


def _max_pool_fwd(x, window, stride):
  y = _pool_max(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, residuals, g):
  x, y = residuals
  n, h, w, c = x.shape
  ho, wo = y.shape[1:3]
  dx = jnp.zeros_like(x)
  taken = jnp.zeros(y.shape, bool)
  zero = jnp.zeros((), x.dtype)
  for i in range(window):
    for j in range(window):
      # x[:, i + stride*a, j + stride*b, :] for every output (a, b).
      xs = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                     (1, stride, stride, 1))
      hit = (xs == y) & ~taken
      taken = taken | hit
      contrib = jnp.where(hit, g, zero)
      dx = dx + lax.pad(contrib, zero, ((0, 0, 0),
                                        (i, h - i - (ho - 1) * stride - 1, stride - 1),
                                        (j, w - j - (wo - 1) * stride - 1, stride - 1),
                                        (0, 0, 0)))
  return (dx,)


_max_pool_custom.defvjp(_max_pool_fwd, _max_pool_bwd)


def channel_window_sum(sq: jax.Array, n: int) -> jax.Array:
  """Sum over n adjacent channels centred on each channel (zeros past the ends)."""
  lo = n // 2
  return lax.reduce_window(sq, 0.0, lax.add, (1,) * (sq.ndim - 1) + (n,), (1,) * sq.ndim,
                           ((0, 0),) * (sq.ndim - 1) + ((lo, n - 1 - lo),))


def lrn_scale(x: jax.Array, formula: str, *, impl: str = 'rsqrt',
              gain: float = 1.0) -> jax.Array:
  """(k + alpha' * sum over the channel window of (gain x)^2) ** -beta, the LRN multiplier.

  gain = 1 is the formula as published. Another gain is the same formula applied to
  activations `gain` times larger (x * lrn_scale(gain x) = lrn(gain x) / gain): it puts
  the published constants at their working range in a network whose activations are
  on another scale than the paper's (inputs x 1/128 and He init, say).

  impl='rsqrt': for beta = 3/4 (both formulas) computed as rsqrt(d) * sqrt(rsqrt(d)),
  about 1.5-2x faster than a power and a divide on XLA:CPU, forward and backward.
  impl='pow': d ** -beta, the plain form.
  """
  k, n, alpha, beta, per_term = LRN_FORMULAS[formula]
  if per_term:
    alpha = alpha / n
  alpha = alpha * gain * gain
  d = k + alpha * channel_window_sum(x * x, n)
  if beta == 0.75 and impl == 'rsqrt':
    r = lax.rsqrt(d)
    return r * jnp.sqrt(r)
  return d ** -beta


def lrn(x: jax.Array, formula: str, *, impl: str = 'rsqrt', gain: float = 1.0) -> jax.Array:
  """Local response normalisation across the channels of x (last axis)."""
  return x * lrn_scale(x, formula, impl=impl, gain=gain)


def dropout(x: jax.Array, rate: float, key: jax.Array, *, inverted: bool) -> jax.Array:
  """Zeroes each unit with probability `rate` (training).

  inverted=False is the paper's form: kept units are left as they are, and at
  test time every output is multiplied by 1 - rate (`dropout_test_scale`).
  inverted=True scales kept units by 1/(1-rate) instead, so test time needs no
  rescale. Both give the next layer the same expected input, but under the same
  init and learning rate they train differently (docs/deviations.md).
  """
  if rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  kept = x / (1.0 - rate) if inverted else x
  return jnp.where(keep, kept, jnp.zeros((), x.dtype))


def dropout_test_scale(x: jax.Array, rate: float) -> jax.Array:
  """The paper's test-time dropout: "multiply their outputs by 0.5" (section 4.2)."""
  return x * jnp.asarray(1.0 - rate, x.dtype)
