"""Small pure functions the AlexNet forward pass is made of.

They work on one tower's activations in NHWC layout; the model decides which
tower lives where.
"""

from __future__ import annotations

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
           padding: int) -> jax.Array:
  """Convolution NHWC x HWIO with symmetric zero padding, plus bias."""
  y = lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + bias


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Max-pooling over H and W without padding (the paper's 3/2, or 2/2)."""
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), 'VALID')


def channel_window_sum(sq: jax.Array, n: int) -> jax.Array:
  """Sum over n adjacent channels centred on each channel (zeros past the ends).

  Written as n shifted slices of a padded copy: differentiable, and fuses into
  one elementwise loop on every backend.
  """
  lo = n // 2
  c = sq.shape[-1]
  padded = jnp.pad(sq, [(0, 0)] * (sq.ndim - 1) + [(lo, n - 1 - lo)])
  return sum(padded[..., i:i + c] for i in range(n))


def lrn_denominator(x: jax.Array, formula: str) -> jax.Array:
  """(k + alpha' * sum over the channel window of x^2) ** beta."""
  k, n, alpha, beta, per_term = LRN_FORMULAS[formula]
  if per_term:
    alpha = alpha / n
  s = channel_window_sum(x * x, n)
  return (k + alpha * s) ** beta


def lrn(x: jax.Array, formula: str) -> jax.Array:
  """Local response normalisation across the channels of x (last axis)."""
  return x / lrn_denominator(x, formula)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Inverted dropout: kept units are scaled by 1/(1-rate) so eval needs no rescale.

  The paper multiplies by 0.5 at test time instead; the two are equivalent in
  expectation.
  """
  if rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))
