"""Installs the project into a Colab runtime (or any existing environment), at CI's versions.

    python notebooks/colab_setup.py                  # what the notebook's first cell runs
    python notebooks/colab_setup.py --dry-run        # says what it would install

Run it with the Python that will run the project (the notebook passes its kernel's). It
1. detects the runtime's accelerator without importing JAX (a TPU: /dev/accel*, /dev/vfio
   or the TPU variables Colab sets; a GPU: nvidia-smi or /dev/nvidia*), so no process
   holds the device when training starts;
2. installs the project's dependencies (setup.cfg's install_requires) with
   `-c notebooks/constraints.txt`, the lock less what the runtime keeps its own of, so
   each comes at the version CI tests, and JAX as the runtime's build of the lock's
   version: `jax[cuda12]`, `jax[tpu]` or plain `jax`;
3. keeps the runtime's TensorFlow where it has one (Colab's CPU and GPU runtimes; the
   project hides the GPU from it) and otherwise installs TensorFlow's CPU build and
   TensorBoard at the lock's versions (Colab's TPU runtimes have no TensorFlow, and a
   TensorFlow that could open the TPU would fight JAX for it);
4. installs the project itself (`pip install --no-deps -e`, so setup.cfg's own TensorFlow
   line cannot lay a second TensorFlow over the runtime's);
5. checks, in a fresh process, that everything imports, at the pinned versions.
A problem the user can fix (no network, a failed install) ends it with one `error:` line
and exit status 1; it never prints a traceback of its own.
"""

from __future__ import annotations

import argparse
import configparser
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS = os.path.join(ROOT, 'notebooks', 'constraints.txt')
JAX_EXTRA = {'gpu': 'cuda12', 'tpu': 'tpu', 'cpu': None}
TENSORFLOW = ('tensorflow', 'tensorflow-cpu')


class SetupError(Exception):
  """Something the user can fix; the message is the one line printed."""


def canonical(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def detect_accelerator() -> str:
  """'tpu', 'gpu' or 'cpu': what this runtime has, without importing JAX."""
  if (os.environ.get('COLAB_TPU_ADDR') or os.environ.get('TPU_ACCELERATOR_TYPE')
      or os.environ.get('TPU_NAME') or glob.glob('/dev/accel[0-9]*')
      or glob.glob('/dev/vfio/[0-9]*')):
    return 'tpu'
  if shutil.which('nvidia-smi') or glob.glob('/dev/nvidia[0-9]*'):
    return 'gpu'
  return 'cpu'


def pins(path: str = CONSTRAINTS) -> dict[str, str]:
  """name -> version of the constraints file's pins (markers ignored: Colab is Linux
  x86-64, where the only marked pins, TensorFlow's two builds, are told apart by name)."""
  out = {}
  with open(path) as f:
    for line in f:
      m = re.match(r'\s*([A-Za-z0-9._-]+)==([^;\s]+)', line)
      if m:
        out[canonical(m.group(1))] = m.group(2)
  return out


def install_requires() -> list[str]:
  """setup.cfg's install_requires, markers evaluated for this machine, as `name[extras]`
  requirement strings (versions come from the constraints)."""
  from packaging.requirements import Requirement
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, 'setup.cfg'))
  out = []
  for line in parser['options']['install_requires'].splitlines():
    text = line.split('#')[0].strip()
    if text:
      req = Requirement(text)
      if req.marker is None or req.marker.evaluate():
        out.append(req)
  return out


def plan(accelerator: str, has_tensorflow: bool, has_tensorboard: bool
         ) -> tuple[list[str], list[str]]:
  """(the requirements to install with -c constraints, notes for the user)."""
  reqs, notes = [], []
  lock = pins()
  for req in install_requires():
    name = canonical(req.name)
    if name in TENSORFLOW or name == 'tensorboard':
      continue
    if name == 'jax':
      extra = JAX_EXTRA[accelerator]
      reqs.append(f'jax[{extra}]=={lock["jax"]}' if extra else f'jax=={lock["jax"]}')
      continue
    extras = f'[{",".join(sorted(req.extras))}]' if req.extras else ''
    reqs.append(f'{req.name}{extras}')
  if has_tensorflow:
    notes.append("keeping the runtime's TensorFlow (the project hides the GPU from it)")
    if not has_tensorboard:
      reqs.append('tensorboard')
  else:
    tf = [r.name for r in install_requires() if canonical(r.name) in TENSORFLOW]
    reqs.extend(tf + ['tensorboard'])
    notes.append(f'no TensorFlow in this runtime: installing {tf[0]} (CPU) and TensorBoard')
  return reqs, notes


def run(command: list[str], what: str) -> None:
  print('$', ' '.join(shlex.quote(c) for c in command), flush=True)
  code = subprocess.call(command)
  if code:
    raise SetupError(f'{what} failed (exit status {code}; its output is above). If it could '
                     'not reach the package index, check the runtime has a network, then run '
                     'this again')


# Run in a fresh process: imports everything the project needs and reports versions and
# the JAX backend.
_CHECK = """
import importlib.metadata as md, json, sys
import alexnet_jax, flax, jax, optax, orbax.checkpoint, clu, ml_collections
import importlib_resources, tensorboard, tensorflow_datasets
names = sys.argv[1:]
versions = {}
for name in names:
  try:
    versions[name] = md.version(name)
  except md.PackageNotFoundError:
    pass
print(json.dumps({'versions': versions, 'backend': jax.default_backend(),
                  'package': alexnet_jax.__file__}))
"""


def verify(accelerator: str, keep: set[str]) -> dict:
  """Imports the project in a fresh process; refuses versions other than the pins (except
  the runtime's own TensorFlow) and a CPU backend on a GPU or TPU runtime."""
  lock = pins()
  names = sorted(set(lock) & {canonical(r.name) for r in install_requires()} | {'jaxlib'})
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  r = subprocess.run([sys.executable, '-c', _CHECK, *names], capture_output=True, text=True,
                     env=env, cwd=os.path.expanduser('~'))
  if r.returncode:
    last = (r.stderr.strip().splitlines() or ['(no output)'])[-1]
    raise SetupError(f'the installed project does not import: {last}')
  report = json.loads(r.stdout.strip().splitlines()[-1])
  wrong = [f'{n} {v} (CI tests {lock[n]})' for n, v in report['versions'].items()
           if n in lock and v != lock[n] and n not in keep]
  if wrong:
    raise SetupError('installed at other versions than the lock: ' + ', '.join(wrong))
  if accelerator != 'cpu' and report['backend'] == 'cpu':
    raise SetupError(f'this runtime has a {accelerator.upper()} but JAX runs on the CPU: '
                     'restart the runtime (Runtime > Restart session) and run this again')
  return report


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--accelerator', choices=('auto', 'cpu', 'gpu', 'tpu'), default='auto',
                      help='the JAX build to install (auto: detected)')
  parser.add_argument('--dry-run', action='store_true',
                      help='print what would be installed, install nothing')
  args = parser.parse_args(argv)
  try:
    accelerator = detect_accelerator() if args.accelerator == 'auto' else args.accelerator
    has_tf = importlib.util.find_spec('tensorflow') is not None
    has_tb = importlib.util.find_spec('tensorboard') is not None
    reqs, notes = plan(accelerator, has_tf, has_tb)
    jax_build = next(r for r in reqs if r.startswith('jax'))
    print(f'runtime: {accelerator}; JAX build: {jax_build}')
    for note in notes:
      print(note)
    pip = [sys.executable, '-m', 'pip', 'install', '-q']
    steps = [(pip + ['-c', CONSTRAINTS] + reqs, 'installing the dependencies'),
             (pip + ['--no-deps', '-e', ROOT], 'installing the project')]
    if args.dry_run:
      for command, _ in steps:
        print('would run:', ' '.join(shlex.quote(c) for c in command))
      return 0
    for command, what in steps:
      run(command, what)
    report = verify(accelerator, keep={'tensorflow', 'tensorflow-cpu', 'tensorboard'}
                    if has_tf else set())
    shown = ', '.join(f'{n} {v}' for n, v in sorted(report['versions'].items())
                      if n in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
                               'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets'))
    print(f'installed: {shown}; JAX backend: {report["backend"]}')
    print(f'project: {os.path.dirname(report["package"])}')
  except SetupError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
