"""The train state and the jitted train and eval steps, with their shardings.

`build` is the one place where the steps are assembled and jitted: training,
evaluation, `summary` and the benchmarks all take theirs from it, so what is
measured and inspected is what trains. The steps are pure functions of their
inputs; under the mesh they run the model's shard_map (one tower per 'model'
index) with batches split over 'data'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from alexnet_jax.data import augment, pipeline
from alexnet_jax.model import nets, optimizer, sharding

GUARD_SCOPE = 'divergence_guard'       # named scope of the finite check (report.py)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array          # raw uint32[2] key; dropout/augmentation keys fold in the step


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optimizer
  return optimizer.paper_sgd(o.learning_rate, o.momentum, o.weight_decay,
                         decay_biases=o.decay_biases, nesterov=o.nesterov,
                         layer_weight_decay=dict(o.get('layer_weight_decay', {})),
                         bias_lr_multiplier=o.get('bias_lr_multiplier', 1.0))


def _state_shardings(tx: optax.GradientTransformation, spec: nets.ModelSpec,
                     mesh: Mesh) -> TrainState:
  """Parameters and their momentum as `nets.param_specs` says; the rest replicated."""
  params = nets.param_shardings(spec, mesh)
  abstract_params = jax.eval_shape(lambda: nets.init_params(spec))
  opt_state = optax.tree_map_params(
      tx, lambda _, s: s, jax.eval_shape(tx.init, abstract_params), params,
      transform_non_params=lambda _: sharding.replicated(mesh))
  replicated = sharding.replicated(mesh)
  return TrainState(step=replicated, params=params, opt_state=opt_state, rng=replicated)


def create_train_state(seed: int, spec: nets.ModelSpec, mesh: Mesh,
                       tx: optax.GradientTransformation) -> TrainState:
  """A fresh state, every array created directly in its sharding."""
  shardings = _state_shardings(tx, spec, mesh)
  return _state_at_step_0(nets.init_params(spec, seed=seed, mesh=mesh), seed, tx, shardings)


def _state_at_step_0(params: Any, seed: int, tx: optax.GradientTransformation,
                     shardings: TrainState) -> TrainState:
  """`params` (already in their shardings) at step 0: fresh optimizer state (zero momentum)
  and the seed's key, so a fresh run and an imported one start the same way."""
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  # Raw threefry key data (what jax.random.PRNGKey(seed) holds), saved in checkpoints.
  rng = jax.device_put(np.array([0, seed + 1], np.uint32), shardings.rng)
  return TrainState(step=jax.device_put(np.int32(0), shardings.step), params=params,
                    opt_state=opt_state, rng=rng)


def rank_of_label(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """How many other classes score at least as high as the true one (0 = top-1 correct).

  Ties count against the prediction, as in Caffe's Accuracy layer, and a row
  with a NaN score or a non-finite true score is ranked last: a diverged run
  scores 0%, never 100%.
  """
  true = jnp.take_along_axis(scores, labels[:, None], axis=1)
  rank = jnp.sum(scores >= true, axis=1) - 1
  broken = jnp.isnan(scores).any(axis=1) | ~jnp.isfinite(true[:, 0])
  return jnp.where(broken, scores.shape[1], rank)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy (the paper's multinomial logistic regression objective)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def ten_crop_scores(logits: jax.Array) -> jax.Array:
  """(images, crops, classes) logits -> each image's softmax averaged over its crops."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=1)


def make_train_step(config: ml_collections.ConfigDict, spec: nets.ModelSpec,
                    tx: optax.GradientTransformation) -> Callable:
  """train_step(state, batch, mean, lighting) -> (state, metrics); pure, for jax.jit.

  lighting: {'eigval': [3], 'eigvec': [3, 3]}, the PCA the lighting noise follows (an
  input like the mean, so that another dataset's statistics need no recompilation).
  """

  def train_step(state: TrainState, batch: dict, mean: jax.Array, lighting: dict):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    aug_key, drop_key = jax.random.split(key)
    images = augment.device_preprocess(batch['image'], aug_key, config=config, mean=mean,
                                       train=True, lighting=lighting)
    labels = batch['label']

    def loss_fn(params):
      logits = nets.apply(spec, params, images, train=True, dropout_key=drop_key)
      return cross_entropy(logits, labels), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rank = rank_of_label(logits, labels)
    # One flag for the divergence guard: the loss and the gradients are finite (if
    # they are, the updated parameters are too). The towers' partial sums meet in one
    # small all-reduce over 'model' (60 bytes for the paper model).
    with jax.named_scope(GUARD_SCOPE):
      finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
    metrics = {'loss': loss, 'top1': jnp.mean(rank < 1), 'top5': jnp.mean(rank < 5),
               'learning_rate': optimizer.get_learning_rate(state.opt_state),
               'finite': finite.astype(jnp.float32)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def eval_logits(config: ml_collections.ConfigDict, spec: nets.ModelSpec, params: Any,
                images: jax.Array, mean: jax.Array) -> jax.Array:
  """The evaluation's forward pass: uint8 host images [B, R, R, 3] -> logits [B, classes]
  of the centre crop, or [B, 10, classes] with input.eval_crops=10 (the evaluation and
  `inference`'s predictions both take theirs from here)."""
  x = augment.device_preprocess(images, None, config=config, mean=mean, train=False)
  if x.ndim == 5:
    b, crops = x.shape[:2]
    if x.shape[2] == images.shape[1]:
      # Whole images (crop size = host size, e.g. CIFAR-10's 32 of 32): the five crop
      # positions coincide, so the ten views are the image five times and its mirror five
      # times. Only those two go through the net; each is repeated in place of its copies.
      views = x[:, ::crops // 2]
      logits = nets.apply(spec, params, views.reshape((b * 2,) + x.shape[2:]))
      return jnp.repeat(logits.reshape(b, 2, -1), crops // 2, axis=1)
    return nets.apply(spec, params, x.reshape((b * crops,) + x.shape[2:])).reshape(
        b, crops, -1)
  return nets.apply(spec, params, x)


def make_eval_step(config: ml_collections.ConfigDict, spec: nets.ModelSpec) -> Callable:
  """eval_step(params, batch, mean) -> sums over the real (unmasked) examples."""

  def eval_step(params: Any, batch: dict, mean: jax.Array):
    logits = eval_logits(config, spec, params, batch['image'], mean)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    if logits.ndim == 3:
      # The paper's 10 crops: softmax averaged over the crops of each image, ranked
      # as probabilities (a log of them would create ties where p underflows).
      scores = ten_crop_scores(logits)
      p_true = jnp.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
      loss = -jnp.log(jnp.maximum(p_true, jnp.finfo(jnp.float32).tiny))
    else:
      scores = jax.nn.log_softmax(logits)
      loss = -jnp.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
    rank = rank_of_label(scores, labels)
    return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum((rank < 1) * mask),
            'top5': jnp.sum((rank < 5) * mask), 'count': jnp.sum(mask)}

  return eval_step


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted steps of one run and the shardings of what goes in and out of them.

  train(state, batch, mean, lighting) -> (state, metrics): the state is donated.
  eval(params, batch, mean) -> sums of loss/top1/top5/count over unmasked rows.
  Call them under `jax.set_mesh(mesh)` (the model's shard_map reads it).
  """

  mesh: Mesh
  spec: nets.ModelSpec
  tx: optax.GradientTransformation
  train: Any
  eval: Any
  state_shardings: TrainState
  batch: NamedSharding          # rows over 'data'
  replicated: NamedSharding

  def init_state(self, seed: int) -> TrainState:
    return create_train_state(seed, self.spec, self.mesh, self.tx)

  def state_from_params(self, params: Any, seed: int) -> TrainState:
    """A state at step 0 around given parameters (host arrays are placed in the model's
    shardings): what an imported run (`tools/weights`) starts from."""
    params = jax.device_put(params, self.state_shardings.params)
    return _state_at_step_0(params, seed, self.tx, self.state_shardings)

  def abstract_state(self) -> TrainState:
    """ShapeDtypeStructs of the train state with their shardings: nothing allocated."""
    shapes = jax.eval_shape(lambda: self.init_state(0))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        shapes, self.state_shardings)

  def abstract_inputs(self, config: ml_collections.ConfigDict, batch_size: int
                      ) -> tuple[dict, jax.ShapeDtypeStruct, dict]:
    """Shapes of a training batch, of the mean and of the lighting's PCA, to compile
    without data."""
    r = pipeline.host_image_size(config, train=True)
    batch = {'image': jax.ShapeDtypeStruct((batch_size, r, r, 3), np.uint8, sharding=self.batch),
             'label': jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=self.batch)}
    mean_shape = (r, r, 3) if config.input.mean == 'image' else (3,)
    lighting = {k: jax.ShapeDtypeStruct(shape, np.float32, sharding=self.replicated)
                for k, shape in (('eigval', (3,)), ('eigvec', (3, 3)))}
    return batch, jax.ShapeDtypeStruct(mean_shape, np.float32, sharding=self.replicated), lighting

  def device_mean(self, mean: np.ndarray | None) -> jax.Array:
    """The mean to subtract, on every device (zeros when input.mean='none')."""
    value = np.zeros(3, np.float32) if mean is None else np.asarray(mean, np.float32)
    return jax.device_put(value, self.replicated)

  def device_lighting(self, pca) -> dict[str, jax.Array]:
    """The PCA lighting's eigen-decomposition (statistics.load_or_compute_rgb_pca), on
    every device: {'eigval': [3], 'eigvec': [3, 3]} (zeros when the lighting is off)."""
    if pca is None:
      value = {'eigval': np.zeros(3, np.float32), 'eigvec': np.zeros((3, 3), np.float32)}
    else:
      value = {'eigval': np.asarray(pca.eigval, np.float32),
               'eigvec': np.asarray(pca.eigvec, np.float32)}
    return jax.device_put(value, self.replicated)


def build(config: ml_collections.ConfigDict, spec: nets.ModelSpec, mesh: Mesh) -> Steps:
  """Jits the train and eval steps of `config` over `mesh` (nothing is compiled yet).

  `spec` is the validated model (config_lib.validate returns it).
  """
  tx = make_optimizer(config)
  shardings = _state_shardings(tx, spec, mesh)
  batch, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  train = jax.jit(make_train_step(config, spec, tx), donate_argnums=0,
                  in_shardings=(shardings, batch, replicated, replicated),
                  out_shardings=(shardings, replicated))
  eval_ = jax.jit(make_eval_step(config, spec),
                  in_shardings=(shardings.params, batch, replicated),
                  out_shardings=replicated)
  return Steps(mesh=mesh, spec=spec, tx=tx, train=train, eval=eval_,
               state_shardings=shardings, batch=batch, replicated=replicated)
