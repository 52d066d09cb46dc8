"""The training loop: resume, train, evaluate, checkpoint, stop cleanly.

The hot loop is one jitted `train_step(state, batch, mean, lighting)` over the
('data', 'model') mesh (from `steps.build`), with the state donated; metrics
stay on the device and are fetched only at log steps; checkpoints are written
asynchronously. Re-running the same command on the same workdir resumes.

Faults (docs/faults.md): one run per workdir (`workdir_lock`); a damaged
newest checkpoint is skipped for the newest good one and a failed save stops the run
with `checkpoints.CheckpointSaveError` (`checkpoints`); undecodable images are counted
per split and epoch into metrics.jsonl and refused beyond input.max_skipped_fraction
(`pipeline.SkipReport`); rows of metrics.jsonl and best/ steps past the step a run
resumes from (written by an interrupted run, about to be redone) are dropped.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.common import config_lib, exits, lazy_tf
from alexnet_jax.data import augment, pipeline, sources, statistics
from alexnet_jax.model import nets, optimizer, sharding, steps
from alexnet_jax.run import checkpoints
from alexnet_jax.run import evaluate as evaluation
from alexnet_jax.run import lock as workdir_lock
from alexnet_jax.run import workdir as workdir_lib

# CLU's writers import TensorFlow (its summary writer): imported on first use through
# lazy_tf, after TensorFlow itself, so that its start-up noise is filtered (lazy_tf).
metric_writers = lazy_tf.Deferred('clu.metric_writers', requires=(lazy_tf.tf,))
periodic_actions = lazy_tf.Deferred('clu.periodic_actions', requires=(lazy_tf.tf,))


class _SignalVote:
  """Which processes have received a stop signal, agreed by all of them.

  Each call adds this process's flag to a tiny all-gather over every device (one int32
  per device) and returns the result of the call before: by then it has long been
  computed, so the host never waits on the device for it and the train steps already
  dispatched stay queued. Every process makes the same calls in the same order (once per
  step), so every process reads the same result at the same step."""

  def __init__(self):
    devices = np.array(jax.devices())
    mesh = jax.sharding.Mesh(devices, ('p',))
    self._process_of = [d.process_index for d in devices]
    self._spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('p'))
    self._gather = jax.jit(lambda x: x, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    self._pending: collections.deque = collections.deque()
    # The two inputs this process can contribute, placed on its devices once.
    self._votes = [jax.make_array_from_callback(
        (len(devices),), self._spread, lambda index, f=f: np.full((1,), f, np.int32))
        for f in (0, 1)]

  def cast(self, flag: bool) -> list[int]:
    """Adds this process's flag; returns the processes whose flag was set at the previous
    call (sorted; [] at the first call)."""
    votes = self._votes[int(flag)]
    self._pending.append(self._gather(votes))
    if len(self._pending) < 2:
      return []
    flags = np.asarray(self._pending.popleft().addressable_data(0))
    return sorted({p for p, f in zip(self._process_of, flags, strict=True) if f})

# CLU's writers import TensorFlow (its summary writer): imported on first use through
# lazy_tf, after TensorFlow itself, so that its start-up noise is filtered (lazy_tf).
metric_writers = lazy_tf.Deferred('clu.metric_writers', requires=(lazy_tf.tf,))
periodic_actions = lazy_tf.Deferred('clu.periodic_actions', requires=(lazy_tf.tf,))


class _StopRequest:
  """SIGTERM / Ctrl-C: finish the current step, checkpoint, exit cleanly.

  With several processes the stop is decided together (`_SignalVote`, every step): a
  signal often reaches one host alone (its VM preempted, Ctrl-C in one terminal), and a
  process that stopped by itself would leave the others waiting in the next collective
  until jax.distributed timed out, with the checkpoint of that step (a collective save)
  never written. All processes stop after the first step whose vote shows a signal on
  any of them, one step after it arrived. A single process stops after the step in
  which its signal arrived, with no vote.

  (jax.distributed's own preemption service, which Orbax's `reached_preemption` reads,
  listens for SIGTERM with a C handler; Python's handler installed here replaces it. It
  is still what catches a SIGTERM that arrives before the loop starts.)"""

  def __init__(self, vote: bool | None = None):
    self.signal: int | None = None
    self.processes: list[int] = []    # the processes whose signal stopped the run
    self._old = {}
    self._vote = _SignalVote() if (jax.process_count() > 1 if vote is None else vote) else None

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
    logging.warning('Received %s: finishing this step, then checkpointing and exiting%s.',
                    signal.Signals(signum).name,
                    ' (every process stops at the same step)' if self._vote else '')

  def requested(self) -> bool:
    """Whether to stop after this step (multi-process: called by every process, once per
    step; the same answer on each)."""
    if self._vote is None:
      self.processes = [jax.process_index()] if self.signal is not None else []
    else:
      self.processes = self._vote.cast(self.signal is not None)
    return bool(self.processes)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class JsonlWriter:
  """metrics.jsonl: one JSON object per logged point (process 0 only).

  Local files are appended to; object stores (gs://...) cannot append, so there
  the whole (small) file is rewritten at each point.
  """

  def __init__(self, workdir: str, enabled: bool):
    self.path = workdir_lib.path(workdir, workdir_lib.METRICS)
    self.enabled = enabled
    self.remote = '://' in workdir
    self.lines: list[str] = []
    if self.enabled and self.remote and self.path.exists():
      self.lines = self.path.read_text().splitlines(keepends=True)

  def truncate_after(self, step: int) -> None:
    """Drops the rows logged after `step`: work of an interrupted run that a resume from
    `step` redoes (and logs again)."""
    if not self.enabled or not self.path.exists():
      return
    lines = self.path.read_text().splitlines(keepends=True)

    def keep(line: str) -> bool:
      try:
        return json.loads(line).get('step', 0) <= step
      except ValueError:
        return False                  # a line cut short by a kill
    kept = [line for line in lines if keep(line)]
    if len(kept) == len(lines):
      return
    logging.info('metrics.jsonl: dropped %d row(s) after step %d, logged by the interrupted '
                 'run (those steps are redone).', len(lines) - len(kept), step)
    if self.remote:
      self.lines = kept
      self.path.write_text(''.join(kept))
    else:
      tmp = self.path.with_name(f'{self.path.name}.tmp{os.getpid()}')
      tmp.write_text(''.join(kept))
      tmp.replace(self.path)

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


@dataclasses.dataclass
class RunContext:
  """What the loop needs, decided once before it starts."""

  config: ml_collections.ConfigDict
  workdir: str
  steps: steps.Steps
  checkpointer: checkpoints.Checkpointer
  controller: optimizer.LearningRateController
  mean: jax.Array                 # on every device
  lighting: dict                  # the PCA lighting's eigval/eigvec, on every device
  total_steps: int
  steps_per_epoch: int
  eval_every: int
  best_top1: float = -1.0
  max_steps: int | None = None    # stop early, as a preemption would (tests)
  is_chief: bool = True
  reached: dict | None = None     # the checkpoint's train_error_reached (stop_at_train_error)


@dataclasses.dataclass
class RunResult:
  """How a run ended."""

  step: int
  eval: dict                      # the last evaluation's metrics ({} if none ran)
  state: steps.TrainState
  stopped: str | None             # None (finished), 'signal', 'preemption', 'max_steps',
                                  # 'train_error' (config.stop_at_train_error reached)
  train_compilations: int         # 1 when no step recompiled


class DivergedError(RuntimeError):
  """The training loss (or a gradient) stopped being finite; nothing after it was saved."""
  exit_status = exits.DIVERGED


class _DivergenceGuard:
  """Watches the per-step `finite` flag the train step computes on the device.

  Off the critical path: `observe` only keeps the step's (device) metrics; the
  host waits on one value, the product of the flags, only at `check`, which the
  loop calls at log steps and before anything is evaluated or saved.
  """

  def __init__(self):
    self.unchecked: list[tuple[int, dict]] = []
    self.last_finite: tuple[int, float] | None = None

  def observe(self, step: int, metrics: dict) -> None:
    self.unchecked.append((step, metrics))

  def check(self, checkpointer: checkpoints.Checkpointer, workdir: str, lr: float) -> None:
    if not self.unchecked:
      return
    flags = jax.numpy.stack([m['finite'] for _, m in self.unchecked])
    if bool(jax.device_get(flags.min()) > 0):
      step, m = self.unchecked[-1]
      self.last_finite = (step, m['loss'])
      self.unchecked = []
      return
    fetched = jax.device_get(self.unchecked)
    bad_step = next(s for s, m in fetched if not m['finite'])
    finite = [(s, float(m['loss'])) for s, m in fetched if m['finite'] and s < bad_step]
    last = finite[-1] if finite else self.last_finite
    if last is not None:
      last = (last[0], float(jax.device_get(last[1])))
    bad_loss = float(dict(fetched)[bad_step]['loss'])
    good = checkpointer.last_good_step()
    raise DivergedError(
        f'training diverged at step {bad_step}: loss {bad_loss} (or a gradient) is not finite'
        + (f'; last finite loss {last[1]:.4f} at step {last[0]}' if last else '')
        + '. Nothing from that step on was saved. '
        + (f'The last good checkpoint is step {good} in {workdir}/checkpoints: run the same '
           f'command with a lower rate to resume from it, e.g. '
           f'--config.optimizer.learning_rate={lr / 10:g}' if good is not None else
           f'No checkpoint had been written yet; start again with a lower rate, e.g. '
           f'--config.optimizer.learning_rate={lr / 10:g}'))


def _steps_per_epoch_and_total(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  n_train = sources.num_examples(config, config.dataset.train_split)
  steps_per_epoch = max(1, n_train // config.batch_size)
  return n_train, steps_per_epoch, optimizer.total_steps(config, steps_per_epoch)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, max_steps: int | None = None) -> RunResult:
  """Trains (resuming from `workdir` if it holds a checkpoint) and evaluates.

  max_steps stops the run early (as a preemption would) after that global step.
  Raises workdir_lock.WorkdirInUseError while another live run holds `workdir`.
  """
  workdir = checkpoints.absolute(workdir)
  mesh = sharding.make_mesh(config.mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape),
                             process_count=jax.process_count())
  sharding.log_devices(mesh)
  lock = workdir_lock.acquire_for_run(workdir)
  try:
    return _train_and_evaluate(config, workdir, mesh, spec, max_steps)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mesh, spec,
                        max_steps: int | None) -> RunResult:
  is_chief = jax.process_index() == 0
  if is_chief:
    workdir_lib.write_config(workdir, config)

  classes = sources.num_classes(config)
  if classes != spec.num_classes:
    raise ValueError(f'model.num_classes={spec.num_classes} but dataset {config.dataset.name!r} '
                     f'has {classes} classes; set --config.model.num_classes={classes}')
  n_train, steps_per_epoch, total_steps = _steps_per_epoch_and_total(config)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  logging.info('Mesh %s; %d train examples, %d steps/epoch, %d steps, eval every %d.',
               dict(mesh.shape), n_train, steps_per_epoch, total_steps, eval_every)

  built = steps.build(config, spec, mesh)
  state = built.init_state(config.seed)
  controller = optimizer.LearningRateController.from_config(config, steps_per_epoch)
  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  best_top1, reached = -1.0, None
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    controller.load_state_dict(meta['schedule'])
    best_top1 = meta.get('best_top1', -1.0)
    reached = meta.get('train_error_reached')
    ckpt.forget_best_after(int(state.step))
    if is_chief:
      JsonlWriter(workdir, True).truncate_after(int(state.step))
    logging.info('Resumed from %s/checkpoints at step %d.', workdir, int(state.step))
  elif config.init_from:
    params, from_step = checkpoints.load_params(config.init_from, state.params)
    state = state.replace(params=params)
    logging.info('Initialised parameters from %s (step %d).', config.init_from, from_step)
  state = state.replace(opt_state=optimizer.set_learning_rate(
      state.opt_state, controller.lr_for_step(int(state.step))))
  if controller.warming_up(int(state.step) + 1) and is_chief:
    logging.info('Learning rate warms up linearly over the first %d steps.',
                 controller.warmup_steps)
  if is_chief:
    logging.info('%s parameters; %s multiply-adds per image.',
                 f'{nets.count_params(state.params):,}',
                 f'{sum(spec.macs_per_image().values()):,}')

  stats = statistics.load_or_compute_statistics(config)
  logging.info('PCA lighting: %s', augment.describe_lighting(config, stats.pca))
  if is_chief:      # what evaluate/predict/figures need of the dataset, kept with the run
    workdir_lib.write_preprocessing(workdir, stats.mean, stats.pca)
  if is_chief and int(state.step) == 0:
    JsonlWriter(workdir, True).truncate_after(0)   # rows of a run killed before its first save
  run = RunContext(config=config, workdir=workdir, steps=built, checkpointer=ckpt,
                   controller=controller, mean=built.device_mean(stats.mean),
                   lighting=built.device_lighting(stats.pca), total_steps=total_steps,
                   steps_per_epoch=steps_per_epoch, eval_every=eval_every,
                   best_top1=best_top1, max_steps=max_steps, is_chief=is_chief,
                   reached=reached)
  with jax.set_mesh(mesh):
    return _loop(run, state)


@contextlib.contextmanager
def _closing(ckpt: checkpoints.Checkpointer, writer):
  """Finishes the async saves already started and flushes the writers, however the loop ends.

  A save that failed in the background raises CheckpointSaveError here; if the loop is
  already ending with an error, that error is kept and the failed save only logged."""
  try:
    yield
  except BaseException:
    ckpt.last_good_step()            # waits; logs a failed save instead of masking the error
    ckpt.close()
    writer.flush()
    raise
  try:
    ckpt.wait()
  finally:
    ckpt.close()
    writer.flush()


def _global_count(n: int) -> int:
  """A per-process count summed over the processes (every process calls this together)."""
  if jax.process_count() == 1:
    return n
  return int(np.sum(multihost_utils.process_allgather(np.int64(n))))


def _loop(run: RunContext, state: steps.TrainState) -> RunResult:
  config, ckpt, controller = run.config, run.checkpointer, run.controller
  if (run.reached and config.stop_at_train_error
      and run.reached['train_error'] <= config.stop_at_train_error):
    # The same command again after the run stopped at its target: nothing left to train.
    logging.info('Training error %.4f <= stop_at_train_error=%g was reached at epoch %d '
                 '(step %d); nothing to train.', run.reached['train_error'],
                 config.stop_at_train_error, run.reached['epoch'], int(state.step))
    run.checkpointer.close()
    return RunResult(step=int(state.step), eval={}, state=state, stopped='train_error',
                     train_compilations=0)
  writer = metric_writers.create_default_writer(run.workdir, just_logging=not run.is_chief)
  jsonl = JsonlWriter(run.workdir, run.is_chief)
  report = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer,
                                           every_secs=30)
  step = int(state.step)
  local_batch = config.batch_size // jax.process_count()
  skips = pipeline.SkipReport(max_fraction=config.input.max_skipped_fraction)
  train_iter = evaluation.prefetch(pipeline.create_train_iterator(
      config, local_batch_size=local_batch, start_step=step,
      process_index=jax.process_index(), process_count=jax.process_count(), skips=skips),
      run.steps.batch, config.input.prefetch)
  pending: list[dict] = []
  last_log_time, last_log_step = time.time(), step
  eval_metrics: dict = {}
  lr = controller.lr_for_step(step)
  stop_reason = None
  guard = _DivergenceGuard()

  # config.stop_at_train_error: the per-step top-1 of the epoch under way (device values,
  # fetched at its end). An epoch resumed part-way is not judged (its first steps' values
  # are gone); the next whole one is.
  stop_error = float(config.stop_at_train_error)
  epoch_top1: list = []
  epoch_whole = step % run.steps_per_epoch == 0
  reached = dict(run.reached or {})

  def meta() -> dict:
    m = {'schedule': controller.state_dict(), 'best_top1': run.best_top1,
         'input_position': step, 'epoch': step / run.steps_per_epoch}
    if reached:
      m['train_error_reached'] = reached
    return m

  with _StopRequest() as stop, _closing(ckpt, writer):
    while step < run.total_steps:
      new_lr = controller.lr_for_step(step)
      if new_lr != lr:
        lr = new_lr
        state = state.replace(opt_state=optimizer.set_learning_rate(state.opt_state, lr))
        # One line per drop of a step or plateau schedule, not one per step of the warm-up
        # or of the linear schedule (the rate is in every progress line).
        if not controller.warming_up(step) and controller.name != 'linear':
          logging.info('Step %d: learning rate -> %g', step, lr)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = run.steps.train(state, next(train_iter), run.mean, run.lighting)
      step += 1
      pending.append(metrics)
      guard.observe(step, metrics)
      report(step)
      if stop_error:
        epoch_top1.append(metrics['top1'])

      if step % config.log_every_steps == 0 or step == run.total_steps:
        guard.check(ckpt, run.workdir, lr)
        fetched = jax.device_get(pending)
        pending = []
        now = time.time()
        summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]
                   if k != 'finite'}
        summary['images_per_sec'] = ((step - last_log_step) * config.batch_size
                                     / max(now - last_log_time, 1e-9))
        summary['epoch'] = step / run.steps_per_epoch
        # Undecodable training images the input stream skipped since the previous row.
        summary['skipped_images'] = _global_count(skips.take_new(config.dataset.train_split))
        last_log_time, last_log_step = now, step
        writer.write_scalars(step, {f'train_{k}': v for k, v in summary.items()})
        jsonl.write({'step': step, 'split': 'train', **summary})
        logging.info('step %d/%d  loss %.4f  top1 %.3f  top5 %.3f  lr %g  %.0f img/s',
                     step, run.total_steps, summary['loss'], summary['top1'], summary['top5'],
                     summary['learning_rate'], summary['images_per_sec'])

      if step % run.eval_every == 0 or step == run.total_steps:
        guard.check(ckpt, run.workdir, lr)
        eval_metrics = evaluation.evaluate_split(run.steps, state.params, config, run.mean,
                                                 config.dataset.eval_split, skips=skips)
        eval_metrics['skipped_images'] = _global_count(skips.take_new(config.dataset.eval_split))
        writer.write_scalars(step, {f'eval_{k}': v for k, v in eval_metrics.items()})
        jsonl.write({'step': step, 'split': 'eval', 'learning_rate': lr, **eval_metrics})
        logging.info('eval at step %d: top1 %.4f  top5 %.4f  loss %.4f  (%d images)', step,
                     eval_metrics['top1'], eval_metrics['top5'], eval_metrics['loss'],
                     eval_metrics['count'])
        if controller.observe(eval_metrics['top1']):
          logging.info('Validation top-1 stopped improving: learning rate / %g (reduction %d '
                       'of %d).', 1 / controller.factor, controller.reductions,
                       controller.max_reductions)
        if eval_metrics['top1'] > run.best_top1:
          run.best_top1 = eval_metrics['top1']
          ckpt.save_best(step, state.params, {'top1': run.best_top1, 'step': step})
        # Eval time is not training throughput: restart the clock (and the count).
        last_log_time, last_log_step = time.time(), step

      if stop_error and step % run.steps_per_epoch == 0:
        if epoch_whole:
          error = 1.0 - float(np.mean(jax.device_get(epoch_top1)))
          if error <= stop_error:
            epoch = step // run.steps_per_epoch
            reached = {'threshold': stop_error, 'epoch': epoch, 'train_error': error,
                       'step': step}
            logging.info('Epoch %d: training error %.4f <= stop_at_train_error=%g; stopping.',
                         epoch, error, stop_error)
            stop_reason = 'train_error'
        epoch_top1, epoch_whole = [], True

      # Every process asks every step (multi-process: a collective vote), stopping or not.
      signalled = stop.requested() or ckpt.reached_preemption(step)
      if stop_reason is not None:
        pass
      elif signalled:
        stop_reason = 'signal' if stop.processes else 'preemption'
      elif run.max_steps is not None and step >= run.max_steps:
        stop_reason = 'max_steps'
      if (step % config.checkpoint_every_steps == 0 or step == run.total_steps
          or stop_reason is not None):
        guard.check(ckpt, run.workdir, lr)
        ckpt.save(step, state, meta())
      if stop_reason is not None:
        break

  if stop_reason in ('signal', 'preemption'):
    by = (f'a stop signal to process(es) {", ".join(map(str, stop.processes))}'
          if stop.processes else 'a preemption notice')
    logging.warning('Stopped at step %d (%s); checkpoint written to %s. Run the same command '
                    'to resume.', step, by, os.path.join(run.workdir, workdir_lib.CHECKPOINTS))
  return RunResult(step=step, eval=eval_metrics, state=state, stopped=stop_reason,
                   train_compilations=run.steps.train._cache_size())
