"""Small pure functions the AlexNet forward pass is made of.

They work on one tower's activations in NHWC layout; the model decides which
tower lives where.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax.common.cifar_spec import pooled_size

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


# Below this many (blocked) input channels conv_weight_grad makes one product per kernel
# row instead of one per offset: a stride-1 conv1 on RGB images (cifar10_80sec's) took 29
# ms instead of 38 for its kernel gradient at batch 128; at 32 channels the per-offset
# products were faster (70 against 81 ms; a 2-core AMD EPYC Zen 1, XLA:CPU, jax 0.10.2).
_FEW_CHANNELS = 16


def conv_weight_grad(x: jax.Array, g: jax.Array, size: int, stride: int,
                     padding: int) -> jax.Array:
  """d(loss)/d(kernel) of a size x size convolution (NHWC x HWIO, symmetric zero padding)
  with output gradient g, as matrix products: kernel[i, j] = x_ij^T g over every output
  position, x_ij the input window at offset (i, j), for each of the size^2 offsets.

  With a stride s > 1 the padded input is first cut into s x s blocks stacked on the
  channel axis (space-to-depth): the convolution becomes a ceil(size/s)^2-offset one
  with s^2 times the channels, so each product has s^2 C rows instead of C (3 for the
  images into conv1) and there are about s^2 times fewer of them. With fewer than
  _FEW_CHANNELS (blocked) channels, each kernel row's offsets share one product.
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
  if cb < _FEW_CHANNELS:
    # Few channels (3 for the images into a stride-1 conv1): a product with cb rows is
    # mostly overhead, so put a row's `blocks` column offsets side by side on the
    # channel axis first: one product of blocks * cb rows per kernel row.
    xj = jnp.concatenate([lax.slice(xp, (0, 0, j, 0), (n, xp.shape[1], j + wo, cb))
                          for j in range(blocks)], axis=-1)
    for i in range(blocks):
      window = lax.slice(xj, (0, i, 0, 0), (n, i + ho, wo, blocks * cb)).reshape(-1, blocks * cb)
      rows.append(jnp.dot(window.T, g2))
  else:
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


# --- the layers of cuda-convnet's CIFAR-10 nets ------------------------------------------
# Formulas as Krizhevsky's cuda-convnet (2011) computes them, read from its source:
# layer.py's NormLayerParser.add_params divides `scale` by `size` for the cross-map norm and
# by `size**2` for the within-map one ("dic['scale'] /= dic['size'] if self.norm_type ==
# self.CROSSMAP_RESPONSE_NORM else dic['size']**2"); conv_util.cu's normalisation kernels
# then compute `imgs * __powf(1 + addScale * sum, -powScale)` (the constant is 1, not the
# paper's k = 2); its pooling layers have ceil((size - window) / stride) + 1 outputs
# (PoolLayerParser), and kLocalPool averages over the pixels of a window that lie inside
# the image (regionSize = the clipped window's area).


def _far_pad(x: jax.Array, window: int, stride: int) -> tuple[int, int]:
  """Rows and columns to add after the far edge so that every cuda-convnet window fits."""
  h, w = x.shape[1:3]
  return tuple((pooled_size(s, window, stride) - 1) * stride + window - s for s in (h, w))


def max_pool_ceil(x: jax.Array, window: int, stride: int, *, grad: str = 'custom') -> jax.Array:
  """cuda-convnet's max-pooling: `max_pool` over the image padded with -inf at the far
  edge, so a window hanging over the edge takes the max of its pixels inside."""
  ph, pw = _far_pad(x, window, stride)
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  return max_pool(x, window, stride, grad=grad)


def avg_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
  """cuda-convnet's average pooling (`pool=avg`): the mean over the pixels of each window
  that lie inside the image (a window hanging over the far edge averages fewer pixels, not
  zeros), with ceil-rounded output size as `pooled_size`."""
  ph, pw = _far_pad(x, window, stride)
  pad = ((0, 0), (0, ph), (0, pw), (0, 0))
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pad)
  # Pixels inside the image per window: a constant, folded in by XLA.
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, pad)
  return total / count


def _norm_power(d: jax.Array, power: float, impl: str) -> jax.Array:
  """d ** -power; for power = 3/4 with impl='rsqrt' as rsqrt(d) * sqrt(rsqrt(d)) (see
  `lrn_scale`)."""
  if power == 0.75 and impl == 'rsqrt':
    r = lax.rsqrt(d)
    return r * jnp.sqrt(r)
  return d ** -power


def cross_map_norm(x: jax.Array, size: int, scale: float, power: float, *,
                   impl: str = 'rsqrt', gain: float = 1.0) -> jax.Array:
  """cuda-convnet's `cmrnorm` (across maps): x (1 + scale / size * sum over the `size`
  maps centred on each map of x^2) ** -power. Maps c - size//2 .. c + size - 1 - size//2,
  clipped at the ends. `gain` as in `lrn_scale`."""
  d = 1.0 + (scale / size) * gain * gain * channel_window_sum(x * x, size)
  return x * _norm_power(d, power, impl)


def within_map_norm(x: jax.Array, size: int, scale: float, power: float, *,
                    impl: str = 'rsqrt', gain: float = 1.0) -> jax.Array:
  """cuda-convnet's `rnorm` (within each map): x (1 + scale / size^2 * sum over the
  size x size neighbourhood of x^2) ** -power; the neighbourhood starts size//2 pixels
  before each pixel and is clipped at the image's edges."""
  lo = size // 2
  pad = ((0, 0), (lo, size - 1 - lo), (lo, size - 1 - lo), (0, 0))
  sums = lax.reduce_window(x * x, 0.0, lax.add, (1, size, size, 1),
                           (1, 1, 1, 1), pad)
  d = 1.0 + (scale / (size * size)) * gain * gain * sums
  return x * _norm_power(d, power, impl)


def locally_connected(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: int,
                      stride: int = 1) -> jax.Array:
  """A convolution whose filters are not shared: cuda-convnet's `local` layer.

  kernel (Ho, Wo, kh, kw, Cin, Cout): one filter bank per output position; bias
  (Ho, Wo, Cout), one per output unit as cuda-convnet's LocalUnsharedLayerParser makes
  them. The input's patches come from one XLA op (conv_general_dilated_patches, features
  ordered (Cin, kh, kw)), then a matrix product batched over the Ho x Wo positions.
  """
  ho, wo, kh, kw, cin, cout = kernel.shape
  patches = lax.conv_general_dilated_patches(
      x, (kh, kw), (stride, stride), ((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if patches.shape[1:3] != (ho, wo):
    raise ValueError(f'locally connected kernel for {ho}x{wo} outputs, input gives '
                     f'{patches.shape[1]}x{patches.shape[2]}')
  k = kernel.transpose(0, 1, 4, 2, 3, 5).reshape(ho, wo, cin * kh * kw, cout)
  return jnp.einsum('nhwk,hwkc->nhwc', patches, k) + bias
