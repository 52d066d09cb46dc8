"""AlexNet: the paper's numbers, shapes, LRN formula, options and errors."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from alexnet_jax.model import layers, nets
from configs import one_tower, paper

SMALL = nets.ModelSpec(conv_widths=(16, 32, 48, 48, 32), fc_widths=(64, 64), num_classes=10,
                         input_size=67, init='he')


@functools.partial(jax.jit, static_argnums=0)
def _inter(spec, params, x):
  return nets.intermediates(spec, params, x)


@functools.partial(jax.jit, static_argnames=('spec', 'train'))
def _apply(spec, params, x, train=False, key=None):
  return nets.apply(spec, params, x, train=train, dropout_key=key)


def inter(model, x):
  return _inter(model.spec, model.params_tree(), x)


def run(model, x, train=False, key=None):
  return _apply(model.spec, model.params_tree(), x, train=train, key=key)


def abstract_model(model_config):
  return nnx.eval_shape(lambda: nets.create_model(model_config, rngs=nnx.Rngs(0)))


def test_paper_parameter_count_and_macs():
  model = abstract_model(paper.get_config().model)
  assert nets.count_params(model) == 60_965_224
  macs = model.spec.macs_per_image()
  assert sum(macs.values()) == 724_406_816
  per_layer = {name: nets.count_params(nnx.state(getattr(model, name)))
               for name in nets.LAYERS}
  assert per_layer == {'conv1': 34_944, 'conv2': 307_456, 'conv3': 885_120,
                       'conv4': 663_936, 'conv5': 442_624, 'fc6': 37_752_832,
                       'fc7': 16_781_312, 'fc8': 4_097_000}


def test_one_tower_torchvision_count_and_macs():
  model = abstract_model(one_tower.get_config().model)
  assert nets.count_params(model) == 61_100_840
  assert sum(model.spec.macs_per_image().values()) == 714_188_480


def test_paper_one_tower_ablation_config():
  cfg = paper.get_config('towers=1')
  model = abstract_model(cfg.model)
  assert model.spec.towers == 1 and cfg.mesh.model == 1
  assert model.conv2.kernel.shape == (1, 5, 5, 48, 128)   # half the kernels
  assert model.fc6.kernel.shape == (1, 9216, 4096)          # fc layers kept full
  with pytest.raises(ValueError, match='towers=3'):
    paper.get_config('towers=3')


@pytest.mark.parametrize('size', [224, 227])
def test_layer_output_shapes(size):
  spec = nets.ModelSpec.from_config(paper.get_config().model)
  spec = dataclasses.replace(spec, input_size=size)
  model = abstract_model(spec)
  # Shapes only (no compute): build the model and run it inside eval_shape.
  shapes = jax.eval_shape(
      lambda x: inter(nets.create_model(spec, rngs=nnx.Rngs(0)), x),
      jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  got = {k: v.shape[1:] for k, v in shapes.items() if not k.endswith('_dropout')}
  assert shapes['fc6_dropout'].shape == shapes['fc6'].shape     # what fc7 receives
  assert got == {'conv1': (55, 55, 96), 'pool1': (27, 27, 96), 'conv2': (27, 27, 256),
                 'pool2': (13, 13, 256), 'conv3': (13, 13, 384), 'conv4': (13, 13, 384),
                 'conv5': (13, 13, 256), 'pool5': (6, 6, 256), 'fc6': (4096,),
                 'fc7': (4096,), 'fc8': (1000,)}
  assert got == spec.layer_output_shapes()
  assert model.fc6.kernel.shape == (2, 9216, 2048)


def numpy_lrn(a, k, n, alpha, beta):
  """Section 3.3, one channel at a time."""
  out = np.empty_like(a)
  c = a.shape[-1]
  for i in range(c):
    lo, hi = max(0, i - n // 2), min(c - 1, i + n // 2)
    s = np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
    out[..., i] = a[..., i] / (k + alpha * s) ** beta
  return out


def test_lrn_matches_paper_formula():
  a = np.random.default_rng(0).uniform(0, 60, (2, 4, 4, 48)).astype(np.float32)
  got = np.asarray(layers.lrn(jnp.asarray(a), 'paper'))
  want = numpy_lrn(a.astype(np.float64), k=2, n=5, alpha=1e-4, beta=0.75)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Values large enough that the normalisation matters (not ~identity / k**beta).
  assert np.abs(want * 2 ** 0.75 - a).max() > 1.0


def test_lrn_caffe_formula_divides_alpha_by_n():
  a = np.random.default_rng(1).uniform(0, 60, (1, 3, 3, 96)).astype(np.float32)
  got = np.asarray(layers.lrn(jnp.asarray(a), 'caffe'))
  np.testing.assert_allclose(got, numpy_lrn(a.astype(np.float64), 1, 5, 2e-5, 0.75),
                             rtol=1e-5)


@pytest.mark.slow
def test_lrn_comes_before_pooling_as_in_the_paper():
  """Section 3.4/3.5: conv1 -> ReLU -> LRN -> max-pool; on inputs where the LRN is not a
  constant scale, pooling first gives a different result."""
  spec = dataclasses.replace(SMALL, init='paper', towers=1, lrn='paper')
  model = nets.create_model(spec, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(2), (2, 67, 67, 3)) * 255      # pixel scale
  got = inter(model, x)
  conv1 = got['conv1']
  lrn_then_pool = layers.max_pool(layers.lrn(conv1, 'paper'), 3, 2)
  pool_then_lrn = layers.lrn(layers.max_pool(conv1, 3, 2), 'paper')
  np.testing.assert_allclose(got['pool1'], lrn_then_pool, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(pool_then_lrn - lrn_then_pool).max()) > 1e-2 * float(
      jnp.abs(lrn_then_pool).max())


def _conv1_tower_b_changed(spec):
  model = nets.create_model(spec, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(0), (1, spec.input_size, spec.input_size, 3)) * 50
  before = inter(model, x)['pool1']
  model.conv1.kernel[...] = model.conv1.kernel[...].at[1].multiply(30.0)
  after = inter(model, x)['pool1']
  half = spec.conv_widths[0] // 2
  return float(jnp.abs(after[..., :half] - before[..., :half]).max())


@pytest.mark.slow
def test_lrn_window_stays_inside_each_tower():
  spec = dataclasses.replace(SMALL, init='paper')
  assert _conv1_tower_b_changed(spec) == 0.0
  # Caffe's option: the window spans both towers, so tower A sees tower B.
  assert _conv1_tower_b_changed(dataclasses.replace(spec, lrn_across_towers=True)) > 0.0


def test_towers_meet_only_where_the_paper_says():
  """conv2's tower A output ignores tower B; conv3 mixes both."""
  model = nets.create_model(SMALL, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (1, 67, 67, 3))
  before = inter(model, x)
  model.conv2.kernel[...] = model.conv2.kernel[...].at[1].multiply(-3.0)
  after = inter(model, x)
  assert float(jnp.abs(after['conv2'][..., :16] - before['conv2'][..., :16]).max()) == 0.0
  assert float(jnp.abs(after['conv2'][..., 16:] - before['conv2'][..., 16:]).max()) > 0.0
  assert float(jnp.abs(after['conv3'][..., :24] - before['conv3'][..., :24]).max()) > 0.0


def test_paper_init():
  model = nets.create_model(dataclasses.replace(SMALL, init='paper'), rngs=nnx.Rngs(0))
  for name in nets.LAYERS:
    bias = np.asarray(getattr(model, name).bias[...])
    want = 1.0 if name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    assert np.all(bias == want), name
  kernel = np.asarray(model.fc6.kernel[...])
  assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001


def test_caffe_init():
  model = nets.create_model(dataclasses.replace(SMALL, init='caffe'), rngs=nnx.Rngs(0))
  assert np.all(np.asarray(model.conv2.bias[...]) == 0.1)
  assert abs(float(model.fc7.kernel[...].std()) - 0.005) < 0.0005


@pytest.mark.slow
@pytest.mark.parametrize('change', [
    {'pooling': 'non_overlapping'}, {'activation': 'tanh'}, {'lrn': 'none'},
    {'lrn': 'caffe', 'lrn_across_towers': True}, {'towers': 1}, {'input_size': 64},
])
def test_variants_run_and_differ(change):
  base = nets.create_model(SMALL, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, 67, 67, 3))
  variant = nets.create_model(dataclasses.replace(SMALL, **change), rngs=nnx.Rngs(0))
  size = variant.spec.input_size
  out = run(variant, x[:, :size, :size])
  assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
  if 'towers' not in change and 'input_size' not in change:
    assert float(jnp.abs(out - run(base, x)).max()) > 1e-6


def test_non_overlapping_pooling_keeps_sizes():
  spec = nets.ModelSpec(pooling='non_overlapping')
  assert spec.spatial_sizes() == nets.ModelSpec().spatial_sizes()
  assert spec.pool == (2, 2) and nets.ModelSpec().pool == (3, 2)


@pytest.mark.slow
def test_dropout_only_in_training():
  model = nets.create_model(SMALL, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (4, 67, 67, 3))
  key = jax.random.key(4)
  train_a = run(model, x, train=True, key=key)
  assert not np.allclose(train_a, run(model, x))
  np.testing.assert_array_equal(train_a, run(model, x, train=True, key=key))
  no_drop = nets.create_model(dataclasses.replace(SMALL, dropout_rate=0.0), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(run(no_drop, x, train=True, key=key), run(no_drop, x), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('scaling', ['test', 'inverted'])
def test_dropout_sits_after_fc6_and_fc7_at_the_configured_rate_and_scaling(scaling):
  spec = dataclasses.replace(SMALL, fc_widths=(512, 512), dropout_rate=0.4,
                             dropout_scaling=scaling)
  model = nets.create_model(spec, rngs=nnx.Rngs(0))
  params = model.params_tree()
  x = jax.random.normal(jax.random.key(3), (8, 67, 67, 3))
  key = jax.random.key(7)
  ev = jax.jit(nets.intermediates, static_argnums=0)(spec, params, x)
  tr = jax.jit(lambda p, x, k: nets.intermediates(spec, p, x, train=True, dropout_key=k))(
      params, x, key)
  # Nothing before fc6's ReLU is touched by dropout.
  for name in ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5', 'fc6'):
    np.testing.assert_allclose(tr[name], ev[name], rtol=1e-5, atol=1e-6, err_msg=name)
  kernel = lambda name: np.concatenate(list(np.asarray(params[name]['kernel'])), axis=-1)
  bias = lambda name: np.asarray(params[name]['bias']).reshape(-1)
  for name, nxt in (('fc6', 'fc7'), ('fc7', 'fc8')):
    out, fed = np.asarray(tr[name]), np.asarray(tr[name + '_dropout'])
    zero = fed == 0
    assert abs(zero[out > 0].mean() - 0.4) < 0.03, name          # the configured rate
    kept = ~zero & (out > 0)
    factor = 1.0 if scaling == 'test' else 1 / 0.6                 # kept units unscaled
    np.testing.assert_allclose(fed[kept], out[kept] * factor, rtol=1e-6)
    # At test time: the paper multiplies by 1 - rate; inverted dropout leaves it.
    np.testing.assert_allclose(np.asarray(ev[name + '_dropout']),
                               np.asarray(ev[name]) * (0.6 if scaling == 'test' else 1.0),
                               rtol=1e-6)
    if nxt == 'fc7':       # the next layer really is fed the dropped-out units
      want = np.maximum(fed @ kernel('fc7') + bias('fc7'), 0)
      np.testing.assert_allclose(np.asarray(tr['fc7']), want, rtol=1e-4, atol=1e-4)
    else:
      rows = np.asarray(params['fc8']['kernel']).reshape(-1, spec.num_classes)
      np.testing.assert_allclose(np.asarray(tr['fc8']), fed @ rows + bias('fc8'),
                                 rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_he_init_uses_the_full_fan_in_of_fc8():
  spec = dataclasses.replace(SMALL, init='he')          # two towers of 32 fc7 units each
  kernel = np.asarray(nets.create_model(spec, rngs=nnx.Rngs(0)).fc8.kernel[...])
  assert kernel.shape == (2, 32, 10)
  # Each logit sums both towers' rows: fan-in 64, std sqrt(1/64) (fc8 has no ReLU after it).
  assert abs(kernel.std() - (1 / 64) ** 0.5) < 0.01


@pytest.mark.slow
def test_bfloat16_close_to_float32_and_params_stay_float32():
  f32 = nets.create_model(SMALL, rngs=nnx.Rngs(0))
  bf16 = nets.create_model(dataclasses.replace(SMALL, dtype='bfloat16'), rngs=nnx.Rngs(0))
  assert bf16.conv1.kernel[...].dtype == jnp.float32
  x = jax.random.normal(jax.random.key(5), (8, 67, 67, 3))
  a, b = run(f32, x), run(bf16, x)
  assert b.dtype == jnp.float32
  # Stated tolerance: bf16 has an 8-bit mantissa; logits agree to 5% of their range.
  assert float(jnp.abs(a - b).max()) < 0.05 * float(jnp.abs(a).max())
  assert float(jnp.abs(a - b).max()) > 0.0


@pytest.mark.parametrize('change, field, text', [
    ({'towers': 3}, 'model.towers', '3'),
    ({'activation': 'gelu'}, 'model.activation', "'gelu'"),
    ({'conv_widths': (95, 256, 384, 384, 256)}, 'model.conv_widths', 'divisible by towers'),
    ({'fc_widths': (4095, 4096)}, 'model.fc_widths', 'divisible'),
    ({'lrn': 'yes'}, 'model.lrn', "'none', 'paper', 'caffe'"),
    ({'pooling': 'avg'}, 'model.pooling', 'overlapping'),
    ({'dtype': 'float16'}, 'model.dtype', 'bfloat16'),
    ({'init': 'xavier'}, 'model.init', 'he'),
    ({'dropout_rate': 1.0}, 'model.dropout_rate', '0 <= rate < 1'),
    ({'num_classes': 0}, 'model.num_classes', 'positive'),
    ({'input_size': 32}, 'model.input_size', 'pool5'),
    ({'conv_widths': (96, 256)}, 'model.conv_widths', '5 positive ints'),
])
def test_invalid_model_config_is_refused_clearly(change, field, text):
  cfg = paper.get_config().model
  cfg.update(change)
  with pytest.raises(ValueError) as err:
    nets.create_model(cfg, rngs=nnx.Rngs(0))
  message = str(err.value)
  assert field in message and text in message, message


def test_unknown_model_field_is_refused():
  cfg = paper.get_config().model.to_dict()
  cfg['tower'] = 2
  with pytest.raises(ValueError, match="unknown field.*'tower'"):
    nets.ModelSpec.from_config(cfg)


def test_kernel_choices_resolve_per_backend():
  spec = nets.ModelSpec()
  assert spec.kernels('cpu') == ('split', 'custom', 'rsqrt', 'matmul')
  assert spec.kernels('gpu') == spec.kernels('tpu') == ('grouped', 'autodiff', 'pow', 'native')
  fixed = dataclasses.replace(spec, conv_impl='grouped', pool_grad='custom', lrn_impl='pow',
                              conv_weight_grad='native')
  assert fixed.kernels('cpu') == fixed.kernels('gpu') == ('grouped', 'custom', 'pow', 'native')
  with pytest.raises(ValueError, match='conv_weight_grad'):
    nets.ModelSpec.from_config({'conv_weight_grad': 'fft'})


def _loss_and_grads(spec, params, x, y):
  def loss(p):
    logits = nets.apply(spec, p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits
  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return logits, grads


@pytest.mark.slow
def test_every_kernel_combination_gives_the_same_logits_and_gradients():
  import itertools
  base = dataclasses.replace(SMALL, lrn_across_towers=False)
  params = nets.init_params(base, seed=0)
  x = jax.random.normal(jax.random.key(1), (4, 67, 67, 3)) * 30
  y = jnp.arange(4) % 10
  fn = jax.jit(_loss_and_grads, static_argnums=0)
  ref_logits, ref_grads = fn(dataclasses.replace(base, conv_impl='split', pool_grad='custom',
                                                 lrn_impl='rsqrt', conv_weight_grad='native'),
                             params, x, y)
  # All 8 (conv, pool, lrn) forms; the weight gradient's form set by their parity, so
  # every pair of choices (matmul weight gradients with grouped convolutions too) is met.
  for i, (conv, pool, lrn) in enumerate(itertools.product(
      ('split', 'grouped'), ('custom', 'autodiff'), ('rsqrt', 'pow'))):
    wgrad = ('native', 'matmul')[bin(i).count('1') % 2]
    spec = dataclasses.replace(base, conv_impl=conv, pool_grad=pool, lrn_impl=lrn,
                               conv_weight_grad=wgrad)
    logits, grads = fn(spec, params, x, y)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5,
                               err_msg=str((conv, pool, lrn, wgrad)))
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
      scale = float(jnp.abs(r).max())
      np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(r) / scale, atol=2e-5,
                                 err_msg=str((conv, pool, lrn, wgrad)))


@pytest.mark.slow
def test_torchvision_dropout_placement_sits_before_fc6_and_fc7():
  """model.dropout_placement='torchvision': pool5 and fc6 are dropped (what fc6 and fc7
  read), fc7's output reaches fc8 untouched."""
  spec = dataclasses.replace(SMALL, towers=1, fc_widths=(512, 512), dropout_rate=0.4,
                             dropout_scaling='inverted', dropout_placement='torchvision')
  params = nets.create_model(spec, rngs=nnx.Rngs(0)).params_tree()
  x = jax.random.normal(jax.random.key(3), (8, 67, 67, 3))
  tr = jax.jit(lambda p, x, k: nets.intermediates(spec, p, x, train=True, dropout_key=k))(
      params, x, jax.random.key(7))
  assert 'fc7_dropout' not in tr and {'pool5_dropout', 'fc6_dropout'} <= set(tr)
  for name, nxt in (('pool5', 'fc6'), ('fc6', 'fc7')):
    out, fed = np.asarray(tr[name]), np.asarray(tr[name + '_dropout'])
    zero = fed == 0
    assert abs(zero[out > 0].mean() - 0.4) < 0.05, name
    kept = ~zero & (out > 0)
    np.testing.assert_allclose(fed[kept], out[kept] / 0.6, rtol=1e-6)
    k, b = np.asarray(params[nxt]['kernel'][0]), np.asarray(params[nxt]['bias'][0])
    want = np.maximum(fed.reshape(len(fed), -1) @ k + b, 0)
    np.testing.assert_allclose(np.asarray(tr[nxt]), want, rtol=1e-4, atol=1e-4)
  fc8 = np.asarray(tr['fc7']) @ np.asarray(params['fc8']['kernel'][0]) + np.asarray(
      params['fc8']['bias'])
  np.testing.assert_allclose(np.asarray(tr['fc8']), fc8, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='model.dropout_placement'):
    dataclasses.replace(SMALL, dropout_placement='before').validate()
