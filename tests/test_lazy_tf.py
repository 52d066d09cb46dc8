"""TensorFlow is imported only by the input pipeline, and torch imports safely beside it."""

import os
import subprocess
import sys
import textwrap

import pytest

from alexnet_jax.common import lazy_tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *, blocked: tuple[str, ...] = (), tmp_path=None
            ) -> subprocess.CompletedProcess:
  """Run `code` in a fresh interpreter (no conftest: Triton not hidden), one CPU device.
  Modules in `blocked` fail to import there, as on a machine without them."""
  paths = [ROOT]
  if blocked:
    for name in blocked:
      pkg = tmp_path / 'blocked' / name
      pkg.mkdir(parents=True)
      (pkg / '__init__.py').write_text(f'raise ImportError("{name} is blocked by the test")\n')
    paths.insert(0, str(tmp_path / 'blocked'))
  env = dict(os.environ, XLA_FLAGS='', PYTHONPATH=os.pathsep.join(paths))
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_a_missing_module_fails_on_first_use_and_says_how_to_install():
  missing = lazy_tf.Deferred('alexnet_jax_no_such_module')
  assert not missing.loaded and 'not imported yet' in repr(missing)
  with pytest.raises(ImportError, match=r'alexnet_jax_no_such_module could not be imported'
                     r'.*pip install -e \..*synthetic'):
    missing.data  # noqa: B018  (the attribute read is the import)


def test_a_missing_module_is_one_error_line_and_exit_2_in_every_command(capsys):
  from alexnet_jax.common import exits
  try:
    lazy_tf.Deferred('alexnet_jax_no_such_module').data  # noqa: B018
  except ImportError as e:
    assert exits.user_fault(e) == exits.USAGE == 2
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith('error: alexnet_jax_no_such_module could not be imported')
  assert 'notebooks/colab_setup.py' in line
  with pytest.raises(ImportError, match='a bug'):      # any other ImportError is a bug
    exits.user_fault(ImportError('a bug'))


def test_requires_are_imported_first():
  order = []
  first = lazy_tf.Deferred('json', after_import=lambda m: order.append(m.__name__))
  second = lazy_tf.Deferred('csv', requires=(first,),
                            after_import=lambda m: order.append(m.__name__))
  assert second.reader is sys.modules['csv'].reader
  assert order == ['json', 'csv'] and first.loaded and second.loaded


def test_the_import_runs_after_pending_finalizers_and_without_the_collector(
    tmp_path, monkeypatch):
  """TFDS's import replaces __import__ for its duration (etils lazy_imports): a finalizer
  run inside it by the collector cannot import. Garbage waiting before the import is
  collected first, and the collector is off during it (and on again after)."""
  import gc
  import weakref
  (tmp_path / 'alexnet_probe_module.py').write_text(
      'import gc\nfrom alexnet_probe_state import fired\n'
      'SEEN = (gc.isenabled(), list(fired))\n')
  (tmp_path / 'alexnet_probe_state.py').write_text('fired = []\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  import alexnet_probe_state

  class Cycle:
    pass

  garbage = Cycle()
  garbage.me = garbage
  weakref.finalize(garbage, alexnet_probe_state.fired.append, 'finalized')
  gc.disable()          # keep it waiting until the import
  try:
    del garbage
    module = lazy_tf.Deferred('alexnet_probe_module').load()
    enabled_after = gc.isenabled()
  finally:
    gc.enable()
  assert module.SEEN == (False, ['finalized'])
  assert enabled_after is False    # it was off before the load, and the load left it so
  assert lazy_tf.Deferred('alexnet_probe_module').load() is module
  # With the collector on: off during the import, on again after.
  (tmp_path / 'alexnet_probe_module2.py').write_text('import gc\nENABLED = gc.isenabled()\n')
  assert gc.isenabled()
  assert lazy_tf.Deferred('alexnet_probe_module2').load().ENABLED is False
  assert gc.isenabled()


# What TensorFlow's C++ start-up writes on fd 2 on an AVX-512 CPU (AMD Zen 4, Intel with
# AVX-512/AMX) whatever TF_CPP_MIN_LOG_LEVEL says, and on an AVX2 one with the level unset.
NOISE = (
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n'
    'I0000 00:00:1733218000.123456   12345 port.cc:153] oneDNN custom operations are on. You '
    'may see slightly different numerical results due to floating-point round-off errors '
    'from different computation orders. To turn them off, set the environment variable '
    '`TF_ENABLE_ONEDNN_OPTS=0`.\n'
    'I0000 00:00:1733218000.223456   12345 cpu_feature_guard.cc:227] This TensorFlow binary '
    'is optimized to use available CPU instructions in performance-critical operations.\n'
    'To enable the following instructions: AVX2 FMA, in other operations, rebuild '
    'TensorFlow with the appropriate compiler flags.\n')
REAL = 'E0000 00:00:1733218000.323456   12345 real_error.cc:1] a real error: disk on fire\n'


def _noisy_module(tmp_path, name: str, body: str = '') -> None:
  """A module whose import writes NOISE, REAL and more noise straight to fd 2 (as C++ does,
  past sys.stderr), then a line through sys.stderr, then runs `body`."""
  (tmp_path / f'{name}.py').write_text(textwrap.dedent(f"""
      import os, sys
      os.write(2, {NOISE!r}.encode())
      os.write(2, {REAL!r}.encode())
      os.write(2, {NOISE.splitlines(keepends=True)[1]!r}.encode())
      print('python-level warning line', file=sys.stderr)
      """) + textwrap.dedent(body))


def test_tensorflow_start_up_noise_is_dropped_and_everything_else_kept(
    tmp_path, monkeypatch, capfd):
  _noisy_module(tmp_path, 'alexnet_noisy_module', 'VALUE = 7\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  seen = []

  def after(module):   # e.g. TF's device set-up: its output is filtered too
    os.write(2, NOISE.encode())
    seen.append(module.VALUE)
    os.write(2, b'after-import line without a newline')

  assert lazy_tf.Deferred('alexnet_noisy_module', after_import=after).VALUE == 7
  out, err = capfd.readouterr()
  assert seen == [7] and out == ''
  # (capfd hands sys.stderr its own file, so the Python-level line may come first here.)
  assert sorted(err.splitlines(keepends=True)) == sorted([
      REAL, 'python-level warning line\n', 'after-import line without a newline'])
  assert err.index(REAL) < err.index('after-import')
  # The patterns match every noise line alone, and none of the real ones.
  for line in NOISE.splitlines():
    assert lazy_tf.STARTUP_NOISE.search(line), line
  assert not lazy_tf.STARTUP_NOISE.search(REAL)
  assert not lazy_tf.STARTUP_NOISE.search('WARNING: All log messages before absl::'
                                          'InitializeLog() is called ... and more')
  # fd 2 is the test's capture again: a later write is not swallowed.
  os.write(2, b'later\n')
  assert capfd.readouterr().err == 'later\n'


def test_output_of_a_failing_import_is_kept(tmp_path, monkeypatch, capfd):
  _noisy_module(tmp_path, 'alexnet_failing_module', 'raise ImportError("broken install")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ImportError, match='alexnet_failing_module could not be imported '
                     r'\(broken install\)'):
    lazy_tf.Deferred('alexnet_failing_module').load()
  assert sorted(capfd.readouterr().err.splitlines(keepends=True)) == [
      REAL, 'python-level warning line\n']


def test_the_training_command_imports_tensorflow_only_through_lazy_tf():
  """CLU's writers import TensorFlow: the training loop takes them through lazy_tf, so its
  start-up noise is filtered there too (it was the one TensorFlow import that was not)."""
  p = _python("""
      import sys
      import alexnet_jax.main, alexnet_jax.run.train
      print('TF', 'tensorflow' in sys.modules)
      """)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'TF False' in p.stdout


@pytest.mark.slow
def test_model_steps_and_benchmark_import_without_tensorflow_or_clu(tmp_path):
  """What an accelerator image without TensorFlow (and CLU) runs: the model, a jitted train
  step on synthetic data, the step benchmark's library. The input pipeline then fails with
  the install hint."""
  p = _python("""
      import sys
      import numpy as np
      from alexnet_jax.common import config_lib
      from alexnet_jax.run import evaluate
      from alexnet_jax.data import pipeline as input_pipeline
      from alexnet_jax.model import nets, steps
      from benchmarks import step_lib
      config = step_lib.model_config('one_tower', 'float32', 4, step_lib.parse_overrides(
          'model.conv_widths=(8,16,16,16,16); model.fc_widths=(32,32); model.num_classes=10;'
          'model.input_size=67; input.resize_size=72'))
      case = step_lib.JaxCase(config)
      case.first_calls(False)
      assert np.isfinite(case.last_loss), case.last_loss
      assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None
      try:
        input_pipeline.tf.data
      except ImportError as e:
        print('HINT:', e)
      print('LOSS', case.last_loss)
      """, blocked=('tensorflow', 'tensorflow_datasets', 'clu'), tmp_path=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'LOSS' in p.stdout
  assert 'HINT: tensorflow could not be imported (tensorflow is blocked by the test)' in p.stdout
  assert 'tensorflow-cpu on Linux x86-64' in p.stdout


@pytest.mark.slow
def test_torch_imports_after_tensorflow_without_crashing():
  """torch's CUDA builds load Triton on first use of torch.optim; Triton's LLVM beside
  TensorFlow's segfaults the process. import_torch hides Triton when TF is loaded."""
  p = _python("""
      import sys
      from alexnet_jax.common import lazy_tf
      assert not lazy_tf.tf.loaded
      print('GPUS', lazy_tf.tf.config.get_visible_devices('GPU'))
      torch = lazy_tf.import_torch()
      w = torch.zeros(3, requires_grad=True)
      opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
      (w - 1).square().sum().backward()
      opt.step()
      print('STEP', [round(float(v), 3) for v in w])
      print('TRITON', sys.modules.get('triton', 'absent'))
      """)
  if 'No module named \'torch\'' in p.stderr:
    pytest.skip('torch is not installed (the torch extra)')
  assert p.returncode == 0, f'rc={p.returncode}\n{p.stderr[-3000:]}'
  assert 'GPUS []' in p.stdout
  assert 'STEP [0.2, 0.2, 0.2]' in p.stdout
  assert 'TRITON None' in p.stdout
