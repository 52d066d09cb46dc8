"""Training runs for the tests, each batch of them in a fresh Python process.

A run on the 8 simulated devices inside the pytest process would put the whole test
session at the mercy of XLA:CPU's collectives: a stalled all-reduce aborts the process
(SIGABRT), and every later test's result goes with it (tests/test_collectives.py). So the
tests that train call `train(...)`, which runs `train.train_and_evaluate` for each run
spec, in order, in one subprocess (the imports, ~10 s, are paid once per batch), and
returns what the tests assert on: `TrainRun`.

A run spec (JSON) is a dict:
  workdir     the run's workdir
  config      dotted field -> value over the base (tuples may come as lists)
  base        'tiny' (data_utils.tiny_config, then `data_dir` is required) or 'default'
              (configs/default.py)
  data_dir    the tiny base's TFDS data_dir
  max_steps   train_and_evaluate's max_steps (optional)
  sigterm     True: SIGTERM to the process once metrics.jsonl exists (optional)
  evaluate    keyword arguments of evaluation.evaluate_checkpoint, run after it (optional)

`python tests/train_runs.py SPECS.json OUT_DIR` is the subprocess: OUT_DIR/results.json
and one OUT_DIR/<i>.npz of the state's and the parameters' leaves per run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


@dataclasses.dataclass
class TrainRun:
  """What `train.train_and_evaluate` returned (the state's arrays as NumPy)."""

  workdir: str
  step: int
  stopped: str | None
  eval: dict
  train_compilations: int
  param_specs: dict          # 'conv2/kernel' -> PartitionSpec of that parameter
  mesh_shape: dict           # the parameters' mesh, {'data': 4, 'model': 2}
  evaluation: dict | None    # evaluate_checkpoint's result, when the spec asked for it
  arrays: str                # the .npz of the leaves

  def _leaves(self, kind: str) -> list[np.ndarray]:
    with np.load(self.arrays) as f:
      return [f[f'{kind}_{i}'] for i in range(sum(k.startswith(f'{kind}_') for k in f))]

  @property
  def state_leaves(self) -> list[np.ndarray]:
    """jax.tree.leaves(result.state), in that order."""
    return self._leaves('state')

  @property
  def params_leaves(self) -> list[np.ndarray]:
    """jax.tree.leaves(result.state.params), in that order."""
    return self._leaves('params')


def train(runs: list[dict], out_dir, *, timeout: float = 900) -> list[TrainRun]:
  """Runs `runs` in order in one subprocess (the tests' environment: 8 devices, the
  session's compilation cache); a failure, a crash or a timeout fails the test with the
  subprocess's exit status and the tail of its stderr."""
  import pytest
  from jax.sharding import PartitionSpec
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  spec_path = os.path.join(out_dir, 'runs.json')
  with open(spec_path, 'w') as f:
    json.dump([{**r, 'workdir': os.fspath(r['workdir'])} for r in runs], f)
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      [REPO, TESTS, *filter(None, [os.environ.get('PYTHONPATH')])])}
  command = [sys.executable, os.path.abspath(__file__), spec_path, out_dir]
  try:
    p = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode(errors='replace') if isinstance(e.stderr, bytes) else e.stderr
    pytest.fail(f'training subprocess gave no result in {timeout:.0f} s; stderr ends:\n'
                f'{(err or "")[-5000:]}')
  if p.returncode != 0:
    meaning = ' (SIGABRT: e.g. an XLA abort)' if p.returncode in (-6, 134) else ''
    pytest.fail(f'training subprocess exited with status {p.returncode}{meaning}; stderr '
                f'ends:\n{p.stderr[-5000:]}')
  with open(os.path.join(out_dir, 'results.json')) as f:
    results = json.load(f)

  def spec(entries):
    return PartitionSpec(*(tuple(e) if isinstance(e, list) else e for e in entries))

  return [TrainRun(**{**r, 'param_specs': {k: spec(v) for k, v in r['param_specs'].items()}})
          for r in results]


def _config(run: dict):
  import data_utils

  from alexnet_jax.common.fields import get_field, set_fields
  if run.get('base', 'tiny') == 'tiny':
    config = data_utils.tiny_config(run['data_dir'])
  else:
    from configs import default
    config = default.get_config()
  for key, value in run.get('config', {}).items():
    if isinstance(value, list) and isinstance(get_field(config, key), tuple):
      value = tuple(value)
    set_fields(config, {key: value})
  return config


def _sigterm_once_training(workdir: str) -> None:
  """SIGTERM to this process as soon as the run has written its first metrics."""
  import signal
  import threading
  import time
  metrics = os.path.join(workdir, 'metrics.jsonl')

  def send_when_training():
    while not os.path.exists(metrics):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_when_training, daemon=True).start()


def main(spec_path: str, out_dir: str) -> None:
  import jax

  from alexnet_jax.run import evaluate as evaluation
  from alexnet_jax.run import train
  with open(spec_path) as f:
    runs = json.load(f)
  results = []
  for i, run in enumerate(runs):
    if run.get('sigterm'):
      _sigterm_once_training(run['workdir'])
    result = train.train_and_evaluate(_config(run), run['workdir'],
                                      max_steps=run.get('max_steps'))
    arrays = os.path.join(out_dir, f'{i}.npz')
    leaves = {f'state_{k}': np.asarray(x) for k, x in enumerate(jax.tree.leaves(result.state))}
    leaves.update({f'params_{k}': np.asarray(x)
                   for k, x in enumerate(jax.tree.leaves(result.state.params))})
    np.savez(arrays, **leaves)
    specs, mesh_shape = {}, {}
    for path, x in jax.tree_util.tree_leaves_with_path(result.state.params):
      name = '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
      specs[name] = [list(e) if isinstance(e, tuple) else e for e in x.sharding.spec]
      mesh_shape = dict(x.sharding.mesh.shape)
    evaluated = (evaluation.evaluate_checkpoint(run['workdir'], **run['evaluate'])
                 if run.get('evaluate') else None)
    results.append(dict(workdir=run['workdir'], step=int(result.step),
                        stopped=result.stopped, eval=result.eval,
                        train_compilations=int(result.train_compilations),
                        param_specs=specs, mesh_shape=mesh_shape, evaluation=evaluated,
                        arrays=arrays))
  with open(os.path.join(out_dir, 'results.json'), 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
