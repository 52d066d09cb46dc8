"""What the command-line programs log: this project's INFO lines, everyone's warnings.

Every CLI calls `logs.setup()` first thing in its `main`. After it, the absl log
(stderr) holds

* every record of this project (the `alexnet_jax` package and the directory of the
  program being run, e.g. `experiments/` or `benchmarks/`), at any level;
* WARNING and above from everything else;

and no INFO chatter from the libraries underneath: Orbax (a few dozen lines per
checkpoint), TensorStore, TFDS (a line per tf.data.Dataset built), CLU (its
LoggingWriter repeats every metric, `parameter_overview` prints a table per run,
ReportProgress logs "Setting work unit notes"), JAX, matplotlib, TensorFlow.
`--verbosity=1` (absl's debug level) turns the filter off and shows them all again.

How: these libraries all log through absl (or Python logging, which absl's handler
also receives), so every record reaches the absl handler under the logger name
'absl' whoever wrote it. Only the record's source file says who did. The filter
therefore keeps an INFO record when its `pathname` lies in one of the kept
directories. (The filter this replaces compared `record.levelno`, a Python level,
20 for INFO, with `absl.logging.INFO`, which is absl's verbosity 0: every record
passed.)

C++ logs (TensorFlow, XLA) are set by TF_CPP_MIN_LOG_LEVEL, which must be set
before TensorFlow is imported: `setup()` defaults it to 2 (errors only) when unset.
"""

from __future__ import annotations

import functools
import logging as std_logging
import os
import sys
from collections.abc import Iterable

from absl import logging

# The alexnet_jax package (this file is in its common/): every sub-package's records are kept.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


# Library warnings that say nothing to act on, dropped like library INFO (substrings of
# the message): Orbax says these whenever a checkpoint is only read (evaluate, predict,
# figures, init_from), TFDS whenever a builder config is made in code (alexnet_shapes).
KNOWN_NOISE = (
    'CheckpointManagerOptions.read_only=True',
    'Given directory is read only',
    'Using custom data configuration',
)


class LibraryInfoFilter(std_logging.Filter):
  """Keeps WARNING+ from anywhere (but the KNOWN_NOISE) and lower levels only from files
  under `keep_dirs`."""

  def __init__(self, keep_dirs: Iterable[str]):
    super().__init__()
    self.keep_dirs = tuple(os.path.join(os.path.realpath(d), '') for d in keep_dirs)
    self._is_ours = functools.lru_cache(maxsize=4096)(self._under_kept_dir)

  def _under_kept_dir(self, pathname: str) -> bool:
    return os.path.realpath(pathname).startswith(self.keep_dirs)

  def filter(self, record: std_logging.LogRecord) -> bool:
    if logging.level_debug():
      return True
    if record.levelno >= std_logging.WARNING:
      if record.levelno > std_logging.WARNING or self._is_ours(record.pathname or ''):
        return True
      message = str(record.msg)
      return not any(noise in message for noise in KNOWN_NOISE)
    return self._is_ours(record.pathname or '')


def _program_dir() -> str | None:
  main = sys.modules.get('__main__')
  path = getattr(main, '__file__', None)
  return os.path.dirname(os.path.realpath(path)) if path else None


def setup(keep_dirs: Iterable[str] = ()) -> LibraryInfoFilter:
  """Filters library INFO records out of the absl log; call it at the start of `main`.

  Keeps INFO from `alexnet_jax`, from the directory of the program being run and
  from `keep_dirs`. Calling it again replaces the previous filter. Returns the filter.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  dirs = [PACKAGE_DIR, *keep_dirs]
  program_dir = _program_dir()
  if program_dir:
    dirs.append(program_dir)
  new = LibraryInfoFilter(dirs)
  # The absl handler (installed on the root logger by app.run) receives absl's and
  # Python logging's records alike; other root handlers get the same filter.
  handlers = {logging.get_absl_handler(), *std_logging.getLogger().handlers}
  for handler in handlers:
    for old in [f for f in handler.filters if isinstance(f, LibraryInfoFilter)]:
      handler.removeFilter(old)
    handler.addFilter(new)
  return new

