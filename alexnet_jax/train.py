"""Train state, the jitted train/eval steps, and the training loop.

The hot loop is one jitted `train_step(state, batch, mean)` over the
('data', 'model') mesh, with the state donated; metrics stay on the device and
are fetched only at log steps; checkpoints are written asynchronously.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import (
  augment,
  checkpoints,
  config_lib,
  input_pipeline,
  models,
  optim,
  sharding,
  sources,
  statistics,
)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array          # raw uint32[2] key; dropout/augmentation keys fold in the step


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optimizer
  return optim.paper_sgd(o.learning_rate, o.momentum, o.weight_decay,
                         decay_biases=o.decay_biases, nesterov=o.nesterov)


def _opt_shardings(tx, spec: models.ModelSpec, mesh, params: Any) -> Any:
  """Momentum is sharded like its parameter; scalars (count, hyperparams) replicated."""
  param_shardings = jax.tree.map(lambda p: NamedSharding(mesh, p), models.param_specs(spec))
  return optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params),
                               param_shardings,
                               transform_non_params=lambda _: NamedSharding(mesh, P()))


def create_train_state(config: ml_collections.ConfigDict, spec: models.ModelSpec, mesh,
                       tx: optax.GradientTransformation) -> TrainState:
  """A fresh state, every array created directly in its sharding."""
  model = sharding.create_sharded_model(spec, mesh, seed=config.seed)
  params = model.params_tree()
  replicated = NamedSharding(mesh, P())
  opt_state = jax.jit(tx.init, out_shardings=_opt_shardings(tx, spec, mesh, params))(params)
  # Raw threefry key data (what jax.random.PRNGKey(seed) holds), saved in checkpoints.
  rng = jax.device_put(np.array([0, config.seed + 1], np.uint32), replicated)
  return TrainState(step=jax.device_put(np.int32(0), replicated), params=params,
                    opt_state=opt_state, rng=rng)


def abstract_train_state(config: ml_collections.ConfigDict, spec: models.ModelSpec, mesh,
                         tx: optax.GradientTransformation) -> TrainState:
  """ShapeDtypeStructs, with their shardings, of create_train_state: nothing allocated."""
  shapes = jax.eval_shape(lambda: create_train_state(config, spec, mesh, tx))
  replicated = NamedSharding(mesh, P())
  shardings = TrainState(
      step=replicated,
      params=jax.tree.map(lambda p: NamedSharding(mesh, p), models.param_specs(spec)),
      opt_state=_opt_shardings(tx, spec, mesh, shapes.params), rng=replicated)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      shapes, shardings)


def state_shardings(state: TrainState) -> Any:
  return jax.tree.map(lambda x: x.sharding, state)


def _rank_of_label(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """How many classes score strictly higher than the true one (0 = top-1 correct)."""
  true = jnp.take_along_axis(logits, labels[:, None], axis=1)
  return jnp.sum(logits > true, axis=1)


def make_train_step(config: ml_collections.ConfigDict, spec: models.ModelSpec,
                    tx: optax.GradientTransformation):
  """train_step(state, batch, mean) -> (state, metrics); pure, for jax.jit."""

  def train_step(state: TrainState, batch: dict, mean: jax.Array):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    aug_key, drop_key = jax.random.split(key)
    images = augment.device_preprocess(batch['image'], aug_key, config=config, mean=mean,
                                       train=True)
    labels = batch['label']

    def loss_fn(params):
      logits = models.apply(spec, params, images, train=True, dropout_key=drop_key)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rank = _rank_of_label(logits, labels)
    metrics = {'loss': loss, 'top1': jnp.mean(rank < 1), 'top5': jnp.mean(rank < 5),
               'learning_rate': optim.get_learning_rate(state.opt_state)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(config: ml_collections.ConfigDict, spec: models.ModelSpec):
  """eval_step(params, batch, mean) -> sums over the real (unmasked) examples."""

  def eval_step(params: Any, batch: dict, mean: jax.Array):
    images = augment.device_preprocess(batch['image'], None, config=config, mean=mean,
                                       train=False)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    if images.ndim == 5:
      # The paper's 10 crops: softmax averaged over the crops of each image.
      b, crops = images.shape[:2]
      logits = models.apply(spec, params, images.reshape((b * crops,) + images.shape[2:]))
      probs = jax.nn.softmax(logits).reshape(b, crops, -1).mean(axis=1)
      scores = jnp.log(probs + 1e-12)
    else:
      scores = jax.nn.log_softmax(models.apply(spec, params, images))
    loss = -jnp.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
    rank = _rank_of_label(scores, labels)
    return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum((rank < 1) * mask),
            'top5': jnp.sum((rank < 5) * mask), 'count': jnp.sum(mask)}

  return eval_step


def mean_or_zeros(mean: np.ndarray | None) -> np.ndarray:
  """The mean to subtract as an array (zeros when input.mean='none')."""
  return np.zeros(3, np.float32) if mean is None else np.asarray(mean, np.float32)


def to_global(batch: dict, mesh) -> dict:
  """This process's rows -> one array over the mesh, split on 'data'."""
  data = NamedSharding(mesh, P('data'))
  return {k: jax.make_array_from_process_local_data(data, np.asarray(v))
          for k, v in batch.items()}


def prefetch(iterator: Iterator[dict], mesh, size: int) -> Iterator[dict]:
  """Keeps `size` batches already on their way to the devices (transfers are async)."""
  queue = collections.deque()
  for batch in iterator:
    queue.append(to_global(batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def evaluate(eval_step, params, config, mesh, mean, split: str) -> dict[str, float]:
  """Top-1/top-5/loss over the whole split: padded rows are masked, none dropped."""
  local_batch = config.eval_batch_size // jax.process_count()
  it = input_pipeline.create_eval_iterator(config, split, local_batch_size=local_batch,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count())
  sums = None
  start = time.time()
  for batch in prefetch(it, mesh, config.input.prefetch):
    out = eval_step(params, batch, mean)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  if sums is None:
    raise ValueError(f'eval split {split!r} is empty')
  sums = jax.device_get(sums)
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / count, 'top1': float(sums['top1']) / count,
          'top5': float(sums['top5']) / count, 'count': count,
          'images_per_sec': count / max(time.time() - start, 1e-9)}


class _StopRequest:
  """SIGTERM / Ctrl-C: finish the current step, checkpoint, exit cleanly."""

  def __init__(self):
    self.signal: int | None = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:     # not the main thread (e.g. inside some test runners)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:       # a second Ctrl-C: stop at once
      raise KeyboardInterrupt
    self.signal = signum
    logging.warning('Received %s: finishing this step, then checkpointing and exiting.',
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class JsonlWriter:
  """metrics.jsonl: one JSON object per logged point (process 0 only).

  Local files are appended to; object stores (gs://...) cannot append, so there
  the whole (small) file is rewritten at each point.
  """

  def __init__(self, workdir: str, enabled: bool):
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self.enabled = enabled
    self.remote = '://' in workdir
    self.lines: list[str] = []
    if self.enabled and self.remote and self.path.exists():
      self.lines = self.path.read_text().splitlines(keepends=True)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    line = json.dumps(record) + '\n'
    if self.remote:
      self.lines.append(line)
      self.path.write_text(''.join(self.lines))
    else:
      with open(self.path, 'a') as f:
        f.write(line)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, max_steps: int | None = None) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint) and evaluates.

  max_steps stops the run early (as a preemption would) after that global step;
  tests use it. Returns the last eval metrics and the final step.
  """
  workdir = checkpoints.absolute(workdir)
  mesh = sharding.make_mesh(config.mesh)
  config_lib.validate(config, data_parallel=mesh.shape['data'],
                      process_count=jax.process_count())
  spec = models.ModelSpec.from_config(config.model)
  sharding.check_mesh_fits_model(mesh, spec)
  is_chief = jax.process_index() == 0
  if is_chief:
    checkpoints.write_config(workdir, config)

  classes = sources.num_classes(config)
  if classes != spec.num_classes:
    raise ValueError(f'model.num_classes={spec.num_classes} but dataset {config.dataset.name!r} '
                     f'has {classes} classes; set --config.model.num_classes={classes}')
  n_train = sources.num_examples(config, config.dataset.train_split)
  steps_per_epoch = max(1, n_train // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(round(config.num_epochs * steps_per_epoch)))
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  logging.info('Mesh %s; %d train examples, %d steps/epoch, %d steps, eval every %d.',
               dict(mesh.shape), n_train, steps_per_epoch, total_steps, eval_every)

  tx = make_optimizer(config)
  state = create_train_state(config, spec, mesh, tx)
  controller = optim.LearningRateController.from_config(config, steps_per_epoch)
  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  best_top1 = -1.0
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    controller.load_state_dict(meta['schedule'])
    best_top1 = meta.get('best_top1', -1.0)
    logging.info('Resumed from %s/checkpoints at step %d.', workdir, int(state.step))
  elif config.init_from:
    params, from_step = checkpoints.load_params(config.init_from, state.params)
    state = state.replace(params=params)
    logging.info('Initialised parameters from %s (step %d).', config.init_from, from_step)
  state = state.replace(opt_state=optim.set_learning_rate(
      state.opt_state, controller.lr_for_step(int(state.step))))
  if is_chief:
    parameter_overview.log_parameter_overview(state.params)
    logging.info('%s parameters; %s multiply-adds per image.',
                 f'{models.count_params(state.params):,}',
                 f'{sum(spec.macs_per_image().values()):,}')

  shardings = state_shardings(state)
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P('data'))
  mean = jax.device_put(mean_or_zeros(statistics.load_or_compute_mean_image(config)), replicated)
  with jax.set_mesh(mesh):
    train_step = jax.jit(make_train_step(config, spec, tx), donate_argnums=0,
                         in_shardings=(shardings, data, replicated),
                         out_shardings=(shardings, replicated))
    eval_step = jax.jit(make_eval_step(config, spec),
                        in_shardings=(shardings.params, data, replicated),
                        out_shardings=replicated)
    return _loop(config, workdir, mesh, state, train_step, eval_step, mean, ckpt, controller,
                 best_top1, total_steps, eval_every, steps_per_epoch, max_steps, is_chief)


def _loop(config, workdir, mesh, state, train_step, eval_step, mean, ckpt, controller,
          best_top1, total_steps, eval_every, steps_per_epoch, max_steps, is_chief):
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  jsonl = JsonlWriter(workdir, is_chief)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_secs=30)
  step = int(state.step)
  local_batch = config.batch_size // jax.process_count()
  train_iter = prefetch(input_pipeline.create_train_iterator(
      config, local_batch_size=local_batch, start_step=step,
      process_index=jax.process_index(), process_count=jax.process_count()),
      mesh, config.input.prefetch)
  pending: list[dict] = []
  last_log_time, last_log_step = time.time(), step
  eval_metrics: dict = {}
  lr = controller.lr_for_step(step)
  stop_reason = None

  def meta() -> dict:
    return {'schedule': controller.state_dict(), 'best_top1': best_top1,
            'input_position': step, 'epoch': step / steps_per_epoch}

  with _StopRequest() as stop:
    while step < total_steps:
      new_lr = controller.lr_for_step(step)
      if new_lr != lr:
        lr = new_lr
        state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, lr))
        logging.info('Step %d: learning rate -> %g', step, lr)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(train_iter), mean)
      step += 1
      pending.append(metrics)
      report(step)

      if step % config.log_every_steps == 0 or step == total_steps:
        fetched = jax.device_get(pending)
        pending = []
        now = time.time()
        summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        summary['images_per_sec'] = ((step - last_log_step) * config.batch_size
                                     / max(now - last_log_time, 1e-9))
        summary['epoch'] = step / steps_per_epoch
        last_log_time, last_log_step = now, step
        writer.write_scalars(step, {f'train_{k}': v for k, v in summary.items()})
        jsonl.write({'step': step, 'split': 'train', **summary})
        logging.info('step %d/%d  loss %.4f  top1 %.3f  top5 %.3f  lr %g  %.0f img/s',
                     step, total_steps, summary['loss'], summary['top1'], summary['top5'],
                     summary['learning_rate'], summary['images_per_sec'])

      if step % eval_every == 0 or step == total_steps:
        eval_metrics = evaluate(eval_step, state.params, config, mesh, mean,
                                config.dataset.eval_split)
        writer.write_scalars(step, {f'eval_{k}': v for k, v in eval_metrics.items()})
        jsonl.write({'step': step, 'split': 'eval', 'learning_rate': lr, **eval_metrics})
        logging.info('eval at step %d: top1 %.4f  top5 %.4f  loss %.4f  (%d images)', step,
                     eval_metrics['top1'], eval_metrics['top5'], eval_metrics['loss'],
                     eval_metrics['count'])
        if controller.observe(eval_metrics['top1']):
          logging.info('Validation top-1 stopped improving: learning rate / %g (reduction %d '
                       'of %d).', 1 / controller.factor, controller.reductions,
                       controller.max_reductions)
        if eval_metrics['top1'] > best_top1:
          best_top1 = eval_metrics['top1']
          ckpt.save_best(step, state.params, {'top1': best_top1, 'step': step})
        # Eval time is not training throughput: restart the clock (and the count).
        last_log_time, last_log_step = time.time(), step

      if stop.signal is not None or ckpt.reached_preemption(step):
        stop_reason = 'signal' if stop.signal is not None else 'preemption'
      elif max_steps is not None and step >= max_steps:
        stop_reason = 'max_steps'
      if (step % config.checkpoint_every_steps == 0 or step == total_steps
          or stop_reason is not None):
        ckpt.save(step, state, meta())
      if stop_reason is not None:
        break

  ckpt.wait()
  ckpt.close()
  writer.flush()
  if stop_reason == 'signal':
    logging.warning('Stopped at step %d; checkpoint written to %s. Run the same command to '
                    'resume.', step, os.path.join(workdir, 'checkpoints'))
  return {'step': step, 'eval': eval_metrics, 'state': state, 'stopped': stop_reason,
          'train_step': train_step}
