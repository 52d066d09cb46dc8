"""The CIFAR-10 nets (model/cifar.py): parameter counts by hand, shapes, switches, errors,
the per-layer optimizer settings and an abstract train step of each config."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.model import cifar, nets, optimizer, steps
from configs import cifar10_18pct, cifar10_conv_local, cifar10_fast, default
from experiments import ablations_lib

CONFIGS = {'conv_local': cifar10_conv_local, '18pct': cifar10_18pct, 'fast': cifar10_fast}


def spec_of(module, **overrides):
  c = module.get_config()
  c.dataset.folder = '/nonexistent'        # validation does not read it
  for key, value in overrides.items():
    c.model[key] = value
  return config_lib.validate(c)


def conv(k, cin, cout):
  return k * k * cin * cout + cout


def local(out, k, cin, cout):
  return out * out * (k * k * cin * cout + cout)      # unshared weights and biases


def fc(nin, nout):
  return nin * nout + nout


# conv-local-11pct on 24x24: 24 -> pool 12 -> 12 -> pool 6 (cuda-convnet rounds up) -> 6 -> 6.
CONV_LOCAL = (conv(5, 3, 64) + conv(5, 64, 64) + local(6, 3, 64, 32) + local(6, 3, 32, 32)
              + fc(6 * 6 * 32, 10))
# 18pct on 32x32: 32 -> 16 -> 8 -> 4.
PCT18 = conv(5, 3, 32) + conv(5, 32, 32) + conv(5, 32, 64) + fc(4 * 4 * 64, 10)
# 80sec on 24x24: 24 -> 12 -> 6 -> 3; on whole 32x32 images (configs/cifar10_fast.py):
# 32 -> 16 -> 8 -> 4.
SEC80_24 = conv(5, 3, 32) + conv(5, 32, 32) + conv(5, 32, 64) + fc(3 * 3 * 64, 64) + fc(64, 10)
SEC80_32 = SEC80_24 - fc(3 * 3 * 64, 64) + fc(4 * 4 * 64, 64)


def count(spec):
  return sum(x.size for x in jax.tree.leaves(jax.eval_shape(lambda: nets.init_params(spec))))


@pytest.mark.parametrize('name,expected', [('conv_local', CONV_LOCAL), ('18pct', PCT18),
                                           ('fast', SEC80_32)])
def test_parameter_counts_equal_the_layer_lists(name, expected):
  assert count(spec_of(CONFIGS[name])) == expected
  assert (CONV_LOCAL, PCT18, SEC80_32) == (1_116_490, 89_578, 145_578)


def test_80sec_on_crops_and_13pct_counts():
  assert count(spec_of(cifar10_fast, input_size=24)) == SEC80_24 == 116_906
  # conv-local-13pct: the norms have no parameters.
  assert count(spec_of(cifar10_conv_local, lrn='none')) == CONV_LOCAL


def _inter(spec, params, x):
  # Eager: op by op compiles in a fraction of the whole function's XLA:CPU compile.
  return nets.intermediates(spec, params, x)


def _images(spec, n=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(n, spec.input_size, spec.input_size, 3)) * 60, jnp.float32)


def _params(spec, seed=0):
  """He-scaled random parameters drawn by NumPy: no XLA:CPU compile of a random-number
  kernel (seconds each), which the forward tests do not need."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: nets.init_params(spec))
  return jax.tree.map(lambda s: jnp.asarray(
      rng.normal(size=s.shape) * np.sqrt(2 / max(1, np.prod(s.shape[:-1]))), jnp.float32),
      shapes)


@pytest.mark.parametrize('name,expected', [
    ('conv_local', {'conv1': (24, 24, 64), 'conv1_max': (12, 12, 64), 'conv2': (12, 12, 64),
                    'conv2_max': (6, 6, 64), 'local3': (6, 6, 32), 'local4': (6, 6, 32),
                    'fc10': (10,)}),
    ('18pct', {'conv1': (32, 32, 32), 'conv1_max': (16, 16, 32), 'conv2': (16, 16, 32),
               'conv2_avg': (8, 8, 32), 'conv3': (8, 8, 64), 'conv3_avg': (4, 4, 64),
               'fc10': (10,)}),
])
def test_layer_output_shapes(name, expected):
  spec = spec_of(CONFIGS[name])
  params = _params(spec)
  out = _inter(spec, params, _images(spec))
  assert {k: v.shape[1:] for k, v in out.items() if k in expected} == expected
  assert {'conv1_cmrnorm', 'conv2_cmrnorm'} <= set(out) if name == 'conv_local' else \
      {'conv1_rnorm', 'conv2_rnorm'} <= set(out)
  logits = nets.apply(spec, params, _images(spec))
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, out['fc10'], rtol=1e-5, atol=1e-6)


def test_init_stds_are_cuda_convnets():
  spec = spec_of(cifar10_conv_local)
  p = nets.init_params(spec, seed=1)
  for name, std in (('conv1', 1e-4), ('conv2', 0.01), ('local3', 0.04), ('local4', 0.04),
                    ('fc10', 0.01)):
    assert float(jnp.std(p[name]['kernel'])) == pytest.approx(std, rel=0.1), name
    assert not np.any(np.asarray(p[name]['bias']))


def test_lrn_none_drops_the_norms_and_constant_equals_none_for_the_cifar_nets():
  with_norm = spec_of(cifar10_conv_local)
  params = _params(with_norm)
  x = _images(with_norm)
  outs = {lrn: nets.apply(dataclasses.replace(with_norm, lrn=lrn), params, x)
          for lrn in ('cuda_convnet', 'none', 'constant')}
  assert [op.kind for op in cifar.ops(dataclasses.replace(with_norm, lrn='none'))] == [
      'conv', 'max', 'conv', 'max', 'local', 'local', 'fc']
  # cuda-convnet's constant is 1: the 'constant' control is the same net as 'none'.
  np.testing.assert_array_equal(outs['none'], outs['constant'])
  assert float(jnp.abs(outs['none'] - outs['cuda_convnet']).max()) > 0


def test_the_norms_act_at_the_nets_scale():
  """conv-local's first norm divides conv1's output by up to (1 + 2e-4 sum x^2)^0.75."""
  spec = spec_of(cifar10_conv_local, init='he')
  out = _inter(spec, _params(spec), _images(spec))
  ratio = np.asarray(out['conv1_cmrnorm']) / np.maximum(np.asarray(out['conv1']), 1e-30)
  positive = np.asarray(out['conv1']) > 0
  assert ratio[positive].min() < 0.9 and ratio[positive].max() <= 1.0 + 1e-6


@pytest.mark.parametrize('override', [{'activation': 'tanh'}, {'pooling': 'non_overlapping'}])
def test_ablation_switches_change_the_function_not_the_parameters(override):
  spec = spec_of(cifar10_conv_local)
  other = spec_of(cifar10_conv_local, **override)
  params = _params(spec)
  assert count(other) == count(spec)
  x = _images(spec)
  assert float(jnp.abs(nets.apply(spec, params, x) - nets.apply(other, params, x)).max()) > 0
  if 'pooling' in override:
    assert [op.size for op in cifar.ops(other) if op.kind == 'max'] == [2, 2]


def test_dropout_on_the_hidden_fc_layer_of_80sec():
  spec = spec_of(cifar10_fast, dropout_rate=0.5, init='he')
  params = _params(spec)
  x = _images(spec, n=4)
  a = nets.apply(spec, params, x, train=True, dropout_key=jax.random.key(1))
  b = nets.apply(spec, params, x, train=True, dropout_key=jax.random.key(2))
  assert float(jnp.abs(a - b).max()) > 0
  # Test time: the paper's x(1 - rate) on fc64's output.
  plain = dataclasses.replace(spec, dropout_rate=0.0)
  scaled = jax.tree.map(lambda v: v, params)
  scaled['fc10']['kernel'] = params['fc10']['kernel'] * 0.5
  np.testing.assert_allclose(nets.apply(spec, params, x), nets.apply(plain, scaled, x),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('module,override,field', [
    (cifar10_conv_local, {'towers': 2}, 'model.towers'),
    (cifar10_conv_local, {'lrn': 'paper'}, 'model.lrn'),
    (cifar10_fast, {'lrn': 'cuda_convnet'}, 'model.lrn'),
    (cifar10_conv_local, {'dropout_rate': 0.5}, 'model.dropout_rate'),
    (cifar10_conv_local, {'conv_widths': (64, 64)}, 'model.conv_widths'),
    (cifar10_conv_local, {'init': 'caffe'}, 'model.init'),
    (cifar10_fast, {'num_classes': 0}, 'model.num_classes'),
    (default, {'lrn': 'cuda_convnet'}, 'model.lrn'),
])
def test_settings_that_do_not_apply_are_refused_naming_the_field(module, override, field):
  with pytest.raises(ValueError, match=field.replace('.', r'\.')):
    spec_of(module, **override)


def test_sweeps_apply_the_ablations_that_exist_in_each_net():
  ablations = {name: fn for name, (_, fn) in ablations_lib.ABLATIONS.items()}
  with pytest.raises(ablations_lib.NotApplicable, match='hidden fully connected'):
    ablations['dropout'](cifar10_conv_local.get_config())
  assert ablations['dropout'](cifar10_fast.get_config()) == {'model.dropout_rate': 0.5}
  assert ablations['lrn'](cifar10_conv_local.get_config()) == {'model.lrn': 'none'}
  # cuda-convnet's norms have constant 1: lrn=constant is lrn=none there, no control run.
  with pytest.raises(ablations_lib.NotApplicable, match='same net as model.lrn=none'):
    ablations_lib.ablation_overrides('lrn_constant', cifar10_conv_local.get_config())
  for name in ('lrn', 'towers'):                 # 80sec has no norm; no net has towers
    with pytest.raises(ablations_lib.NotApplicable):
      ablations[name](cifar10_fast.get_config())


def test_widths_override_the_published_ones():
  spec = spec_of(cifar10_fast, conv_widths=(16, 16, 32), fc_widths=(32,))
  assert count(spec) == (conv(5, 3, 16) + conv(5, 16, 16) + conv(5, 16, 32) +
                         fc(4 * 4 * 32, 32) + fc(32, 10))


def test_config_refuses_a_model_axis_and_unknown_decay_layers():
  c = cifar10_conv_local.get_config()
  c.dataset.folder = '/nonexistent'
  with pytest.raises(ValueError, match=r'mesh\.model=2 .*mesh\.model=1'):
    config_lib.validate(c, mesh_shape={'data': 4, 'model': 2})
  c.optimizer.layer_weight_decay.fc6 = 0.1
  with pytest.raises(ValueError, match=r'optimizer\.layer_weight_decay\.fc6.*local3'):
    config_lib.validate(c)
  c = cifar10_conv_local.get_config()
  with pytest.raises(ValueError, match=r'dataset\.folder=None'):
    config_lib.validate(c)


def test_alexnet_lrn_constant_keeps_the_factor_k_to_the_minus_beta():
  spec = nets.ModelSpec(towers=1, conv_widths=(8, 16, 16, 16, 16), fc_widths=(16, 16),
                        num_classes=10, input_size=67, init='he', dropout_rate=0.0)
  params = _params(spec)
  x = _images(spec)
  none = _inter(dataclasses.replace(spec, lrn='none'), params, x)
  const = _inter(dataclasses.replace(spec, lrn='constant'), params, x)
  np.testing.assert_allclose(const['pool1'], 2 ** -0.75 * none['pool1'], rtol=1e-6)
  assert float(jnp.abs(const['fc8'] - none['fc8']).max()) > 0


def test_per_layer_decay_and_bias_rate_multiplier():
  """One step from zero momentum: w -= lr (g + wc_layer w), b -= 2 lr g (no decay on b)."""
  params = {'conv1': {'kernel': jnp.full((2,), 3.0), 'bias': jnp.full((2,), 5.0)},
            'fc10': {'kernel': jnp.full((2,), 7.0), 'bias': jnp.full((2,), 11.0)}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optimizer.paper_sgd(0.1, 0.9, 0.5, decay_biases=False,
                           layer_weight_decay={'conv1': 0.0}, bias_lr_multiplier=2.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  got = jax.tree.map(float, jax.tree.map(lambda u: u[0], updates))
  assert got == {'conv1': {'kernel': pytest.approx(-0.1), 'bias': pytest.approx(-0.2)},
                 'fc10': {'kernel': pytest.approx(-0.1 * (1 + 0.5 * 7)),
                          'bias': pytest.approx(-0.2)}}


def test_default_optimizer_state_is_unchanged_by_the_new_options():
  """Runs without per-layer settings keep the optimizer state their checkpoints hold."""
  params = {'fc8': {'kernel': jnp.ones((2,)), 'bias': jnp.ones((2,))}}

  def before(learning_rate, momentum, weight_decay):      # the chain before the options
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale(-learning_rate),
                       optax.trace(decay=momentum))

  old = optax.inject_hyperparams(before)(learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
  new = optimizer.paper_sgd(0.01)
  assert (jax.tree.structure(old.init(params)) == jax.tree.structure(new.init(params)))


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_abstract_train_step_of_each_config(name):
  config = CONFIGS[name].get_config()
  config.dataset.folder = '/nonexistent'
  spec = config_lib.validate(config)
  tx = steps.make_optimizer(config)
  params = jax.eval_shape(lambda: nets.init_params(spec))
  state = steps.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                           opt_state=jax.eval_shape(tx.init, params),
                           rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  batch = {'image': jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((8,), jnp.int32)}
  lighting = {'eigval': jax.ShapeDtypeStruct((3,), jnp.float32),
              'eigvec': jax.ShapeDtypeStruct((3, 3), jnp.float32)}
  mean = jax.ShapeDtypeStruct((32, 32, 3), jnp.float32)
  new_state, metrics = jax.eval_shape(steps.make_train_step(config, spec, tx), state, batch,
                                      mean, lighting)
  assert jax.tree.structure(new_state.params) == jax.tree.structure(params)
  assert metrics['loss'].shape == ()
  assert set(new_state.params) == set(nets.layer_names(spec))


@pytest.mark.slow
def test_data_parallel_step_communicates_only_the_gradients():
  """On 8 devices (data=8) the compiled conv-local step holds one all-reduce: every
  parameter's gradient (1,116,490 floats), no activations."""
  from alexnet_jax.model import summary
  config = cifar10_conv_local.get_config()
  config.dataset.folder = '/nonexistent'
  s = summary.summarize(config, batch_size=16)
  assert s['mesh'] == {'data': 8, 'model': 1} and s['total_parameters'] == CONV_LOCAL
  [r] = s['communication']
  assert (r['layer'], r['op'], r['axes'], r['count']) == ('gradients', 'all-reduce', 'data', 1)
  # The loss and the divergence guard's scalars ride along (12 bytes).
  assert 4 * CONV_LOCAL <= r['bytes'] <= 4 * CONV_LOCAL + 64
