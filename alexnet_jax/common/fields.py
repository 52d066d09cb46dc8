"""Config fields by their dotted names ('model.lrn'), and the error that names one.

The command line, the ablation sweeps, the benchmarks, the figures and the tests all
speak of a field as `section.name`; this is the one reading of that name, so a sweep's
override, a flag and an error message mean the same field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def get_field(config: Any, dotted: str) -> Any:
  """config['a']['b'] for 'a.b' (a ConfigDict or nested dicts)."""
  for part in dotted.split('.'):
    config = config[part]
  return config


def set_fields(config: Any, overrides: Mapping[str, Any]) -> Any:
  """Sets each dotted field of `overrides` ({'model.lrn': 'none'}) in `config`, in place;
  returns `config` (for chaining in a config file or a test)."""
  for dotted, value in overrides.items():
    parent, _, leaf = dotted.rpartition('.')
    (get_field(config, parent) if parent else config)[leaf] = value
  return config


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'model': {'lrn': 'none'}} -> {'model.lrn': 'none'} (lists kept as values)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def refuse(field: str, value: Any, allowed: str) -> ValueError:
  """The error for a bad value: the field, the value, what is allowed, how to set it."""
  return ValueError(f'{field}={value!r} is invalid; allowed: {allowed}. '
                    f'Override it with --config.{field}=...')


def check_choice(field: str, value: Any, allowed: Sequence[Any]) -> None:
  """Refuses `value` unless `allowed` lists it (True is not 1 here)."""
  if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
    raise refuse(field, value, ', '.join(map(repr, allowed)))
