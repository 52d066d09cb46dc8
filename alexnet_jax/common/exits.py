"""How every command ends: the exit statuses (one table), and one `error:` line for a
fault the user fixes instead of a traceback.

  status  name        meaning
  0       OK          done
  1       PARTIAL     done, but some of the inputs failed and the others were done
                      (predict: a file could not be read or decoded; experiments.ablations:
                      a run failed). Python also exits 1 on an unexpected error (a bug),
                      which prints a traceback.
  2       USAGE       the command cannot start as asked: a bad or missing flag or argument,
                      an unknown config field (`--config.model.lrm=none`), a value of the
                      wrong type (`--config.optimizer.momentum=fast`), a config value the
                      project refuses, a config file, workdir, file or dataset named by the
                      user that is not there (the message says what to run or pass)
  3       DIVERGED    training diverged (the loss became NaN or inf)
  4       WORKDIR     the workdir is in use by another live run, or cannot be written
  5       CHECKPOINT  no checkpoint of the run restores, or one could not be written

Which faults are the user's: an exception class names its status with an `exit_status`
attribute set from this table (checkpoints.CheckpointError: CHECKPOINT, lock.WorkdirError:
WORKDIR, train.DivergedError: DIVERGED); otherwise ValueError, FileNotFoundError and the
OS errors a user fixes (not a directory, permission denied) are USAGE. Anything else is a
bug and keeps its traceback.

`run(main)` replaces `absl.app.run(main)` in every command: it parses the flags with
`parse_flags`, which turns absl's "FATAL Flags parsing error" (exit 1) and ml_collections'
traceback for a bad `--config.X` override into one `error:` line and USAGE, and it turns an
`app.UsageError` raised by `main` into one line and USAGE too.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags, logging

OK = 0
PARTIAL = 1
USAGE = 2
DIVERGED = 3
WORKDIR = 4
CHECKPOINT = 5

TABLE = {OK: 'OK', PARTIAL: 'PARTIAL', USAGE: 'USAGE', DIVERGED: 'DIVERGED',
         WORKDIR: 'WORKDIR', CHECKPOINT: 'CHECKPOINT'}


def status_of(e: BaseException) -> int | None:
  """The exit status of a fault the user fixes (see the module docstring); None for a bug."""
  status = getattr(e, 'exit_status', None)
  if isinstance(status, int):
    return status
  if isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                    PermissionError)):
    return USAGE
  return None


def user_fault(e: BaseException, *, log: bool = False) -> int:
  """A command's `except Exception as e: return exits.user_fault(e)`.

  For a fault the user fixes (`status_of` is not None): prints one `error:` line on stderr
  (and, with `log`, puts it in the absl log too, which a training run keeps), no traceback,
  and returns its status. Anything else is a bug and is raised again, traceback and all.
  """
  status = status_of(e)
  if status is None:
    raise e
  if log:
    logging.error('%s', e)
  print(f'error: {e}', file=sys.stderr)
  return status


def emit_json(value: Any, where: str) -> int:
  """What every `--json=PATH|-` does: the value as indented JSON on stdout (`-`) or in the
  file PATH (local or gs://). Returns OK, or, with one `error:` line, the status of a file
  that cannot be written (no such folder, permission denied: USAGE)."""
  import json
  text = json.dumps(value, indent=1) + '\n'
  if where == '-':
    sys.stdout.write(text)
    return OK
  try:
    from etils import epath
    epath.Path(where).write_text(text)
  except Exception as e:  # noqa: BLE001 - a bug (a status of None) is raised again
    return user_fault(e)
  return OK


# ------------------------------------------------------------------------------ flags


def define_checkpoint(applies_to: str = '') -> flags.FlagHolder:
  """The one `--checkpoint=latest|best` of every command that reads a run's parameters.

  `latest` (the default) is the final model; `best` is the step with the best validation
  top-1, chosen on the split evaluate reports, so its score there is biased upward."""
  return flags.DEFINE_enum(
      'checkpoint', 'latest', ['latest', 'best'],
      f'{applies_to}latest: the final model (checkpoints/); best: the best validation '
      'top-1 (best/; biased on that split).')



def _type_name(value: Any) -> str:
  kinds = {bool: 'a bool (true or false)', int: 'an int', float: 'a float',
           str: 'a string', tuple: 'a tuple, e.g. (1,2)', list: 'a list, e.g. [1,2]'}
  for kind, name in kinds.items():
    if type(value) is kind:
      return name
  return f'a {type(value).__name__}'


def _is_section(value: Any) -> bool:
  return hasattr(value, 'keys') and hasattr(value, 'get')


def _field_paths(config: Any, prefix: str = '') -> list[str]:
  """Every dotted field of a ConfigDict that holds a value ('model.lrn', ...)."""
  out = []
  for key in config.keys():
    path, value = f'{prefix}{key}', config[key]
    out.extend(_field_paths(value, path + '.') if _is_section(value) else [path])
  return out


def diagnose_override(config: Any, path: str) -> str | None:
  """Why `--config.<path>=...` cannot apply to `config`: no such field (with the closest
  known ones, by difflib), or a field that is not a section; None when the path exists."""
  node = config
  parts = path.split('.')
  for i, part in enumerate(parts):
    if not _is_section(node):
      return (f'no such field: {".".join(parts[:i])} is {_type_name(node)}, not a section '
              'of fields')
    if part not in node.keys():
      known = _field_paths(config)
      closest = difflib.get_close_matches(path, known, n=3, cutoff=0.6)
      if not closest:          # a typo in the section: compare the last part alone
        last = {p.rsplit('.', 1)[-1]: p for p in known}
        closest = [last[k] for k in difflib.get_close_matches(part, list(last), n=3)]
      return 'no such field' + (f'; closest: {", ".join(closest)}' if closest else '')
    node = node[part]
  return None


def _config_flags() -> list[flags.Flag]:
  from ml_collections.config_flags import config_flags
  return [flags.FLAGS[name] for name in flags.FLAGS
          if name == flags.FLAGS[name].name and config_flags.is_config_flag(flags.FLAGS[name])]


def _config_arg(argv: Sequence[str], name: str) -> str | None:
  for arg in argv:
    for form in (f'--{name}=', f'-{name}='):
      if arg.startswith(form):
        return arg[len(form):]
  return None


def _overrides(argv: Sequence[str], name: str) -> list[tuple[str, str]]:
  """(arg, dotted path) of each `--<name>.X[=value]` in argv."""
  out = []
  for arg in argv:
    for form in (f'--{name}.', f'-{name}.'):
      if arg.startswith(form):
        out.append((arg, arg[len(form):].split('=', 1)[0]))
  return out


def _load_config(flag: flags.Flag, argv: Sequence[str]) -> tuple[Any, str | None]:
  """(the config the flag names, or None; why it cannot be loaded, or None)."""
  from ml_collections import ConfigDict
  source = _config_arg(argv, flag.name)
  if source is None:
    source = flag.default if isinstance(flag.default, str) else None
  if source is None:
    config = flag.value
  else:
    file = source.split(':', 1)[0]
    if '://' not in file and not os.path.exists(file):
      return None, f'--{flag.name}={source}: no such file'
    try:
      config = flag.parser.parse(source)
    except Exception as e:  # noqa: BLE001 - a broken config file: its own message
      return None, f'--{flag.name}={source}: cannot load it: {" ".join(str(e).split())[:500]}'
  if config is not None and not isinstance(config, ConfigDict):
    try:
      config.keys()
    except Exception as e:  # noqa: BLE001 - ml_collections' stand-in for a failed load
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      return None, f'--{flag.name}={source}: cannot load it: {first}'
  return config, None


def explain_flag_error(argv: Sequence[str], error: BaseException | None) -> str | None:
  """One line saying what is wrong with the command line, or None when nothing is found
  (then `error`, if a flags.Error, is shown as it is)."""
  for flag in _config_flags():
    config, why = _load_config(flag, argv)
    if why is not None:
      return why
    if config is None:
      continue
    for arg, path in _overrides(argv, flag.name):
      problem = diagnose_override(config, path)
      if problem is not None:
        return f'--{flag.name}.{path}: {problem}'
      if error is not None and f'--{flag.name}.{path}=' in str(error):
        node = config
        for part in path.split('.'):
          node = node[part]
        if _is_section(node):
          return (f'{arg}: {path} is a section of fields; set one of them, e.g. '
                  f'--{flag.name}.{path}.{next(iter(node.keys()), "X")}=...')
        reason = str(error).split(': ', 1)[-1]
        return f'{arg}: {path} takes {_type_name(node)} ({reason})'
  if isinstance(error, flags.Error):
    return ' '.join(str(error).split())
  return None


def _exit_usage(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(USAGE)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad flag or config override is one `error:` line and exit
  USAGE (absl prints 'FATAL Flags parsing error' and exits 1; ml_collections raises
  KeyError/AttributeError with a 50-line traceback for an unknown field)."""
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - every parsing fault is explained, or raised again
    message = explain_flag_error(argv, e)
    if message is None:
      raise
    _exit_usage(message)
  for flag in _config_flags():
    if flag.present or _config_arg(argv, flag.name) is not None:
      _, why = _load_config(flag, argv)
      if why is not None:
        _exit_usage(why)
  return rest


def run(main: Callable[[list[str]], int | None], *,
        default_config: str | None = None) -> None:
  """`absl.app.run(main)` with `parse_flags`, and an `app.UsageError` from `main` printed
  as one `error:` line with exit USAGE (absl prints the whole module docstring and exits 1;
  `--help` still does).

  `default_config`: the --config file used when none is given. (A config flag defined with
  a default parses its overrides while the module is imported, before any parser can
  explain them: define it with None and pass the default here.)"""
  if default_config is not None and _config_arg(sys.argv, 'config') is None:
    sys.argv[1:1] = [f'--config={default_config}']
  def wrapped(argv: list[str]) -> int | None:
    try:
      return main(argv)
    except app.UsageError as e:
      _exit_usage(str(e))
  app.run(wrapped, flags_parser=parse_flags)


def deprecated_flag(old: flags.FlagHolder, new: flags.FlagHolder) -> Any:
  """The value of `new`, or of the `old` flag it replaces (with a deprecation line on
  stderr); both given is a usage error."""
  if old.present and new.present:
    raise app.UsageError(f'--{old.name} is the old name of --{new.name}: give only --{new.name}')
  if old.present:
    print(f'warning: --{old.name} is deprecated and will be removed in the next release: '
          f'use --{new.name}', file=sys.stderr)
    return old.value
  return new.value
