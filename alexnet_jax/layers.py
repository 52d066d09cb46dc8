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
           padding: int, *, groups: int = 1) -> jax.Array:
  """Convolution NHWC x HWIO with symmetric zero padding, plus bias; `groups` splits
  the input and output channels into that many independent convolutions."""
  y = lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)
  return y + bias


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
  init and learning rate they train differently (README, "Deviations").
  """
  if rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  kept = x / (1.0 - rate) if inverted else x
  return jnp.where(keep, kept, jnp.zeros((), x.dtype))


def dropout_test_scale(x: jax.Array, rate: float) -> jax.Array:
  """The paper's test-time dropout: "multiply their outputs by 0.5" (section 4.2)."""
  return x * jnp.asarray(1.0 - rate, x.dtype)
