"""cuda-convnet's CIFAR layers against float64 NumPy loops written from its formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.model import layers

RNG = np.random.default_rng(0)


def _np_pool(x, window, stride, how):
  """cuda-convnet's kLocalPool: ceil-rounded outputs, windows clipped to the image."""
  n, h, w, c = x.shape
  oh, ow = (-(-(h - window) // stride) + 1, -(-(w - window) // stride) + 1)
  out = np.zeros((n, oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      region = x[:, i * stride:min(h, i * stride + window), j * stride:min(w, j * stride + window)]
      out[:, i, j] = region.max(axis=(1, 2)) if how == 'max' else region.mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('size,window,stride,expected', [
    (24, 3, 2, 12), (12, 3, 2, 6), (32, 3, 2, 16), (16, 3, 2, 8), (8, 3, 2, 4), (24, 2, 2, 12),
    (7, 3, 2, 3)])
def test_pooled_size_rounds_up_as_cuda_convnet(size, window, stride, expected):
  assert layers.pooled_size(size, window, stride) == expected


@pytest.mark.parametrize('how', ['max', 'avg'])
@pytest.mark.parametrize('size,window,stride', [(8, 3, 2), (7, 3, 2), (6, 2, 2)])
def test_pooling_equals_numpy_including_the_far_edge(how, size, window, stride):
  x = RNG.normal(size=(2, size, size, 3))
  if how == 'max':
    got = layers.max_pool_ceil(jnp.asarray(x, jnp.float32), window, stride)
  else:
    got = layers.avg_pool_ceil(jnp.asarray(x, jnp.float32), window, stride)
  np.testing.assert_allclose(np.asarray(got), _np_pool(x, window, stride, how), rtol=1e-5,
                             atol=1e-6)


def test_avg_pool_edge_window_divides_by_pixels_inside_not_window_area():
  x = jnp.ones((1, 4, 4, 1))                    # 3/2 on 4: windows at 0 and 2 (2 pixels wide)
  np.testing.assert_allclose(np.asarray(layers.avg_pool_ceil(x, 3, 2)), 1.0)


def test_max_pool_ceil_gradient_reaches_only_pixels_inside():
  x = jnp.asarray(RNG.normal(size=(1, 6, 6, 2)), jnp.float32)   # 3/2: 3x3 outputs, the last
  for grad in ('custom', 'autodiff'):
    g = jax.grad(lambda v, grad=grad: layers.max_pool_ceil(v, 3, 2, grad=grad).sum())(x)
    assert g.shape == x.shape and np.isfinite(np.asarray(g)).all()
    # row/column of windows hangs over the edge; each output sends 1 to one input.
    assert float(g.sum()) == 3 * 3 * 2


def _np_cmrnorm(x, size, scale, power):
  c = x.shape[-1]
  out = np.empty_like(x)
  for f in range(c):
    lo, hi = max(0, f - size // 2), min(c, f - size // 2 + size)
    out[..., f] = x[..., f] * (1 + scale / size * (x[..., lo:hi] ** 2).sum(-1)) ** -power
  return out


def _np_rnorm(x, size, scale, power):
  n, h, w, c = x.shape
  out = np.empty_like(x)
  for i in range(h):
    for j in range(w):
      y0, x0 = max(0, i - size // 2), max(0, j - size // 2)
      y1, x1 = min(h, i - size // 2 + size), min(w, j - size // 2 + size)
      s = (x[:, y0:y1, x0:x1] ** 2).sum(axis=(1, 2))
      out[:, i, j] = x[:, i, j] * (1 + scale / size ** 2 * s) ** -power
  return out


@pytest.mark.parametrize('impl', ['rsqrt', 'pow'])
def test_cross_map_norm_equals_numpy(impl):
  x = RNG.normal(scale=30.0, size=(2, 3, 3, 9))    # large enough that the norm matters
  got = layers.cross_map_norm(jnp.asarray(x, jnp.float32), 5, 1e-3, 0.75, impl=impl)
  want = _np_cmrnorm(x, 5, 1e-3, 0.75)
  assert np.abs(want / x).min() < 0.6               # the normalisation is not a no-op here
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5)


@pytest.mark.parametrize('size', [3, 4])
def test_within_map_norm_equals_numpy(size):
  x = RNG.normal(scale=100.0, size=(2, 5, 6, 3))
  got = layers.within_map_norm(jnp.asarray(x, jnp.float32), size, 5e-5 * 9, 0.75)
  want = _np_rnorm(x, size, 5e-5 * 9, 0.75)
  assert np.abs(want / x).min() < 0.9
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5)


def test_norms_with_zero_scale_are_the_identity():
  """The constant is 1 (not AlexNet's k = 2): scale 0 leaves the input as it is."""
  x = jnp.asarray(RNG.normal(size=(1, 4, 4, 6)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(layers.cross_map_norm(x, 5, 0.0, 0.75)), x)
  np.testing.assert_array_equal(np.asarray(layers.within_map_norm(x, 3, 0.0, 0.75)), x)


def _np_local(x, kernel, bias, pad):
  n, h, w, cin = x.shape
  ho, wo, kh, kw, _, cout = kernel.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = np.zeros((n, ho, wo, cout))
  for i in range(ho):
    for j in range(wo):
      window = xp[:, i:i + kh, j:j + kw, :]
      out[:, i, j] = np.einsum('nabc,abcd->nd', window, kernel[i, j]) + bias[i, j]
  return out


@pytest.mark.parametrize('pad,size', [(1, 3), (0, 3), (2, 5)])
def test_locally_connected_equals_numpy(pad, size):
  x = RNG.normal(size=(2, 6, 6, 4))
  out = 6 + 2 * pad - size + 1
  kernel = RNG.normal(size=(out, out, size, size, 4, 5))
  bias = RNG.normal(size=(out, out, 5))
  got = layers.locally_connected(*(jnp.asarray(a, jnp.float32) for a in (x, kernel, bias)),
                                 pad)
  np.testing.assert_allclose(np.asarray(got), _np_local(x, kernel, bias, pad), rtol=1e-4,
                             atol=1e-4)


def test_locally_connected_weights_are_not_shared():
  """Changing the filter of one output position changes that position's output only."""
  x = jnp.asarray(RNG.normal(size=(1, 4, 4, 2)), jnp.float32)
  kernel = jnp.asarray(RNG.normal(size=(4, 4, 3, 3, 2, 3)), jnp.float32)
  bias = jnp.zeros((4, 4, 3))
  base = layers.locally_connected(x, kernel, bias, 1)
  moved = layers.locally_connected(x, kernel.at[1, 2].add(1.0), bias, 1)
  changed = np.argwhere(np.abs(np.asarray(moved - base)).max(-1) > 1e-6)
  assert changed.tolist() == [[0, 1, 2]]


def test_locally_connected_gradient_equals_numpy_difference():
  x = jnp.asarray(RNG.normal(size=(1, 3, 3, 2)), jnp.float32)
  kernel = jnp.asarray(RNG.normal(size=(3, 3, 3, 3, 2, 2)), jnp.float32)
  bias = jnp.zeros((3, 3, 2))
  gk = jax.grad(lambda k: layers.locally_connected(x, k, bias, 1).sum())(kernel)
  # d(sum)/d kernel[i, j, a, b, c, :] = padded x[i + a, j + b, c] for every output map.
  xp = np.pad(np.asarray(x[0]), ((1, 1), (1, 1), (0, 0)))
  for i, j, a, b, c in [(0, 0, 0, 0, 0), (1, 2, 2, 1, 1), (2, 2, 1, 1, 0)]:
    np.testing.assert_allclose(np.asarray(gk[i, j, a, b, c]), xp[i + a, j + b, c], rtol=1e-6)
