"""A diverging run stops cleanly: non-zero exit, a message that says how to resume, and
nothing non-finite in checkpoints/ or best/."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.run import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.conv_widths=(8,16,24,24,16)', '--config.model.fc_widths=(32,32)',
        '--config.dataset.shapes_train_size=256', '--config.dataset.shapes_validation_size=64',
        '--config.input.shuffle_buffer=256', '--config.batch_size=32',
        '--config.eval_batch_size=32', '--config.num_train_steps=8', '--config.mesh.model=1']


@pytest.mark.slow
def test_divergence_guard_stops_the_run_and_saves_nothing_non_finite(tmp_path, fault_data_dir):
  workdir = tmp_path / 'run'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/default.py',
       f'--workdir={workdir}', f'--config.dataset.data_dir={fault_data_dir}', *TINY,
       '--config.optimizer.learning_rate=1e10', '--config.checkpoint_every_steps=1',
       '--config.log_every_steps=4', '--config.eval_every_steps=2'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 3, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  assert 'training diverged at step' in out.stderr
  assert '--config.optimizer.learning_rate=1e+09' in out.stderr
  ckpt = checkpoints.Checkpointer(str(workdir))
  saved = ckpt.latest.all_steps()
  ckpt.close()
  bad = int(out.stderr.split('diverged at step ')[1].split(':')[0])
  assert all(s < bad for s in saved), (saved, bad)
  abstract = None
  for which in ('latest', 'best'):
    root = workdir / ('checkpoints' if which == 'latest' else 'best')
    if not root.exists() or not os.listdir(root):
      continue
    from alexnet_jax.common import config_lib
    from alexnet_jax.model import sharding, steps
    from configs import default
    config = default.get_config()
    config.model.conv_widths, config.model.fc_widths = (8, 16, 24, 24, 16), (32, 32)
    config.mesh.model = 1
    mesh = sharding.make_mesh(config.mesh)
    built = steps.build(config, config_lib.validate(config), mesh)
    abstract = built.abstract_state().params
    params, _ = checkpoints.load_params(str(workdir), abstract, which=which)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params)), which
  assert abstract is not None, 'expected at least one checkpoint before the divergence'
