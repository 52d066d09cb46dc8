"""notebooks/colab_setup.py and notebooks/constraints.txt: what the notebook installs.

The fast tests check the constraints file is the lock less the runtime's own packages
(exactly make_constraints.py's output), and the set-up's plan per runtime: the JAX build
(an extra that jax's metadata declares) and TensorFlow's CPU build plus TensorBoard only
where the runtime has no TensorFlow. The slow test runs the script for real, as the
notebook's first cell does, in a fresh virtualenv layered on this environment
(--system-site-packages, so nothing big is downloaded) against a copy of this checkout:
first with no package index (one error line, exit 1), then with it.
"""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from data_utils import REPO

NOTEBOOKS = os.path.join(REPO, 'notebooks')


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(NOTEBOOKS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


colab_setup = _load('colab_setup')
make_constraints = _load('make_constraints')


def _lock_pins():
  return colab_setup.pins(os.path.join(REPO, 'requirements.txt'))


def test_committed_constraints_are_the_scripts_output():
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    want = make_constraints.constraints(f.read())
  with open(colab_setup.CONSTRAINTS) as f:
    assert f.read() == want, 'run: python notebooks/make_constraints.py'


def test_constraints_pin_the_lock_less_the_runtimes_kernel():
  lock, constraints = _lock_pins(), colab_setup.pins()
  assert {n: v for n, v in lock.items() if n in constraints} == constraints
  dropped = set(lock) - set(constraints)
  assert dropped == set(make_constraints.KEEP_THE_RUNTIMES) & set(lock)
  assert {'ipykernel', 'ipython', 'tornado', 'setuptools', 'pytest'} <= dropped
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
               'tensorboard', 'importlib-resources', 'tensorflow-datasets', 'numpy'):
    assert constraints[name] == lock[name], name
  assert not {'torch', 'torchvision'} & set(constraints)


@pytest.mark.parametrize('accelerator,build', [('gpu', 'jax[cuda12]=='), ('tpu', 'jax[tpu]=='),
                                               ('cpu', 'jax==')])
def test_the_jax_build_per_runtime_is_the_locks_version(accelerator, build):
  reqs, _ = colab_setup.plan(accelerator, has_tensorflow=True, has_tensorboard=True)
  (jax_req,) = [r for r in reqs if r.startswith('jax')]
  assert jax_req == build + _lock_pins()['jax']
  extra = colab_setup.JAX_EXTRA[accelerator]
  if extra:     # the installed jax (the lock's) declares the extra
    assert extra in importlib.metadata.metadata('jax').get_all('Provides-Extra')
  assert 'importlib_resources' in reqs and 'tensorflow-datasets' in reqs


def test_tensorflow_cpu_and_tensorboard_only_where_the_runtime_has_no_tensorflow():
  without, notes = colab_setup.plan('tpu', has_tensorflow=False, has_tensorboard=False)
  assert {'tensorflow-cpu', 'tensorboard'} <= set(without)
  assert 'tensorflow' not in without                # never a build that could take the TPU
  assert 'no TensorFlow in this runtime' in notes[0]
  kept, notes = colab_setup.plan('gpu', has_tensorflow=True, has_tensorboard=False)
  assert not {'tensorflow', 'tensorflow-cpu'} & set(kept) and 'tensorboard' in kept
  assert "keeping the runtime's TensorFlow" in notes[0]
  kept, _ = colab_setup.plan('cpu', has_tensorflow=True, has_tensorboard=True)
  assert 'tensorboard' not in kept


def test_accelerator_detection_without_jax(monkeypatch):
  for var in ('COLAB_TPU_ADDR', 'TPU_ACCELERATOR_TYPE', 'TPU_NAME'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(colab_setup.glob, 'glob', lambda pattern: [])
  monkeypatch.setattr(colab_setup.shutil, 'which', lambda name: None)
  assert colab_setup.detect_accelerator() == 'cpu'
  monkeypatch.setattr(colab_setup.shutil, 'which', lambda name: '/usr/bin/nvidia-smi')
  assert colab_setup.detect_accelerator() == 'gpu'
  monkeypatch.setattr(colab_setup.shutil, 'which', lambda name: None)
  monkeypatch.setattr(colab_setup.glob, 'glob',
                      lambda pattern: ['/dev/accel0'] if 'accel' in pattern else [])
  assert colab_setup.detect_accelerator() == 'tpu'
  monkeypatch.setattr(colab_setup.glob, 'glob', lambda pattern: [])
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-1')
  assert colab_setup.detect_accelerator() == 'tpu'


def _copy_checkout(dst):
  """The checkout's files as git sees them (tracked and new, not ignored): a clone that
  includes uncommitted work."""
  files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  for name in files:
    if os.path.isfile(os.path.join(REPO, name)):
      os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
      shutil.copy2(os.path.join(REPO, name), os.path.join(dst, name))


@pytest.mark.slow
def test_setup_script_installs_the_project_in_a_fresh_venv(tmp_path):
  clone, venv = tmp_path / 'checkout', tmp_path / 'venv'
  _copy_checkout(clone)
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)],
                 check=True)
  python = str(venv / 'bin' / 'python')
  # --system-site-packages layers the venv on the base interpreter's packages; when the
  # tests run in a virtualenv themselves, layer it on that one's too (a .pth entry), as a
  # Colab runtime's packages are there before the set-up.
  site_dir = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
                             '["purelib"])'], capture_output=True, text=True,
                            check=True).stdout.strip()
  ours = {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}
  with open(os.path.join(site_dir, 'test_environment.pth'), 'w') as f:
    f.write('\n'.join(sorted(ours)) + '\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  script = str(clone / 'notebooks' / 'colab_setup.py')

  # No package index (as with no network): the editable build cannot fetch setuptools.
  empty = tmp_path / 'no_wheels'
  empty.mkdir()
  offline = dict(env, PIP_NO_INDEX='1', PIP_FIND_LINKS=str(empty))
  r = subprocess.run([python, script, '--accelerator=cpu'], env=offline, cwd=tmp_path,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 1, r.stdout + r.stderr
  assert 'Traceback' not in r.stdout + r.stderr
  last = r.stderr.strip().splitlines()[-1]       # pip's own output is above it
  assert last.startswith('error: installing the project failed'), r.stderr[-2000:]
  assert 'check the runtime has a network' in last

  r = subprocess.run([python, script], env=env, cwd=tmp_path, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  lock = _lock_pins()
  assert f'runtime: cpu; JAX build: jax=={lock["jax"]}' in r.stdout
  assert f'-c {clone}/notebooks/constraints.txt' in r.stdout
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets'):
    assert f'{name} {lock[name]}' in r.stdout, (name, r.stdout[-2000:])
  assert 'JAX backend: cpu' in r.stdout
  assert f'project: {clone}/alexnet_jax' in r.stdout
  # The venv imports the project from the clone, from anywhere.
  r = subprocess.run([python, '-c', 'import alexnet_jax, importlib_resources; '
                      'print(alexnet_jax.__file__)'], env=env, cwd=tmp_path,
                     capture_output=True, text=True, check=True)
  assert r.stdout.strip() == f'{clone}/alexnet_jax/__init__.py'
