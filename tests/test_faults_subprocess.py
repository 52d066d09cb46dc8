"""Faults as a user meets them: the real `python -m alexnet_jax.main` in subprocesses, real
signals (SIGTERM, SIGKILL), real files damaged on disk, real write failures, a real
read-only directory, 1, 2 and 8 simulated devices.

All launches share one persistent compilation cache (about 20 instead of 80 CPU-s each; set
ALEXNET_TEST_JAX_CACHE=DIR to keep it between sessions) and one prebuilt copy of the tiny
built-in dataset. Every launch of one test is the same command (24 steps, a checkpoint every
2, a metrics row every step); the uninterrupted run on 8 devices is the reference the
interrupted and moved runs must end at.
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import data_utils
import fault_utils
import jax
import numpy as np
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.data import statistics
from alexnet_jax.model import sharding, steps
from alexnet_jax.run import checkpoints

pytestmark = pytest.mark.slow
STEPS = 24
PHOTOS = data_utils.sample_jpegs()

# A `main` that SIGKILLs itself inside an async save, at the moment named by KILL_AT:
# 'state@N' when the 'state' item of step N has been written and is being committed (the
# step folder is still temporary), 'step@N' when the whole step is written and its
# temporary folder is about to be renamed into place. (A kill from inside: the one way to
# land deterministically in a save that takes milliseconds.)
KILL_SCRIPT = '''
import os, signal
from orbax.checkpoint._src.path import atomicity

where, _, step = os.environ['KILL_AT'].partition('@')
finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize_or_die(self, *args, **kwargs):
  final = self._final_path
  if ((where == 'step' and final.name == step and final.parent.name == 'checkpoints') or
      (where == 'state' and final.name == 'state'
       and final.parent.name.startswith(step + '.orbax-checkpoint-tmp'))):
    print(f'SIGKILL inside the save of step {step} ({where})', flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
from absl import app
from alexnet_jax import main
app.run(main.main)
'''


@pytest.fixture(scope='module')
def cache():
  """The launches' compilation cache: the session's (conftest.py), which the other tests'
  launches of `main` fill too; $ALEXNET_TEST_JAX_CACHE keeps one across sessions."""
  return os.environ.get('ALEXNET_TEST_JAX_CACHE') or os.environ['JAX_COMPILATION_CACHE_DIR']


@pytest.fixture(scope='module')
def data_dir(fault_data_dir):
  """The tiny alexnet_shapes and its mean image, built once (launches only read them)."""
  return fault_data_dir


def _launch(args, env, log):
  """Runs a command to its end; (return code, its whole output)."""
  with open(log, 'w') as f:
    rc = subprocess.run(args, cwd=fault_utils.REPO, env=env, stdout=f,
                        stderr=subprocess.STDOUT, timeout=900).returncode
  return rc, open(log).read()


def _resumed_at(out: str) -> int | None:
  m = re.search(r'Resumed from \S+ at step (\d+)\.', out)
  return int(m.group(1)) if m else None


def _complete_steps(workdir) -> list[int]:
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _restore(workdir, step=None):
  """(state as numpy, meta) of a run's checkpoint, restored onto one device and verified."""
  config = fault_utils.tiny_config('/unused', **{'mesh.model': 1})
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  built = steps.build(config, config_lib.validate(config), mesh)
  ckpt = checkpoints.Checkpointer(str(workdir))
  try:
    state, meta = ckpt.restore(built.abstract_state(), step)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, state), meta


def _losses(workdir) -> dict:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {(r['step'], r['split']): r['loss'] for r in map(json.loads, f)}


def _assert_same_run(workdir, reference, exact: bool = True):
  """The run in `workdir` ended where the uninterrupted `reference` did: same step, input
  position, metrics rows (each point once) and parameters and optimizer state.

  exact=False for runs that moved between device counts: there the sums of the data
  parallel gradient and of the towers are added in other orders, so the numbers drift by
  float rounding (1e-7 relative at first, and where a ReLU or max-pool tie flips, more:
  1e-5 in the loss, a few % of a momentum bias entry after 24 steps). The per-step loss
  still pins the input position: another batch changes the loss by 1e-2 or more."""
  state, meta = _restore(workdir, STEPS)
  ref, ref_meta = _restore(reference, STEPS)
  assert int(state.step) == STEPS and meta['input_position'] == ref_meta['input_position']
  assert fault_utils.metrics_steps(workdir) == fault_utils.metrics_steps(reference)
  losses, ref_losses = _losses(workdir), _losses(reference)
  for key, loss in ref_losses.items():
    assert abs(losses[key] - loss) <= (1e-6 if exact else 1e-4), (key, losses[key], loss)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref), strict=True):
    if exact:
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
      assert np.max(np.abs(a - b)) <= 0.1 * np.max(np.abs(b)) + 1e-6


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir, cache):
  """The uninterrupted run: 8 devices, mesh data=4 x model=2."""
  workdir = tmp_path_factory.mktemp('reference') / 'run'
  rc, out = _launch(fault_utils.main_command(workdir, data_dir, steps=STEPS),
                    fault_utils.main_env(8, cache), workdir.parent / 'log')
  assert rc == 0, out[-3000:]
  assert _complete_steps(workdir) == [20, 22, 24]
  return workdir


# ------------------------------------------------------------------------------ 1. two runs


def test_a_second_run_on_a_live_workdir_is_refused_and_a_killed_one_resumes(tmp_path, data_dir,
                                                                           cache):
  workdir = tmp_path / 'run'
  command = fault_utils.main_command(workdir, data_dir, steps=2000, model=1)
  env = fault_utils.main_env(1, cache)
  first = fault_utils.start_main(command, env, tmp_path / 'first.log')
  try:
    fault_utils.wait_for(lambda: fault_utils.metrics_steps(workdir), 600, first,
                         'the first run to train')
    rc, out = _launch(command, env, tmp_path / 'second.log')    # the same command again
    assert rc == 4, out[-3000:]
    assert f'workdir {workdir} is in use by another run: pid {first.pid}' in out
    assert 'Traceback' not in out
    assert first.poll() is None                                # the first run is untouched
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 0
  finally:
    if first.poll() is None:
      fault_utils.kill9(first)
  rows = fault_utils.metrics_steps(workdir)
  assert len(rows) == len(set(rows)), rows                    # nobody logged beside it
  # kill -9 while holding the lock: the same command resumes at once.
  third = fault_utils.start_main(command, env, tmp_path / 'third.log')
  try:
    done = len(rows)
    fault_utils.wait_for(lambda: len(fault_utils.metrics_steps(workdir)) > done + 1, 600,
                         third, 'the third run to train')
    fault_utils.kill9(third)
    fourth = fault_utils.start_main(command, env, tmp_path / 'fourth.log')
    resumed = fault_utils.wait_for(
        lambda: _resumed_at(open(tmp_path / 'fourth.log').read()), 600, fourth,
        'the fourth run to resume')
    fault_utils.wait_for(lambda: any(s > resumed for s, _ in fault_utils.metrics_steps(workdir)),
                         600, fourth, 'the fourth run to train')   # SIGTERM handler installed
    fourth.send_signal(signal.SIGTERM)
    assert fourth.wait(timeout=300) == 0
  finally:
    for p in (third, locals().get('fourth')):
      if p is not None and p.poll() is None:
        fault_utils.kill9(p)


# ------------------------------------------------------------------------------ 6. kill -9


def test_kill_9_anywhere_even_inside_an_async_save_resumes_the_same_run(tmp_path, data_dir,
                                                                        cache, reference):
  workdir = tmp_path / 'run'
  script = tmp_path / 'kill_main.py'
  script.write_text(KILL_SCRIPT)
  env = fault_utils.main_env(8, cache)
  killing = fault_utils.main_command(workdir, data_dir, steps=STEPS, script=str(script))
  plain = fault_utils.main_command(workdir, data_dir, steps=STEPS)

  # 1. Killed while the 'state' item of step 4 is being committed.
  rc, out = _launch(killing, {**env, 'KILL_AT': 'state@4'}, tmp_path / 'a.log')
  assert rc == -signal.SIGKILL and 'SIGKILL inside the save of step 4' in out, out[-3000:]
  assert _complete_steps(workdir) == [2]
  assert any(n.startswith('4.orbax-checkpoint-tmp') for n in os.listdir(workdir / 'checkpoints'))

  # 2. The same command resumes from step 2, never from the half-written 4; it is then
  #    killed with step 8 fully written but not yet renamed into place.
  rc, out = _launch(killing, {**env, 'KILL_AT': 'step@8'}, tmp_path / 'b.log')
  assert rc == -signal.SIGKILL and _resumed_at(out) == 2, out[-3000:]
  assert _complete_steps(workdir) == [2, 4, 6]
  names = os.listdir(workdir / 'checkpoints')
  assert not any(n.startswith('4.orbax') for n in names)        # removed on the way
  assert any(n.startswith('8.orbax-checkpoint-tmp') for n in names)

  # 3. Resumes from 6; a real kill -9 from outside, in the middle of training.
  proc = fault_utils.start_main(plain, env, tmp_path / 'c.log')
  try:
    fault_utils.wait_for(lambda: _resumed_at(open(tmp_path / 'c.log').read()) is not None,
                         600, proc, 'the resume')
    fault_utils.wait_for(lambda: any(s >= 9 for s, _ in fault_utils.metrics_steps(workdir)),
                         600, proc, 'training past step 9')
    fault_utils.kill9(proc)
  finally:
    if proc.poll() is None:
      fault_utils.kill9(proc)
  assert _resumed_at(open(tmp_path / 'c.log').read()) == 6
  complete = _complete_steps(workdir)

  # 4. To the end: the same parameters, optimizer state, step and metrics rows as the
  #    run that was never interrupted.
  rc, out = _launch(plain, env, tmp_path / 'd.log')
  assert rc == 0, out[-3000:]
  assert _resumed_at(out) == complete[-1]
  assert ' skipped: ' not in out
  _assert_same_run(workdir, reference)


# ------------------------------------------------------------------------------ 5. machine shape


def _train_until_sigterm(command, env, log, workdir, after: int = 0):
  """Runs the command (which resumes from step `after`), SIGTERMs it two steps later;
  -> (the step it stopped at, its output)."""
  proc = fault_utils.start_main(command, env, log)
  try:
    def trained_two_more():
      # Rows past `after` are this launch's once it resumed (it drops older runs' first).
      resumed = after == 0 or _resumed_at(open(log).read()) is not None
      return resumed and any(s >= after + 2 for s, _ in fault_utils.metrics_steps(workdir))
    fault_utils.wait_for(trained_two_more, 600, proc, 'two steps of training')
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, open(log).read()[-3000:]
  finally:
    if proc.poll() is None:
      fault_utils.kill9(proc)
  out = open(log).read()
  assert 'Stopped at step' in out, out[-3000:]
  assert (_resumed_at(out) or 0) == after, out[-3000:]
  return int(re.search(r'Stopped at step (\d+)', out).group(1)), out


def test_resume_on_another_machine_shape_continues_the_same_run(tmp_path, data_dir, cache,
                                                                reference):
  # One run through every move: 1 -> 8 devices, 8 -> 1 and 1 -> 2 (four launches where two
  # runs, 8-1-2 and 1-8, took five).
  devices = (1, 8, 1, 2)
  workdir = tmp_path / 'run'
  command = fault_utils.main_command(workdir, data_dir, steps=STEPS)   # mesh.model=2 always
  stopped = 0
  for i, n in enumerate(devices[:-1]):
    stopped_at, _ = _train_until_sigterm(command, fault_utils.main_env(n, cache),
                                         tmp_path / f'{i}.log', workdir, after=stopped)
    assert stopped_at > stopped and stopped_at in _complete_steps(workdir)
    stopped = stopped_at
  rc, out = _launch(command, fault_utils.main_env(devices[-1], cache), tmp_path / 'last.log')
  assert rc == 0, out[-3000:]
  assert _resumed_at(out) == stopped and ' skipped: ' not in out
  # Same step, input position, parameters and optimizer state as the run that stayed on
  # 8 devices (up to float rounding: the restores themselves were bitwise, or the log would
  # say 'skipped', as each checkpoint's fingerprints were checked).
  _assert_same_run(workdir, reference, exact=False)


def test_init_from_a_run_on_another_machine_shape(tmp_path, data_dir, cache, reference):
  workdir = tmp_path / 'finetune'
  # lr=0: the paper's update (decay scaled by lr too) leaves the parameters as loaded.
  rc, out = _launch(fault_utils.main_command(workdir, data_dir, f'--config.init_from={reference}',
                                             '--config.optimizer.learning_rate=0', steps=2),
                    fault_utils.main_env(2, cache), tmp_path / 'log')
  assert rc == 0, out[-3000:]
  assert f'Initialised parameters from {reference} (step 24)' in out
  state, _ = _restore(workdir, 2)
  ref, _ = _restore(reference, STEPS)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ 2. damaged


def test_a_damaged_newest_checkpoint_is_skipped_and_none_restorable_is_a_clear_error(
    tmp_path, data_dir, cache, reference):
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  fault_utils.damage_step(str(workdir / 'checkpoints' / '24'))
  env = fault_utils.main_env(8, cache)
  command = fault_utils.main_command(workdir, data_dir, steps=STEPS)
  rc, out = _launch(command, env, tmp_path / 'a.log')
  assert rc == 0, out[-3000:]
  assert f'checkpoint step 24 in {workdir}/checkpoints skipped: file state/' in out
  assert 'resumed from step 22' in out and _resumed_at(out) == 22
  assert os.listdir(workdir / 'damaged_checkpoints') == ['24']
  _assert_same_run(workdir, reference)                  # steps 23-24 trained again

  for s in _complete_steps(workdir):
    fault_utils.damage_step(str(workdir / 'checkpoints' / str(s)))
  rc, out = _launch(command, env, tmp_path / 'b.log')
  assert rc == 5, out[-3000:]
  assert f'error: no checkpoint in {workdir}/checkpoints restores:' in out
  assert 'Traceback' not in out


# ------------------------------------------------------------------------------ 3. failed save


def test_a_failed_save_stops_the_run_with_path_and_cause(tmp_path, data_dir, cache):
  workdir = tmp_path / 'run'
  env = fault_utils.main_env(1, cache)
  command = fault_utils.main_command(workdir, data_dir, steps=STEPS, model=1)
  stopped, _ = _train_until_sigterm(command, env, tmp_path / 'a.log', workdir)

  def small_files():       # writes beyond 48 KB per file fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, resource.RLIM_INFINITY))
  # Output through a pipe: the limit would cut a log file the child writes itself.
  proc = subprocess.run(command, cwd=fault_utils.REPO, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, preexec_fn=small_files,
                        timeout=900)
  out = proc.stdout
  (tmp_path / 'b.log').write_text(out)
  assert proc.returncode == 5, out[-3000:]
  # Which save first exceeds the file-size limit depends on how Orbax splits the arrays
  # into files; whichever it is, it is named, and the newest complete step before it
  # is what stays on disk and restores.
  m = re.search(rf'error: checkpoint step (\d+) could not be written to '
                rf'{workdir}/checkpoints/(\d+): File too large', out)
  assert m and m.group(1) == m.group(2), out[-3000:]
  failed = int(m.group(1))
  assert failed > stopped
  newest = int(re.search(r'The newest complete one is step (\d+) in ' + re.escape(
      f'{workdir}/checkpoints'), out).group(1))
  assert stopped <= newest < failed
  assert f'checkpoint step {failed} written' not in out
  assert _complete_steps(workdir)[-1] == newest
  state, _ = _restore(workdir)                          # what was there is intact
  assert int(state.step) == newest


# ------------------------------------------------------------------------------ 4. skipped images


def test_unreadable_images_are_in_the_log_and_metrics_and_too_many_stop_the_run(tmp_path,
                                                                               cache):
  bad = {'train/class0/truncated.JPEG': fault_utils.truncated_jpeg(PHOTOS[0]),
         'train/class1/garbage.JPEG': fault_utils.garbage_jpeg(),
         'validation/class0/empty.JPEG': b''}
  folder = fault_utils.messy_folder(tmp_path / 'photos', PHOTOS[:12], bad)
  env = fault_utils.main_env(1, cache)
  workdir = tmp_path / 'run'
  flags = ['--config.dataset.name=folder', f'--config.dataset.folder={folder}',
           '--config.model.num_classes=2', '--config.batch_size=8',
           '--config.eval_batch_size=8']
  rc, out = _launch(fault_utils.main_command(workdir, tmp_path / 'tfds', *flags,
                                             '--config.input.max_skipped_fraction=0.5',
                                             steps=4, model=1), env, tmp_path / 'a.log')
  assert rc == 0, out[-3000:]
  assert "epoch 0 of split 'train': 2 of 11 images could not be decoded" in out
  assert 'truncated.JPEG' in out and 'garbage.JPEG' in out and 'empty.JPEG' in out
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  train_skips = sum(r['skipped_images'] for r in rows if r['split'] == 'train')
  # Counted as the input stream reads them: steps 1-4 (32 positions, ~3 epochs of 11) and
  # the batches prefetched beyond.
  assert 4 <= train_skips <= 10
  assert [r['skipped_images'] for r in rows if r['split'] == 'eval'] == [1]

  rc, out = _launch(fault_utils.main_command(tmp_path / 'strict', tmp_path / 'tfds', *flags,
                                             steps=4, model=1), env, tmp_path / 'b.log')
  assert rc == 2, out[-3000:]
  assert 'could not be decoded, more than input.max_skipped_fraction=0.01 allows' in out
  assert 'Traceback' not in out


# ------------------------------------------------------------------------------ 7. data dirs


def test_a_read_only_data_dir_trains_and_a_gs_data_dir_is_a_message(tmp_path, data_dir, cache):
  ro = tmp_path / 'tfds_ro'
  shutil.copytree(data_dir, ro, ignore=shutil.ignore_patterns(statistics.STATS_DIR))
  env = fault_utils.main_env(1, cache, XDG_CACHE_HOME=str(tmp_path / 'cache'))
  with fault_utils.read_only_dir(ro):
    rc, out = _launch(fault_utils.main_command(tmp_path / 'run', ro, steps=2, model=1), env,
                      tmp_path / 'a.log')
  assert rc == 0, out[-3000:]
  assert f'cannot write the statistics cache in data_dir ({ro}' in out
  assert os.listdir(tmp_path / 'cache' / 'alexnet_jax' / statistics.STATS_DIR)

  rc, out = _launch(fault_utils.main_command(tmp_path / 'gs', 'gs://alexnet-jax-no-bucket-0/tfds',
                                             steps=2, model=1), env, tmp_path / 'b.log')
  assert rc == 2, out[-3000:]
  assert 'error: data_dir gs://alexnet-jax-no-bucket-0/tfds cannot be used' in out
  assert 'Traceback' not in out


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-v']))
