"""The hand-written pieces: max-pool's custom gradient, the LRN window, the convolution's
weight gradient as matrix products."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alexnet_jax.model import layers


def autodiff_pool(x, window, stride):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), 'VALID')


@pytest.mark.parametrize('window, stride, size', [
    (3, 2, 13), pytest.param(3, 2, 27, marks=pytest.mark.slow),
    pytest.param(2, 2, 12, marks=pytest.mark.slow)])
def test_max_pool_gradient_equals_autodiff(window, stride, size):
  key = jax.random.key(size)
  # ReLU'd values: many exact ties at zero, as after conv + ReLU in the model.
  x = jax.nn.relu(jax.random.normal(key, (2, size, size, 5)))
  g = jax.random.normal(jax.random.key(1), autodiff_pool(x, window, stride).shape)
  ours = jax.vjp(lambda v: layers.max_pool(v, window, stride), x)
  ref = jax.vjp(lambda v: autodiff_pool(v, window, stride), x)
  np.testing.assert_array_equal(ours[0], ref[0])
  np.testing.assert_allclose(ours[1](g)[0], ref[1](g)[0], rtol=1e-6, atol=1e-6)
  # Each window sends its gradient to exactly one element.
  np.testing.assert_allclose(float(ours[1](jnp.ones_like(g))[0].sum()), g.size)


def _numpy_weight_grad(x, g, size, stride, padding):
  """float64 loops: dk[i, j] = sum over outputs of x_pad[s y + i, s x + j] g[y, x]."""
  x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
  ho, wo = g.shape[1:3]
  xp = np.pad(x, ((0, 0), (padding, padding + stride), (padding, padding + stride), (0, 0)))
  dk = np.zeros((size, size, x.shape[-1], g.shape[-1]))
  for i in range(size):
    for j in range(size):
      window = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
      dk[i, j] = np.einsum('bhwc,bhwo->co', window, g)
  return dk


@pytest.mark.parametrize('size, stride, padding, height, groups', [
    (11, 4, 2, 39, 1),    # conv1 on 224-style input (pad 2)
    (11, 4, 0, 35, 1),    # conv1 on 227-style input (no padding; the blocks overhang)
    (5, 1, 2, 9, 1),      # conv2
    (3, 1, 1, 7, 2),      # conv4/5 as one grouped convolution
    (3, 2, 1, 10, 1),     # a stride that does not divide the kernel
])
def test_matmul_weight_gradient_equals_autodiff_and_numpy(size, stride, padding, height, groups):
  rng = np.random.default_rng(size + stride + height)
  cin, cout = 3 * groups, 4 * groups
  x = jnp.asarray(rng.normal(size=(2, height, height, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(size, size, cin // groups, cout)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=cout), jnp.float32)

  def loss(x, kernel, how):
    y = layers.conv2d(x, kernel, bias, stride, padding, groups=groups, weight_grad=how)
    return jnp.sum(jnp.sin(y)), y

  (ref_dx, ref_dk), ref_y = jax.grad(loss, (0, 1), has_aux=True)(x, kernel, 'native')
  (dx, dk), y = jax.grad(loss, (0, 1), has_aux=True)(x, kernel, 'matmul')
  np.testing.assert_array_equal(y, ref_y)
  np.testing.assert_array_equal(dx, ref_dx)
  scale = float(jnp.abs(ref_dk).max())
  np.testing.assert_allclose(dk / scale, ref_dk / scale, atol=1e-5)
  # Against float64 loops (first group; the output gradient is cos(y)).
  g = np.cos(np.asarray(y, np.float64))[..., :cout // groups]
  want = _numpy_weight_grad(np.asarray(x)[..., :cin // groups], g, size, stride, padding)
  np.testing.assert_allclose(np.asarray(dk)[..., :cout // groups] / scale, want / scale,
                             atol=1e-5)


def test_unknown_weight_grad_is_refused():
  with pytest.raises(ValueError, match="weight_grad='fft'"):
    layers.conv2d(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1)), jnp.zeros(1), 1, 1,
                  weight_grad='fft')


def test_channel_window_sum_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype(np.float32)
  got = np.asarray(layers.channel_window_sum(jnp.asarray(x), 5))
  want = np.stack([x[..., max(0, i - 2):i + 3].sum(-1) for i in range(7)], -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_lrn_gradient_equals_the_plain_formula_gradient():
  """The rsqrt form and reduce_window sum differentiate like a / (k + alpha sum a^2)^beta."""
  x = jax.random.uniform(jax.random.key(0), (2, 3, 3, 16), minval=0, maxval=80)

  def plain(a):
    sq = jnp.pad(a * a, ((0, 0), (0, 0), (0, 0), (2, 2)))
    s = sum(sq[..., i:i + a.shape[-1]] for i in range(5))
    return a / (2.0 + 1e-4 * s) ** 0.75

  w = jax.random.normal(jax.random.key(1), x.shape)
  ours = jax.grad(lambda a: jnp.sum(layers.lrn(a, 'paper') * w))(x)
  ref = jax.grad(lambda a: jnp.sum(plain(a) * w))(x)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(ref - w * 2.0 ** -0.75).max()) > 1e-3   # LRN is not ~linear here


@pytest.mark.parametrize('formula', ['paper', 'caffe'])
def test_lrn_gain_is_the_published_lrn_on_activations_gain_times_larger(formula):
  """lrn(x, gain=g) = lrn(g x) / g: the published constants at another activation scale."""
  x = jax.random.uniform(jax.random.key(2), (2, 3, 3, 8), minval=0, maxval=1.5)
  g = 64.0
  got = layers.lrn(x, formula, gain=g)
  np.testing.assert_allclose(got, layers.lrn(g * x, formula) / g, rtol=1e-5, atol=1e-7)
  # At this scale the published LRN is a constant k^-beta; with the gain it is not.
  k = layers.LRN_FORMULAS[formula][0]
  flat = np.asarray(layers.lrn_scale(x, formula))
  np.testing.assert_allclose(flat, k ** -0.75, rtol=1e-2)
  spread = np.asarray(layers.lrn_scale(x, formula, gain=g))
  assert spread.min() < 0.8 * k ** -0.75


def test_lrn_gain_must_be_positive():
  from alexnet_jax.model import nets
  with pytest.raises(ValueError, match='lrn_gain'):
    nets.ModelSpec(lrn_gain=0.0).validate()
