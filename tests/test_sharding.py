"""The two-GPU split on 8 simulated CPU devices: placement, equality, communication."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.model import nets, sharding, summary
from configs import default, paper

SPEC = nets.ModelSpec(conv_widths=(16, 32, 48, 48, 32), fc_widths=(64, 64), num_classes=10,
                        input_size=67, init='he')


def mesh_config(data=-1, model=2):
  return ml_collections.ConfigDict({'data': data, 'model': model})


@pytest.fixture(scope='module')
def mesh():
  assert len(jax.devices()) == 8, 'tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8'
  return sharding.make_mesh(mesh_config())


def test_mesh_shape_and_fallback(caplog):
  m = sharding.make_mesh(mesh_config())
  assert dict(m.shape) == {'data': 4, 'model': 2}
  one = sharding.make_mesh(mesh_config(), devices=jax.devices()[:1])
  assert dict(one.shape) == {'data': 1, 'model': 1}
  assert 'falling back to mesh.model=1' in caplog.text


@pytest.mark.parametrize('data, model, text', [
    (3, 2, 'mesh.data=3 x mesh.model=2 = 6 devices'),
    (-1, 3, 'mesh.model=3 does not divide the 8 devices'),
    (-1, 0, 'mesh.model=0 is invalid'),
    (0, 2, 'mesh.data=0 is invalid'),
])
def test_impossible_mesh_is_a_clear_error(data, model, text):
  with pytest.raises(ValueError, match=text):
    sharding.make_mesh(mesh_config(data, model))


def test_one_tower_model_cannot_split_over_model_axis(mesh):
  config = paper.get_config('towers=1')
  config.mesh.model = 2
  with pytest.raises(ValueError, match='model.towers=1 cannot be split over mesh.model=2'):
    config_lib.validate(config, mesh_shape=dict(mesh.shape))


@pytest.mark.slow
def test_tower_a_lives_only_on_model_index_0(mesh):
  params = nets.init_params(SPEC, seed=0, mesh=mesh)
  position = {d.id: idx for idx, d in np.ndenumerate(mesh.devices)}
  for name in ('conv2', 'conv4', 'conv5'):
    kernel = params[name]['kernel']
    assert kernel.sharding.spec == jax.sharding.PartitionSpec('model')
    for shard in kernel.addressable_shards:
      tower = shard.index[0].start
      assert shard.data.shape[0] == 1
      assert tower == position[shard.device.id][1], (name, shard.device, tower)
      np.testing.assert_array_equal(shard.data[0], np.asarray(kernel)[tower])


@pytest.mark.slow
def test_sharded_init_equals_single_device_init(mesh):
  a = nets.init_params(SPEC, seed=3)
  b = nets.init_params(SPEC, seed=3, mesh=mesh)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _loss(spec, params, x, y):
  logits = nets.apply(spec, params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@pytest.mark.slow
@pytest.mark.parametrize('lrn_across', [False, True])
def test_sharded_logits_and_gradients_equal_single_device(mesh, lrn_across):
  spec = nets.ModelSpec(**{**SPEC.__dict__, 'lrn_across_towers': lrn_across})
  params = nets.init_params(spec, seed=0)
  x = jax.random.normal(jax.random.key(1), (8, 67, 67, 3))
  y = jax.random.randint(jax.random.key(2), (8,), 0, 10)
  grad_fn = jax.jit(jax.grad(_loss, argnums=1, has_aux=True), static_argnums=0)
  ref_grads, ref_logits = grad_fn(spec, params, x, y)
  sharded = nets.init_params(spec, seed=0, mesh=mesh)
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, sharding.batch_sharding(mesh))
    grads, logits = grad_fn(spec, sharded, xs, y)
  assert logits.sharding.spec[0] == 'data'
  # Tolerance: float32 summation order differs (psum over towers/data shards).
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), rtol=1e-5, atol=1e-6)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads),
                          jax.tree.leaves(ref_grads), strict=True):
    scale = float(jnp.abs(r).max())
    assert scale > 0, path
    np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(r) / scale, atol=2e-5,
                               err_msg=str(path))


def test_communication_only_where_the_towers_meet():
  cfg = default.get_config()
  cfg.mesh.model = 2
  cfg.model.dtype = 'float32'
  s = summary.summarize(cfg, batch_size=16)
  assert s['mesh'] == {'data': 4, 'model': 2}
  over_model = {r['layer'] for r in s['communication'] if 'model' in r['axes']}
  assert not over_model & {'conv1', 'conv2', 'conv4', 'conv5'}, s['communication']
  assert {'conv3', 'fc6', 'fc7', 'fc8'} <= over_model
  grads = [r for r in s['communication'] if r['layer'] == 'gradients']
  assert grads and all(r['axes'] == 'data' for r in grads)
  # The gradient reduction carries each device's half of the parameters (float32).
  half = sum(p['count'] // (2 if p['sharding'] != 'P()' else 1) for p in s['parameters'])
  assert sum(r['bytes'] for r in grads) >= 4 * half
  text = summary.format_tables(s)
  assert 'conv3' in text and f"{s['total_parameters']:,}" in text


def test_replica_group_parsing():
  m = sharding.make_mesh(mesh_config())
  # iota form: 4 groups of 2 consecutive devices = the model axis.
  assert summary.axes_of_groups(summary.replica_groups(
      'x = f32[4] all-gather(y), replica_groups=[4,2]<=[8]'), m) == 'model'
  assert summary.axes_of_groups(summary.replica_groups(
      'x = f32[4] all-reduce(y), replica_groups=[2,4]<=[4,2]T(1,0)'), m) == 'data'
  assert summary.axes_of_groups(summary.replica_groups(
      'x = f32[4] all-reduce(y), replica_groups={{0,1,2,3,4,5,6,7}}'), m) == 'data+model'


def test_start_up_log_names_backend_devices_and_mesh(mesh, caplog, monkeypatch):
  import logging
  caplog.set_level(logging.INFO, logger='absl')     # absl's logger, whatever ran before
  sharding.log_devices(mesh)
  assert 'on cpu: 8 device(s)' in caplog.text and 'mesh data=4, model=2' in caplog.text
  assert 'JAX is running on the CPU' not in caplog.text
  monkeypatch.setattr(sharding, 'accelerator_hint', lambda: 'GPU')
  sharding.log_devices(mesh)
  assert 'seems to have a GPU, but JAX is running on the CPU' in caplog.text


@pytest.mark.slow
def test_native_kernels_on_the_mesh_equal_the_cpu_choices(mesh):
  """One grouped conv per device, autodiff pooling, power-form LRN, autodiff weight
  gradients, on (data=4, model=2) and on one device (towers=2 local: the grouped path
  proper), equal the CPU choices, which are also run on the mesh."""
  import dataclasses
  native = dataclasses.replace(SPEC, conv_impl='grouped', pool_grad='autodiff', lrn_impl='pow',
                               conv_weight_grad='native')
  cpu = dataclasses.replace(SPEC, conv_impl='split', pool_grad='custom', lrn_impl='rsqrt',
                            conv_weight_grad='matmul')
  params = nets.init_params(SPEC, seed=0)
  x = jax.random.normal(jax.random.key(1), (8, 67, 67, 3))
  y = jax.random.randint(jax.random.key(2), (8,), 0, 10)
  grad_fn = jax.jit(jax.grad(_loss, argnums=1, has_aux=True), static_argnums=0)
  ref_grads, ref_logits = grad_fn(cpu, params, x, y)
  one_grads, one_logits = grad_fn(native, params, x, y)
  sharded = nets.init_params(SPEC, seed=0, mesh=mesh)
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, sharding.batch_sharding(mesh))
    mesh_grads, mesh_logits = grad_fn(native, sharded, xs, y)
    cpu_mesh_grads, cpu_mesh_logits = grad_fn(cpu, sharded, xs, y)
  for logits in (one_logits, mesh_logits, cpu_mesh_logits):
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), rtol=1e-5, atol=1e-5)
  for grads in (one_grads, mesh_grads, cpu_mesh_grads):
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
      scale = float(jnp.abs(r).max())
      np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(r) / scale, atol=2e-5)


def test_replica_groups_in_the_mesh_spelling():
  m = sharding.make_mesh(mesh_config())
  line = ("x = (f32[], f32[]) all-reduce(a, b), channel_id=18, replica_groups=mesh['axis_0'=2,"
          "'axis_1'=1,'axis_2'=1,'axis_3'=4], device_ids=([4,2]T(1,0)) {'axis_0'}, "
          "use_global_device_ids=true")
  groups = summary.replica_groups(line)
  assert sorted(map(sorted, groups)) == [[0, 1], [2, 3], [4, 5], [6, 7]]
  assert summary.axes_of_groups(groups, m) == 'model'
