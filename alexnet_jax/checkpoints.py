"""Orbax checkpoints of a run: the last K states, and the best parameters by val top-1.

Layout under the workdir:
  checkpoints/<step>/{state,meta}   full train state + JSON (schedule, input position)
  best/<step>/{params,meta}          parameters of the best evaluation so far
  config.json                        the run's config (evaluate.py rebuilds the model from it)
Orbax writes each step into a temporary directory and renames it when complete,
so a crash or SIGTERM in the middle of a save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp
from etils import epath


def absolute(path: str) -> str:
  """Local paths made absolute (Orbax refuses relative ones); gs:// and the like kept."""
  return path if '://' in str(path) else os.path.abspath(path)


class Checkpointer:
  """The two Orbax managers of a run (async saves, kept off the step's critical path)."""

  def __init__(self, workdir: str, keep: int = 3):
    root = epath.Path(workdir)
    # Both managers save the same step at an eval step, concurrently. Multi-process,
    # their cross-process barriers are named after the step, so each manager needs its
    # own prefix or the second save fails ('Barrier _async_write_complete.N is already
    # ongoing').
    self.latest = ocp.CheckpointManager(
        root / 'checkpoints', item_names=('state', 'meta'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='latest')))
    self.best = ocp.CheckpointManager(
        root / 'best', item_names=('params', 'meta'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='best')))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=True)

  def save_best(self, step: int, params: Any, meta: dict) -> None:
    self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """The state (into the shardings of `abstract_state`) and meta of `step` (default latest)."""
    step = self.latest.latest_step() if step is None else step
    out = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def reached_preemption(self, step: int) -> bool:
    return self.latest.reached_preemption(step)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def load_params(path: str, abstract_params: Any, *, which: str = 'latest') -> tuple[Any, int]:
  """Parameters from a run's workdir (or its checkpoints/ or best/ folder).

  `which` is 'latest' (checkpoints/) or 'best' (best/); a path that already
  names one of those folders is used as it is. Returns (params, step).
  """
  root = epath.Path(absolute(path))
  if root.name not in ('checkpoints', 'best'):
    root = root / ('best' if which == 'best' else 'checkpoints')
  if not root.exists():
    raise FileNotFoundError(f'no checkpoints under {root}; pass a workdir of a run '
                            '(with checkpoints/ or best/ inside)')
  is_best = root.name == 'best'
  item = 'params' if is_best else 'state'
  with ocp.CheckpointManager(root, item_names=(item, 'meta'),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as mgr:
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f'{root} holds no finished checkpoint')
    # Only the parameters (of the saved train state, or of best/), restored
    # straight into the shardings of `abstract_params`.
    target = abstract_params if is_best else {'params': abstract_params}
    restore = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=not is_best)
    restored = mgr.restore(step, args=ocp.args.Composite(**{item: restore}))[item]
  return (restored if is_best else restored['params']), step


def write_config(workdir: str, config: Any) -> None:
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / 'config.json').write_text(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict:
  return json.loads((epath.Path(workdir) / 'config.json').read_text())
