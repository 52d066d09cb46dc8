"""The train and eval steps: honest accuracy, the divergence flag, the loss, 10-crop averaging."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.model import steps


def test_rank_counts_ties_against_the_prediction():
  scores = jnp.array([[1.0, 1.0, 0.0],     # tie with the true class: not top-1
                      [0.0, 2.0, 1.0],     # true class strictly best
                      [3.0, 3.0, 3.0]])    # all equal: last
  labels = jnp.array([0, 1, 2])
  np.testing.assert_array_equal(np.asarray(steps.rank_of_label(scores, labels)), [1, 0, 2])


@pytest.mark.parametrize('row', [
    [np.nan, np.nan, np.nan],     # a diverged network
    [0.0, np.nan, -1.0],          # one NaN in the row
    [np.inf, 1.0, 0.0],           # the true score itself not finite (label 0)
])
def test_rank_of_a_non_finite_row_is_wrong_not_right(row):
  rank = steps.rank_of_label(jnp.array([row]), jnp.array([0]))
  assert int(rank[0]) == 3          # ranked after every class: neither top-1 nor top-5


def test_eval_loss_and_ten_crop_average_equal_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 10, 7)).astype(np.float32) * 3   # 4 images x 10 crops
  labels = np.array([0, 3, 6, 2])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  avg = p.mean(axis=1)
  want_loss = -np.log(avg[np.arange(4), labels])
  got = steps.ten_crop_scores(jnp.asarray(logits))
  np.testing.assert_allclose(np.asarray(got), avg, rtol=1e-6)
  got_rank = np.asarray(steps.rank_of_label(got, jnp.asarray(labels)))
  want_rank = [(avg[i] >= avg[i, labels[i]]).sum() - 1 for i in range(4)]
  np.testing.assert_array_equal(got_rank, want_rank)
  loss = -np.log(np.asarray(got)[np.arange(4), labels])
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)


def test_training_loss_is_numpy_softmax_cross_entropy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 9)).astype(np.float32) * 4
  labels = rng.integers(0, 9, 5)
  shifted = logits - logits.max(-1, keepdims=True)
  want = np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(5), labels])
  got = steps.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  # The same function optax would give: the step uses one definition.
  np.testing.assert_allclose(
      float(got), float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()),
      rtol=1e-6)


def test_ten_crop_ranking_has_no_ties_where_log_probabilities_would():
  # Two classes whose averaged probabilities differ, but both underflow log(p + 1e-12)
  # to the same value: ranking probabilities keeps them apart.
  logits = np.full((1, 10, 3), -80.0, np.float32)
  logits[0, :, 0] = 0.0
  logits[0, :, 1] = -60.0       # p ~ e^-60: below 1e-12, above p(class 2) ~ e^-80
  scores = steps.ten_crop_scores(jnp.asarray(logits))
  assert float(scores[0, 1]) > float(scores[0, 2])
  assert int(steps.rank_of_label(scores, jnp.array([1]))[0]) == 1
  jax.block_until_ready(scores)


@pytest.mark.slow
def test_built_state_lives_in_the_shardings_the_steps_expect():
  from alexnet_jax.common import config_lib
  from alexnet_jax.model import nets, sharding
  from configs import default
  config = default.get_config()
  config.model.conv_widths, config.model.fc_widths = (8, 16, 16, 16, 16), (32, 32)
  config.mesh.model = 2
  mesh = sharding.make_mesh(config.mesh)
  built = steps.build(config, config_lib.validate(config, mesh_shape=dict(mesh.shape)), mesh)
  state = built.init_state(0)
  for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(built.state_shardings), strict=True):
    assert x.sharding.is_equivalent_to(s, x.ndim)
  assert state.params['conv2']['kernel'].sharding.spec == nets.param_specs(
      built.spec)['conv2']['kernel']
  abstract = built.abstract_state()
  for x, a in zip(jax.tree.leaves(state), jax.tree.leaves(abstract), strict=True):
    assert x.shape == a.shape and x.dtype == a.dtype


def _losses_of_repeated_steps(**input_overrides):
  """Train-step losses on one fixed batch, learning rate 0, no dropout: only the
  augmentation can change from step to step."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.data import statistics
  from alexnet_jax.model import sharding
  from configs import default
  config = default.get_config()
  config.model.conv_widths, config.model.fc_widths = (8, 16, 16, 16, 16), (32, 32)
  config.model.input_size, config.input.resize_size = 64, 72     # random 64-crops of 72
  config.optimizer.learning_rate = 0.0
  config.mesh.model = 1
  for k, v in input_overrides.items():
    config.input[k] = v
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  built = steps.build(config, config_lib.validate(config), mesh)
  state = built.init_state(0)
  rng = np.random.default_rng(0)
  batch = {'image': jax.device_put(rng.integers(0, 256, (4, 72, 72, 3), dtype=np.uint8),
                                   built.batch),
           'label': jax.device_put(np.arange(4, dtype=np.int32), built.batch)}
  mean = built.device_mean(None)
  lighting = built.device_lighting(statistics.RgbPca(
      eigval=np.float32([0.2, 0.02, 0.005]), eigvec=np.eye(3, dtype=np.float32),
      source='dataset', dataset='test'))
  losses = []
  with jax.set_mesh(mesh):
    for _ in range(3):
      state, metrics = built.train(state, batch, mean, lighting)
      losses.append(float(metrics['loss']))
  return losses


@pytest.mark.slow
def test_augmentation_is_drawn_afresh_at_every_step():
  fresh = _losses_of_repeated_steps()
  assert len(set(fresh)) == 3, fresh          # new crops, flips and lighting each step
  fixed = _losses_of_repeated_steps(random_crop='none', flip=False, pca_lighting=0.0)
  assert fixed[0] == fixed[1] == fixed[2], fixed   # control: nothing random left


@pytest.mark.slow
def test_train_step_takes_the_lighting_pca_as_an_input():
  """The step's lighting follows the eigen-decomposition passed in (one compilation for
  any): the published one, another dataset's, and none (zeros) give three different steps."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.data import statistics
  from alexnet_jax.model import sharding
  from alexnet_jax.run import evaluate
  from configs import default
  config = default.get_config()
  config.model.conv_widths, config.model.fc_widths = (8, 16, 16, 16, 16), (32, 32)
  config.mesh.model, config.batch_size = 2, 16
  mesh = sharding.make_mesh(config.mesh)
  built = steps.build(config, config_lib.validate(config, mesh_shape=dict(mesh.shape)), mesh)
  rng = np.random.default_rng(0)
  batch = evaluate.to_global(
      {'image': rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
       'label': rng.integers(0, 10, (16,), dtype=np.int32)}, built.batch)
  mean = built.device_mean(None)
  config.dataset.name = 'imagenet2012'
  config.input.pca_source = 'published'
  published = statistics.published_rgb_pca(config)
  other = statistics.RgbPca(eigval=np.float32([0.5, 0.05, 0.01]),
                            eigvec=np.eye(3, dtype=np.float32), source='dataset', dataset='other')
  losses = []
  with jax.set_mesh(mesh):
    for pca in (published, other, None, published):
      _, metrics = built.train(built.init_state(0), batch, mean, built.device_lighting(pca))
      losses.append(float(metrics['loss']))
  assert built.train._cache_size() == 1
  assert len(set(losses[:3])) == 3 and losses[3] == losses[0], losses


def test_ten_crops_of_whole_images_are_the_image_and_its_mirror():
  """input.eval_crops=10 on whole images (crop size = host size, CIFAR-10's 32 of 32): the
  ten views are the image and its mirror five times each; eval_logits runs only those two
  through the net and gives what the ten separate forwards give."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.model import nets
  from configs import cifar10_fast
  config = cifar10_fast.get_config()
  config.dataset.folder = '/nonexistent'
  config.input.eval_crops = 10
  spec = config_lib.validate(config)
  params = nets.init_params(spec, seed=3)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
  mean = jnp.asarray(rng.uniform(100, 140, (32, 32, 3)).astype(np.float32))
  got = np.asarray(jax.jit(lambda p, x, m: steps.eval_logits(config, spec, p, x, m))(
      params, images, mean))
  assert got.shape == (3, 10, 10)
  x = (np.asarray(images, np.float32) - np.asarray(mean)) / np.asarray(config.input.std_rgb,
                                                                       np.float32)
  plain = np.asarray(nets.apply(spec, params, jnp.asarray(x)))
  mirror = np.asarray(nets.apply(spec, params, jnp.asarray(x[:, :, ::-1])))
  assert np.abs(plain - mirror).max() > 1e-3        # the mirror is another view
  for k in range(5):
    np.testing.assert_allclose(got[:, k], plain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[:, 5 + k], mirror, rtol=1e-4, atol=1e-4)
