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
"""

from __future__ import annotations

import gc
import importlib
import sys
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
          gc.disable()               # and none inside the module's import (see above)
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
