"""Orbax checkpoints of a run: the last K states, and the best parameters by val top-1.

Layout under the workdir:
  checkpoints/<step>/{state,meta}   full train state + JSON (schedule, input position)
  best/<step>/{params,meta}          parameters of the best evaluation so far
  damaged_checkpoints/<step>/        steps that failed to restore, set aside on resume
  (the rest of a workdir, and its file names: run/workdir.py)

What is promised, and how:
- A save is atomic: Orbax writes each step into a temporary directory and renames it
  when complete, so a crash, kill -9 or SIGTERM in the middle of one leaves the previous
  checkpoints intact and the half-written step is never read (temporary directories
  left by a killed run are removed when the next run opens the folder).
- Saves are asynchronous; a save that fails in the background (disk full, permission,
  object store error) surfaces at the next save or at the end of the run as
  `CheckpointSaveError`, which names the path, the cause and the newest complete step.
  "checkpoint step N written" is logged only once step N is complete on disk.
- What is read is verified (`integrity`): each save fingerprints every array into the
  step's JSON meta, and once a step is complete the size of each of its files goes into
  <step>/alexnet_jax_files.json; a restore checks the files before Orbax reads them and
  the arrays after. A step that does not restore cleanly is skipped with a warning
  saying why, and the newest one that does is used; on resume the skipped steps are moved
  to damaged_checkpoints/ (kept, not deleted) so that training can write those steps
  again. If none restores, `CheckpointError` names the folder and each step's reason, and
  nothing is moved.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from alexnet_jax.common import exits
from alexnet_jax.run import integrity


class CheckpointError(RuntimeError):
  """No checkpoint of a folder could be restored (the message says why, per step)."""
  exit_status = exits.CHECKPOINT


class CheckpointSaveError(CheckpointError):
  """A checkpoint could not be written (the message names the path and the cause)."""


def absolute(path: str) -> str:
  """Local paths made absolute (Orbax refuses relative ones); gs:// and the like kept."""
  return path if '://' in str(path) else os.path.abspath(path)


def _why(e: BaseException) -> str:
  """One line saying why a restore failed."""
  if isinstance(e, integrity.Damaged):
    return str(e)
  text = ' '.join(str(e).split()) or type(e).__name__
  if isinstance(e, json.JSONDecodeError):
    return f'a metadata file is not valid JSON, it is truncated or damaged ({text})'
  if isinstance(e, FileNotFoundError):
    return f'a file is missing ({text[:300]})'
  if 'tensorstore' in text.lower() or 'ocdbt' in text.lower() or 'zarr' in text.lower():
    return f'array files damaged or missing ({text[:300]})'
  return f'{type(e).__name__}: {text[:300]}'


def _cause(e: BaseException) -> str:
  """The cause of a failed write: the OS error when one can be found, then the message."""
  text = ' '.join(str(e).split()) or type(e).__name__
  if isinstance(e, OSError) and e.strerror:
    return f'{e.strerror} ({e.filename or text[:300]})'
  m = re.search(r"os_error_code='?(\d+)", text)
  if m:
    return f'{os.strerror(int(m.group(1)))} ({text[:400]})'
  return f'{type(e).__name__}: {text[:400]}'


def _all_agree(ok: bool) -> bool:
  """True when every process says ok (multi-process runs decide together)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _sync(name: str) -> None:
  if jax.process_count() > 1:
      multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------ checkpointer


class Checkpointer:
  """The two Orbax managers of a run (async saves, kept off the step's critical path)."""

  def __init__(self, workdir: str, keep: int = 3):
    self.root = epath.Path(workdir)
    self._pending: dict[str, int] = {}      # manager name -> step saving in the background
    self._failed: CheckpointSaveError | None = None
    # Both managers save the same step at an eval step, concurrently. Multi-process,
    # their cross-process barriers are named after the step, so each manager needs its
    # own prefix or the second save fails ('Barrier _async_write_complete.N is already
    # ongoing').
    self.latest = ocp.CheckpointManager(
        self.root / 'checkpoints', item_names=('state', 'meta'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='latest')))
    self.best = ocp.CheckpointManager(
        self.root / 'best', item_names=('params', 'meta'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='best')))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  # ---------------------------------------------------------------- saving

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing `state` as checkpoints/<step> (raises CheckpointSaveError if this
    save, or the previous one still finishing in the background, fails)."""
    self._finish('checkpoints')
    meta = dict(meta, fingerprints=integrity.fingerprints(state),
                fingerprint_version=integrity.FINGERPRINT_VERSION)
    self._start('checkpoints', step, ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def save_best(self, step: int, params: Any, meta: dict) -> None:
    self._finish('best')
    if step in self.best.all_steps():     # written by a run that did not get further
      self.best.delete(step)
    meta = dict(meta, fingerprints=integrity.fingerprints(params),
                fingerprint_version=integrity.FINGERPRINT_VERSION)
    self._start('best', step, ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))

  def forget_best_after(self, step: int) -> None:
    """Deletes best/ steps newer than `step`, the step a run resumes from: the run that
    wrote them did not get that far (killed before its checkpoint of that step, or the step
    was damaged), and the resumed run redoes those evaluations (call on every process)."""
    for s in self.best.all_steps():
      if s > step:
        logging.info('best/%d is newer than the step resumed from (%d): removed; the '
                     'resumed run evaluates again.', s, step)
        self.best.delete(s)

  def _manager(self, name: str) -> ocp.CheckpointManager:
    return self.latest if name == 'checkpoints' else self.best

  def _start(self, name: str, step: int, args) -> None:
    try:
      self._manager(name).save(step, args=args, force=True)
    except Exception as e:  # noqa: BLE001 - every cause becomes one clear error
      raise self._save_error(name, step, e) from e
    self._pending[name] = step

  def _finish(self, name: str) -> None:
    """Waits for the manager's background save; logs it written, or raises why not."""
    if self._failed is not None:
      raise self._failed
    step = self._pending.pop(name, None)
    try:
      self._manager(name).wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_error(name, step, e) from e
    if step is not None:
      if jax.process_index() == 0:
        integrity.write_manifest(self.root / name / str(step))
      logging.info('checkpoint step %d written: %s', step, self.root / name / str(step))

  def _save_error(self, name: str, step: int | None, e: BaseException) -> CheckpointSaveError:
    folder = self.root / name
    try:
      good = [s for s in self._manager(name).all_steps() if s != step]
    except Exception:  # noqa: BLE001
      good = []
    what = 'best parameters' if name == 'best' else 'checkpoint'
    target = folder / str(step) if step is not None else folder
    message = (f'{what} step {step} could not be written to {target}: {_cause(e)}. '
               f'Nothing was saved for step {step}. ')
    if good:
      message += (f'The newest complete one is step {max(good)} in {folder}; fix the cause '
                  'and run the same command to resume from it.')
    else:
      message += f'{folder} holds no complete checkpoint.'
    self._failed = CheckpointSaveError(message)
    logging.error('%s', message)
    return self._failed

  def wait(self) -> None:
    """Waits for the saves in flight; raises CheckpointSaveError if one failed (once)."""
    if self._failed is not None:
      return                    # already raised to the caller
    for name in ('checkpoints', 'best'):
      self._finish(name)

  def last_good_step(self) -> int | None:
    """The newest complete checkpoint after waiting for the saves in flight; a failed
    save is logged, not raised (for error messages that point at what is left)."""
    try:
      self.wait()
    except CheckpointSaveError:
      pass
    try:
      return self.latest.latest_step()
    except Exception:  # noqa: BLE001
      return None

  def reached_preemption(self, step: int) -> bool:
    return self.latest.reached_preemption(step)

  def close(self) -> None:
    for manager in (self.latest, self.best):
      try:
        manager.close()
      except Exception as e:  # noqa: BLE001 - the failure was raised by wait()/save()
        if self._failed is None:
          raise
        logging.info('closing %s after a failed save: %s', manager.directory, _why(e))

  # ---------------------------------------------------------------- restoring

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """The state (into the shardings of `abstract_state`) and meta of `step`, verified.

    Without `step`: the newest step that restores cleanly. Steps skipped on the way are
    logged (step, why, step used) and moved to damaged_checkpoints/. Raises
    CheckpointError when none restores (then nothing is moved).
    """
    folder = self.root / 'checkpoints'
    steps = [step] if step is not None else sorted(self.latest.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f'no checkpoint in {folder}')
    def restore_one(s):
      out = self.latest.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return out.state, out.meta

    s, (state, meta), skipped = _newest_restorable(folder, steps, restore_one)
    if s is not None:
      if skipped:
        logging.warning('resumed from step %d of %s; newer step(s) %s could not be restored '
                        '(see above) and are moved to %s.', s, folder,
                        ', '.join(str(k) for k, _ in skipped), self.root / 'damaged_checkpoints')
        self._set_aside([k for k, _ in skipped])
      return state, meta
    raise CheckpointError(
        f'no checkpoint in {folder} restores:\n' +
        ''.join(f'  step {k}: {why}\n' for k, why in skipped) +
        'Nothing was changed. If the config changed since they were written, run with the '
        f'original one; to start over, move {folder} away.')

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged steps out of checkpoints/ (process 0), so they can be written again."""
    if jax.process_index() == 0:
      dest = self.root / 'damaged_checkpoints'
      dest.mkdir(parents=True, exist_ok=True)
      for s in steps:
        target = dest / str(s)
        if target.exists():
          target = dest / f'{s}-{int(time.time())}'
        (self.root / 'checkpoints' / str(s)).rename(target)
    _sync('alexnet_jax_set_aside_damaged_checkpoints')
    self.latest.reload()


def _newest_restorable(folder: epath.Path, steps: list[int], restore_one
                       ) -> tuple[int | None, tuple[Any, Any], list[tuple[int, str]]]:
  """Tries `steps` (newest first) with restore_one(step) -> (value, meta), checking the
  files and the fingerprints; a step counts only if every process restored it.

  Returns (step, (value, meta), skipped) for the first that restores, or
  (None, (None, None), skipped) when none does; each skipped step is logged with why.
  """
  skipped: list[tuple[int, str]] = []
  for s in steps:
    try:
      integrity.check_files(folder / str(s))
      value, meta = restore_one(s)
      integrity.verify(value, meta, f'{folder}/{s}')
      why = None
    except Exception as e:  # noqa: BLE001 - any failure: try the next older step
      why = _why(e)
    if not _all_agree(why is None):
      why = why or 'another process could not restore it (see its log)'
    if why is not None:
      logging.warning('checkpoint step %d in %s skipped: %s', s, folder, why)
      skipped.append((s, why))
      continue
    return s, (value, meta), skipped
  return None, (None, None), skipped


def load_params(path: str, abstract_params: Any, *, which: str = 'latest') -> tuple[Any, int]:
  """Parameters from a run's workdir (or its checkpoints/ or best/ folder), verified.

  `which` is 'latest' (checkpoints/) or 'best' (best/); a path that already
  names one of those folders is used as it is. Returns (params, step): the newest step
  that restores cleanly (a skipped one is logged with why). Raises CheckpointError when
  none does.
  """
  root = epath.Path(absolute(path))
  if root.name not in ('checkpoints', 'best'):
    root = root / ('best' if which == 'best' else 'checkpoints')
  if not root.exists():
    raise FileNotFoundError(f'no checkpoints under {root}; pass a workdir of a run '
                            '(with checkpoints/ or best/ inside)')
  is_best = root.name == 'best'
  item = 'params' if is_best else 'state'
  # Only the parameters (of the saved train state, or of best/), restored straight into
  # the shardings of `abstract_params`.
  target = abstract_params if is_best else {'params': abstract_params}
  restore = ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=not is_best)
  with ocp.CheckpointManager(root, item_names=(item, 'meta'),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as mgr:
    steps = sorted(mgr.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'{root} holds no finished checkpoint')
    def restore_one(step):
      out = mgr.restore(step, args=ocp.args.Composite(
          **{item: restore, 'meta': ocp.args.JsonRestore()}))
      return out[item], out['meta']

    step, (restored, _), skipped = _newest_restorable(root, steps, restore_one)
    if step is not None:
      if skipped:
        logging.warning('using step %d of %s instead.', step, root)
      return (restored if is_best else restored['params']), step
  raise CheckpointError(f'no checkpoint in {root} restores:\n' +
                        ''.join(f'  step {k}: {why}\n' for k, why in skipped).rstrip())

