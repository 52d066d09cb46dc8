"""TensorFlow and TFDS, imported on first use.

TensorFlow is only the host's input engine (tf.data decode, TFDS builders). The model, the
jitted steps, checkpoints, the step benchmark and a training run on dataset.name='synthetic'
never touch it, so they import without it: on an accelerator machine whose image has JAX but
no TensorFlow (whose wheel is far larger than what can be carried there), on a laptop
checking shapes. `tf` and `tfds` here stand for the modules; the first attribute read
imports the real one, and a missing install then fails with an error that says what needs
it and how to install it.

The first import of TensorFlow also hides every GPU from it: it decodes on the host and must
never take accelerator memory from JAX.

The import itself runs with Python's garbage collector flushed and then paused. TFDS
imports its modules inside etils' `lazy_imports()`, which replaces `__import__` for the
duration; a finalizer that the collector happened to run inside it (multiprocessing's
semaphore clean-up, `from .resource_tracker import unregister`) failed there, "Relative
import statements not supported". Importing lazily made that reachable: a Pool left for the
collector before the first tf.data use.

TensorFlow's C++ start-up writes to stderr (file descriptor 2) before its log settings
apply: on CPUs with AVX-512 (AMD Zen 4 and later, Intel with AVX-512 or AMX)
TF_CPP_MIN_LOG_LEVEL=2 does not stop absl's `WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR` nor the `oneDNN custom operations
are on` line. So the import (and `after_import`) runs with fd 2 redirected to a temporary
file, and every captured line but those of `STARTUP_NOISE` is written back to the real
stderr afterwards, in order: an error printed during the import still reaches the user.
(A file, not a pipe: a pipe could fill up while the import holds the GIL, with no reader
able to run.) TF_CPP_MIN_LOG_LEVEL defaults to 1 (no INFO lines) for the import; the
commands set 2 (logs.setup). TF_ENABLE_ONEDNN_OPTS is left alone: it changes TensorFlow's
numerics, not just its log.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from types import ModuleType

from alexnet_jax.common import exits

_INSTALL_HINT = (
    "install TensorFlow, the host's tf.data/TFDS engine: `pip install -e .` installs the "
    "right build for this platform (tensorflow-cpu on Linux x86-64, tensorflow elsewhere); "
    "in an environment that has its own TensorFlow (Colab) keep that one. Only the input "
    "pipeline needs it: the model, the steps and dataset.name='synthetic' run without it; "
    "on Colab, `python notebooks/colab_setup.py` installs its CPU build where the runtime "
    "has none")


class NotInstalled(ImportError):
  """A deferred module that is not installed: a fault the user fixes, so commands print
  its one line and exit 2 (USAGE in common/exits.py) instead of a traceback."""

  exit_status = exits.USAGE


# Lines TensorFlow's C++ start-up prints on stderr whatever TF_CPP_MIN_LOG_LEVEL says, with
# nothing in them to act on (matched anywhere in the line: they come with or without a log
# prefix). The CUDA ones are a GPU build's, on a machine with JAX's own CUDA libraries
# (Colab); TensorFlow never uses a GPU here (`_hide_gpus`).
STARTUP_NOISE = re.compile('|'.join([
    r'^WARNING: All log messages before absl::InitializeLog\(\) is called are written to '
    r'STDERR$',
    r'\] oneDNN custom operations are on\. ',
    r'\] This TensorFlow binary is optimized to use available CPU instructions',
    r'^To enable the following instructions: .* in other operations, rebuild TensorFlow with '
    r'the appropriate compiler flags\.$',
    r'\] Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for '
    r'plugin cu\w+ when one has already been registered$',
    r'\] Could not find cuda drivers on your machine, GPU will not be used\.$',
    r'\] TF-TRT Warning: Could not find TensorRT$',
    r'\] computation placer already registered\. ',
]))


def _flush_python_stderr() -> None:
  for stream in {sys.stderr, sys.__stderr__}:
    with contextlib.suppress(Exception):
      stream.flush()


@contextlib.contextmanager
def quiet_startup(noise: re.Pattern = STARTUP_NOISE):
  """Runs the body with file descriptor 2 captured; afterwards writes every captured line
  that `noise` does not match back to the real fd 2, in order (see the module doc)."""
  try:
    saved = os.dup(2)
  except OSError:               # no stderr at all (a daemon): nothing to filter
    yield
    return
  try:
    capture = tempfile.TemporaryFile()
  except OSError:
    os.close(saved)
    yield
    return
  with capture:
    _flush_python_stderr()
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      _flush_python_stderr()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = b''.join(line for line in capture
                      if not noise.search(line.rstrip(b'\r\n').decode('utf-8', 'replace')))
      with contextlib.suppress(OSError):
        while kept:
          kept = kept[os.write(2, kept):]


class Deferred:
  """A module imported when one of its attributes is first read."""

  def __init__(self, name: str, after_import: Callable[[ModuleType], None] | None = None,
               requires: tuple[Deferred, ...] = ()):
    self._name = name
    self._after_import = after_import
    self._requires = requires
    self._module: ModuleType | None = None
    self._lock = threading.Lock()

  def load(self) -> ModuleType:
    if self._module is None:
      with self._lock:
        if self._module is None:
          for other in self._requires:
            other.load()
          gc.collect()               # pending finalizers run now, with the normal import
          enabled = gc.isenabled()
          os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
          with quiet_startup():
            gc.disable()             # and none inside the module's import (see above)
            try:
              module = importlib.import_module(self._name)
            except ImportError as e:
              raise NotInstalled(f'{self._name} could not be imported ({e}); {_INSTALL_HINT}'
                                 ) from e
            finally:
              if enabled:
                gc.enable()
            if self._after_import is not None:
              self._after_import(module)
          self._module = module
    return self._module

  @property
  def loaded(self) -> bool:
    return self._module is not None

  def __getattr__(self, attr: str):
    # Only reached for names this object lacks, i.e. the module's own.
    return getattr(self.load(), attr)

  def __repr__(self) -> str:
    state = 'imported' if self._module is not None else 'not imported yet'
    return f'<deferred module {self._name!r} ({state})>'


def _hide_gpus(module: ModuleType) -> None:
  try:
    module.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # Devices already initialised elsewhere (with the same setting).
    pass


tf = Deferred('tensorflow', after_import=_hide_gpus)
# TFDS imports TensorFlow itself: import it through `tf` first, so that its GPUs are hidden.
tfds = Deferred('tensorflow_datasets', requires=(tf,))


def import_torch() -> ModuleType:
  """`torch`, for eager use (weights import/export, the benchmark's PyTorch twin).

  TensorFlow and Triton (which torch's CUDA builds import on first use of torch.optim or
  torchvision) each load their own LLVM, and a process holding both crashes (a segfault
  in `import tensorflow; import torchvision`). When TensorFlow is already in the process
  and Triton is not, Triton is hidden first: eager torch does not need it, and only
  torch.compile would. Raises ImportError when torch is not installed.
  """
  if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
    sys.modules['triton'] = None  # type: ignore[assignment]
  import torch  # here, not at the top: torch stays optional
  return torch
