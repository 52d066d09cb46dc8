"""The paper's ablations as config overrides, their commands, runs and report.

The library of `python -m experiments.ablations` (see that module for the command
line). Every variant (plus the baseline: the base config unchanged) is one
`python -m alexnet_jax.main --config=BASE --workdir=... --config.X=Y` subprocess run
from the repository root. Commands and paths are written relative to the current
directory (the repository root) when they lie inside it, so reports hold no path of
the machine they ran on.

The ablations (section 3 and 4 of the paper), as config overrides of the base config:
  lrn         no local response normalisation            model.lrn=none
  pooling     non-overlapping 2x2/2 pooling (not 3x3/2)  model.pooling=non_overlapping
  towers      one tower, half the kernels in conv1-4     model.towers=1, mesh.model=1,
              (conv5 and the fc layers keep theirs)      model.conv_widths=<halved>
  lighting    no PCA lighting augmentation               input.pca_lighting=0.0
  activation  tanh instead of ReLU                       model.activation=tanh
  dropout     dropout 0.5 in fc6/fc7 if the base has none, else none
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

BASELINE = 'baseline'
RUNS_SUBDIR = 'runs'
MARKER = 'ablation_run.json'


class NotApplicable(Exception):
  """The ablation would not change the base config (e.g. lrn on a base without LRN)."""


def _lrn(c) -> dict:
  if c.model.lrn == 'none':
    raise NotApplicable('the base config has no LRN already')
  return {'model.lrn': 'none'}


def _pooling(c) -> dict:
  if c.model.pooling == 'non_overlapping':
    raise NotApplicable('the base config pools without overlap already')
  return {'model.pooling': 'non_overlapping'}


def _towers(c) -> dict:
  if c.model.towers != 2:
    raise NotApplicable(f'the base config has model.towers={c.model.towers}, not 2')
  widths = tuple(c.model.conv_widths)
  # Paper, section 6.1: the one-GPU net has half the kernels in each conv layer but
  # the last (which, with the fc layers after it, keeps the parameter count similar).
  halved = tuple(w // 2 for w in widths[:-1]) + (widths[-1],)
  return {'model.towers': 1, 'model.conv_widths': halved, 'mesh.model': 1}


def _lighting(c) -> dict:
  if not c.input.pca_lighting:
    raise NotApplicable('the base config has input.pca_lighting=0 already')
  return {'input.pca_lighting': 0.0}


def _activation(c) -> dict:
  if c.model.activation == 'tanh':
    raise NotApplicable('the base config uses tanh already')
  return {'model.activation': 'tanh'}


def _dropout(c) -> dict:
  # The paper's comparison is with vs without dropout: toggle whatever the base has.
  return {'model.dropout_rate': 0.5 if c.model.dropout_rate == 0 else 0.0}


ABLATIONS: dict[str, tuple[str, Callable[[Any], dict]]] = {
    'lrn': ('no local response normalisation', _lrn),
    'pooling': ('non-overlapping pooling (2x2 stride 2)', _pooling),
    'towers': ('one tower, half the conv1-4 kernels', _towers),
    'lighting': ('no PCA lighting augmentation', _lighting),
    'activation': ('tanh instead of ReLU', _activation),
    'dropout': ('dropout 0.5 toggled (on if the base has none, else off)', _dropout),
}


def parse_sweep(text: str) -> list[str]:
  """Ablation names from 'lrn,pooling'; an unknown name is an error listing the allowed."""
  names = [n.strip() for n in text.split(',') if n.strip()]
  if not names:
    raise ValueError(f'--sweep is empty; allowed names: {", ".join(ABLATIONS)}')
  unknown = [n for n in names if n not in ABLATIONS]
  if unknown:
    raise ValueError(f'unknown ablation(s) {", ".join(unknown)}; allowed: '
                     f'{", ".join(ABLATIONS)}')
  return list(dict.fromkeys(names))   # drop repeats, keep order


def load_config(base: str):
  """The ConfigDict of a config file, `path.py` or `path.py:arg` as main.py takes it."""
  path, _, arg = base.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--base {path!r} not found (run from the repository root?)')
  spec = importlib.util.spec_from_file_location('_ablation_base_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def ablation_overrides(name: str, base_config) -> dict[str, Any]:
  """The config overrides (dotted field -> value) of one ablation of base_config.

  Raises ValueError for an unknown name (listing the allowed ones) and NotApplicable
  if the ablation would leave base_config unchanged.
  """
  if name == BASELINE:
    return {}
  if name not in ABLATIONS:
    raise ValueError(f'unknown ablation {name!r}; allowed: {", ".join(ABLATIONS)}')
  return ABLATIONS[name][1](base_config)


def format_value(value: Any) -> str:
  """A value as ml_collections' --config.X= flag parses it back."""
  if isinstance(value, tuple | list):
    return '(' + ','.join(format_value(v) for v in value) + ('' if len(value) != 1 else ',') \
        + ')'
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return str(value)


def build_command(base: str, workdir: str, overrides: dict[str, Any], *,
                  epochs: float | None = None, python: str = 'python') -> list[str]:
  """argv of `python -m alexnet_jax.main` for one variant (shlex.join it to print)."""
  argv = [python, '-m', 'alexnet_jax.main', f'--config={base}', f'--workdir={workdir}']
  argv += [f'--config.{k}={format_value(v)}' for k, v in overrides.items()]
  if epochs is not None:
    argv.append(f'--config.num_epochs={format_value(float(epochs))}')
  return argv


@dataclasses.dataclass
class Variant:
  name: str
  description: str
  overrides: dict[str, Any]
  workdir: str
  command: list[str]            # with 'python', as printed and recorded

  @property
  def command_line(self) -> str:
    return shlex.join(self.command)


def portable_path(path: str) -> str:
  """`path` relative to the current directory if it lies inside it, else absolute.

  Commands run from the repository root; written this way they hold no absolute path
  of the machine they ran on (main.py makes the workdir absolute itself).
  """
  absolute = os.path.abspath(path)
  cwd = os.getcwd()
  if os.path.commonpath([absolute, cwd]) == cwd:
    return os.path.relpath(absolute, cwd)
  return absolute


def portable_config_arg(base: str) -> str:
  """A --config value (`path.py` or `path.py:arg`) with its path made portable."""
  path, sep, arg = base.partition(':')
  return portable_path(path) + sep + arg


def plan(sweep: Sequence[str], base: str, runs_dir: str, *, epochs: float | None = None,
         base_config=None, log=print) -> list[Variant]:
  """The baseline and each applicable ablation in `sweep`, with their commands.

  Workdirs and the base config's path are written as `portable_path` gives them.
  """
  base_config = load_config(base) if base_config is None else base_config
  base = portable_config_arg(base)
  variants = []
  for name in [BASELINE, *sweep]:
    try:
      overrides = ablation_overrides(name, base_config)
    except NotApplicable as e:
      log(f'skipping {name}: {e}')
      continue
    workdir = portable_path(os.path.join(runs_dir, name))
    description = 'the base config unchanged' if name == BASELINE else ABLATIONS[name][0]
    variants.append(Variant(name, description, overrides, workdir,
                            build_command(base, workdir, overrides, epochs=epochs)))
  return variants


# --- running -----------------------------------------------------------------

def read_marker(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, MARKER)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def write_marker(workdir: str, marker: dict) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, MARKER), 'w') as f:
    json.dump(marker, f, indent=2)


def is_finished(variant: Variant) -> bool:
  marker = read_marker(variant.workdir)
  return bool(marker.get('finished')) and marker.get('command') == variant.command


def fmt_time(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


def run_variant(variant: Variant, index: int, total: int, sweep_start: float) -> bool:
  """Runs (or resumes) one variant; its output goes to <workdir>/train.log."""
  tag = f'[{index}/{total}] {variant.name}'
  if is_finished(variant):
    print(f'{tag}: already finished in {variant.workdir}, skipping')
    return True
  marker = read_marker(variant.workdir)
  previous = marker.get('wall_s', 0.0) if marker.get('command') == variant.command else 0.0
  os.makedirs(variant.workdir, exist_ok=True)
  log_path = os.path.join(variant.workdir, 'train.log')
  print(f'{tag}: {variant.description}\n  {variant.command_line}\n  log: {log_path}',
        flush=True)
  argv = [sys.executable, *variant.command[1:]]
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  start = time.time()
  try:
    with open(log_path, 'a') as log:
      returncode = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
  except KeyboardInterrupt:
    returncode = -2
  wall = previous + time.time() - start
  write_marker(variant.workdir, {'command': variant.command, 'wall_s': wall,
                                  'finished': returncode == 0, 'returncode': returncode})
  status = 'done' if returncode == 0 else f'FAILED (exit {returncode})'
  print(f'{tag}: {status} in {fmt_time(time.time() - start)}; sweep elapsed '
        f'{fmt_time(time.time() - sweep_start)}', flush=True)
  if returncode == -2:
    raise KeyboardInterrupt
  if returncode != 0:
    with open(log_path) as f:
      tail = f.readlines()[-15:]
    print('  last lines of the log:\n' + ''.join('    ' + line for line in tail), flush=True)
  return returncode == 0


# --- report ------------------------------------------------------------------

def summarize(variant: Variant) -> dict:
  """Final/best eval metrics and wall time of a variant's workdir (None where missing)."""
  from alexnet_jax import plotting
  out = {'final_top1': None, 'final_top5': None, 'best_top1': None, 'step': None, 'count': None,
         'epoch': None, 'wall_s': read_marker(variant.workdir).get('wall_s'),
         'finished': is_finished(variant)}
  try:
    records = plotting.read_metrics(variant.workdir)
  except FileNotFoundError:
    return out
  final = plotting.final_eval(records)
  if final is not None:
    out.update(final_top1=final.get('top1'), final_top5=final.get('top5'), step=final['step'],
               count=final.get('count'))
    per_epoch = plotting.steps_per_epoch(records)
    out['epoch'] = final['step'] / per_epoch if per_epoch else None
  out['best_top1'] = plotting.best_eval_top1(records)
  return out


def _pct(x: float | None) -> str:
  return '-' if x is None else f'{100 * x:.1f}%'


def markdown_table(variants: Sequence[Variant], results: dict[str, dict]) -> str:
  lines = ['| variant | overrides | final eval top-1 | final eval top-5 | best eval top-1 '
           '| Δ top-1 vs baseline | epochs | wall time |',
           '|---|---|---|---|---|---|---|---|']
  base_top1 = results.get(BASELINE, {}).get('final_top1')
  for v in variants:
    r = results[v.name]
    overrides = ', '.join(f'`{k}={format_value(x)}`' for k, x in v.overrides.items()) or '-'
    if v.name == BASELINE or r['final_top1'] is None or base_top1 is None:
      delta = '-'
    else:
      delta = f'{100 * (r["final_top1"] - base_top1):+.1f} pp'
    epoch = '-' if r['epoch'] is None else f'{r["epoch"]:g}'
    wall = '-' if r['wall_s'] is None else fmt_time(r['wall_s'])
    name = v.name if r['finished'] else f'{v.name} (unfinished)'
    lines.append(f'| {name} | {overrides} | {_pct(r["final_top1"])} | '
                 f'{_pct(r["final_top5"])} | {_pct(r["best_top1"])} | {delta} | {epoch} | '
                 f'{wall} |')
  return '\n'.join(lines)


def _schedule_note(config) -> str:
  if config.schedule.name == 'step':
    return 'decay x{:g} at epochs {}'.format(
        config.schedule.factor, ', '.join(f'{e:g}' for e in config.schedule.step_epochs))
  if config.schedule.name == 'plateau':
    return f'decay x{config.schedule.factor:g} after {config.schedule.patience} flat evals'
  return 'constant learning rate'


def write_report(variants: Sequence[Variant], root: str, base_name: str,
                 epochs: float | None) -> tuple[str, str | None]:
  """Writes <root>/ablations.md and <root>/ablations.png; returns their paths."""
  from alexnet_jax import plotting
  config_path = base_name
  base_name = portable_config_arg(base_name)
  results = {v.name: summarize(v) for v in variants}
  with_metrics = [v for v in variants if results[v.name]['final_top1'] is not None]
  png = None
  if with_metrics:
    png = plotting.plot_runs([v.workdir for v in with_metrics],
                             os.path.join(root, 'ablations.png'),
                             labels=[v.name for v in with_metrics],
                             title=f'AlexNet ablations ({base_name})')
  length = f'{epochs:g} epochs each' if epochs is not None else "the base config's num_epochs"
  caveats = ['One run (one seed) per variant.']
  base = results.get(BASELINE, {})
  if base.get('final_top1') is not None and base.get('count'):
    p, n = base['final_top1'], base['count']
    caveats.append(f'The eval split has {n:.0f} images: at the baseline\'s top-1 the binomial '
                   f'standard error is about {100 * (p * (1 - p) / n) ** 0.5:.1f} pp per run.')
  if epochs is not None:
    config = load_config(config_path)
    caveats.append(f'num_epochs is overridden ({epochs:g}; the base trains for '
                   f'{config.num_epochs:g}); the rest of its schedule '
                   f'({config.schedule.name}, {_schedule_note(config)}) is unchanged, so '
                   'a shortened run may stop before any decay.')
  text = [
      '# Ablations',
      '',
      f'Base config `{base_name}`, {length}; one run per variant (seed fixed by the config). '
      'Top-1/top-5 are on the eval split; Δ is the final top-1 minus the baseline\'s, in '
      'percentage points; wall time is the training subprocess (compile, training and '
      'evaluation) summed over resumed attempts.',
      '',
      markdown_table(variants, results),
      '',
      ' '.join(caveats),
      '',
      '![curves](ablations.png)' if png else '(no run has evaluated yet: no plot)',
      '',
      'Commands (run from the repository root; re-running one resumes it):',
      '',
      '```sh',
      *[v.command_line for v in variants],
      '```',
      '',
  ]
  md = os.path.join(root, 'ablations.md')
  os.makedirs(root, exist_ok=True)
  with open(md, 'w') as f:
    f.write('\n'.join(text))
  return md, png
