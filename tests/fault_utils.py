"""Helpers of the fault tests (test_reliability.py, test_faults_subprocess.py): real files,
real processes, real signals."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

from alexnet_jax.common import fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny run of tests/test_divergence.py, as main flags.
TINY = ['--config.model.conv_widths=(8,16,24,24,16)', '--config.model.fc_widths=(32,32)',
        '--config.dataset.shapes_train_size=256', '--config.dataset.shapes_validation_size=64',
        '--config.input.shuffle_buffer=256', '--config.batch_size=32',
        '--config.eval_batch_size=32']


def tiny_config(data_dir, **overrides):
  """The same tiny run as a ConfigDict (keys with dots: nested fields)."""
  from configs import default
  c = default.get_config()
  c.model.conv_widths = (8, 16, 24, 24, 16)
  c.model.fc_widths = (32, 32)
  c.dataset.data_dir = str(data_dir)
  c.dataset.shapes_train_size = 256
  c.dataset.shapes_validation_size = 64
  c.input.shuffle_buffer = 256
  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_train_steps = 8
  c.log_every_steps = 2
  c.eval_every_steps = 8
  c.checkpoint_every_steps = 2
  return fields.set_fields(c, overrides)


def main_env(devices: int, cache_dir: str | None = None, **extra) -> dict:
  """Environment of a `main` subprocess on `devices` simulated CPU devices. A persistent
  compilation cache shared by the launches of a test session saves most of each launch's
  compile time (about 60 of 80 CPU-s for the tiny model)."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  env.update(extra)
  return env


def main_command(workdir, data_dir, *flags, steps: int = 24, model: int = 2,
                 script: str | None = None) -> list[str]:
  """`python -m alexnet_jax.main` with the tiny config: `steps` steps (one eval at the
  end), a checkpoint every 2 and a metrics row every step (or `python SCRIPT` with the same
  arguments, for a wrapper that patches something first)."""
  head = [sys.executable, script] if script else [sys.executable, '-m', 'alexnet_jax.main']
  return [*head, '--config=configs/default.py', f'--workdir={workdir}',
          f'--config.dataset.data_dir={data_dir}', *TINY,
          f'--config.num_train_steps={steps}', f'--config.mesh.model={model}',
          '--config.log_every_steps=1', f'--config.eval_every_steps={steps}',
          '--config.checkpoint_every_steps=2', *flags]


def run_main(args, env, timeout=600, **kw) -> subprocess.CompletedProcess:
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, **kw)


def start_main(args, env, log_path) -> subprocess.Popen:
  log = open(log_path, 'w')
  return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None,
             what: str = 'condition', poll: float = 0.02):
  """Polls until predicate() is truthy (returns it); fails if `proc` exits first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = predicate()
    if value:
      return value
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'process exited ({proc.returncode}) before {what}')
    time.sleep(poll)
  raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def kill9(proc: subprocess.Popen) -> None:
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def metrics_steps(workdir) -> list[tuple[int, str]]:
  import json
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        r = json.loads(line)
      except ValueError:
        continue
      rows.append((r['step'], r['split']))
  return rows


def damage_step(step_dir: str) -> list[str]:
  """Damages the array files of an Orbax step folder as a failing disk would: every array
  file (index and data) cut to half. Returns the files changed. (Silent damage, a flipped
  bit that loads as other numbers, is tests/test_reliability.py's `_silently_wrong_copy`.)"""
  files = []
  for root, _, names in os.walk(step_dir):
    if os.path.basename(root) == 'd':
      files += [os.path.join(root, n) for n in names]
  assert files, f'no array files under {step_dir}'
  for f in files:
    os.truncate(f, os.path.getsize(f) // 2)
  return files


@contextlib.contextmanager
def read_only_dir(path):
  """`path` made read-only for real: chmod for a normal user; for root (whom modes do not
  stop) a read-only bind mount of it onto itself. Skips the test where neither works."""
  import pytest
  path = str(path)
  if os.geteuid() != 0:
    modes = {}
    for root, dirs, _ in os.walk(path):
      for d in [root, *(os.path.join(root, x) for x in dirs)]:
        modes[d] = os.stat(d).st_mode
    for d in sorted(modes, reverse=True):
      os.chmod(d, 0o555)
    try:
      yield path
    finally:
      for d, mode in modes.items():
        os.chmod(d, mode)
    return
  mounted = subprocess.run(['mount', '--bind', path, path], capture_output=True).returncode == 0
  if mounted:
    mounted = subprocess.run(['mount', '-o', 'remount,bind,ro', path],
                             capture_output=True).returncode == 0
    if not mounted:
      subprocess.run(['umount', path], capture_output=True)
  if not mounted:
    pytest.skip('running as root without the right to mount: cannot make a read-only dir')
  try:
    probe = os.path.join(path, '.probe')
    try:
      open(probe, 'w').close()
      os.remove(probe)
      pytest.skip('the read-only mount is writable')
    except OSError:
      pass
    yield path
  finally:
    subprocess.run(['umount', path], capture_output=True)


def write_image(path, image, fmt, **kw) -> None:
  buf = io.BytesIO()
  image.save(buf, format=fmt, **kw)
  with open(path, 'wb') as f:
    f.write(buf.getvalue())


def messy_folder(root, photos, bad: dict[str, bytes] | None = None, classes: int = 2):
  """A folder dataset (train/ and validation/) of real photos, plus damaged files:
  {relative path: bytes}. Returns root."""
  for split, part in (('train', photos[: len(photos) * 3 // 4]),
                      ('validation', photos[len(photos) * 3 // 4:])):
    for i, src in enumerate(part):
      d = os.path.join(root, split, f'class{i % classes}')
      os.makedirs(d, exist_ok=True)
      shutil.copy(src, os.path.join(d, os.path.basename(src)))
  for rel, data in (bad or {}).items():
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, 'wb') as f:
      f.write(data)
  return root


def truncated_jpeg(photo: str) -> bytes:
  data = open(photo, 'rb').read()
  return data[: len(data) // 5]


def garbage_jpeg() -> bytes:
  return b'\xff\xd8\xff' + os.urandom(500)
