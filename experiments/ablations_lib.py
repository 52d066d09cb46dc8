"""The paper's ablations (and any grid of config overrides): commands, runs, statistics, report.

The library of `python -m experiments.ablations` (see that module for the command
line). Every variant (plus the baseline: the base config unchanged) is one
`python -m alexnet_jax.main --config=BASE --workdir=... --config.X=Y` subprocess run
from the repository root, once per seed (`--seeds=N`: seeds base_seed .. base_seed+N-1,
`--config.seed=S`, workdir <runs>/<variant>/seed<S>). Commands and paths are written
relative to the current directory (the repository root) when they lie inside it, so
reports hold no path of the machine they ran on.

The named ablations (section 3 and 4 of the paper), as config overrides of the base config:
  lrn         no local response normalisation            model.lrn=none
              and its control, variant lrn_constant:     model.lrn=constant
              the LRN's constant factor k^-beta kept, no normalisation (`CONTROLS`)
  pooling     non-overlapping 2x2/2 pooling (not 3x3/2)  model.pooling=non_overlapping
  towers      one tower, half the kernels in conv1-4     model.towers=1, mesh.model=1,
              (conv5 and the fc layers keep theirs)      model.conv_widths=<halved>
  lighting    no PCA lighting augmentation               input.pca_lighting=0.0
  activation  tanh instead of ReLU                       model.activation=tanh
  dropout     dropout 0.5 in fc6/fc7 if the base has none, else none

Grid variants (`parse_grid`): any `--config.x=` overrides, e.g.
  'model.lrn=caffe; nowd:optimizer.weight_decay=0 model.dropout_rate=0;
   optimizer.learning_rate=0.005|0.02'
(';' separates variants, whitespace the overrides of one variant, an optional 'name:' names
it, and 'a|b' in a value expands to one variant per alternative, the product over keys).

Statistics (`group_stats`, `welch`): per variant the mean and sample std (ddof 1) over
seeds of the final eval top-1/top-5/loss, and against the baseline the difference of the
means, its standard error sqrt(s1^2/n1 + s2^2/n2) and Welch's two-sided t-test p-value;
an ablation with a control in the sweep (lrn: lrn_constant) is also compared with it.

Why the LRN needs a control: model.lrn=none removes the normalisation *and* the formula's
constant factor k^-beta (2^-0.75 = 0.595 for the paper's k=2), so "no LRN" against the
baseline also measures a rescaling of conv1/conv2's outputs. The LRN's normalisation
effect is baseline vs lrn_constant (both have the factor; only the baseline normalises);
lrn vs lrn_constant is the rescaling alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from alexnet_jax.common import fields

BASELINE = 'baseline'
RUNS_SUBDIR = 'runs'
MARKER = 'ablation_run.json'
ALPHA = 0.05          # significance level of the Welch t-test against the baseline


class NotApplicable(Exception):
  """The ablation would not change the base config (e.g. lrn on a base without LRN)."""


def _lrn(c) -> dict:
  if c.model.lrn == 'none':
    raise NotApplicable('the base config has no LRN already')
  return {'model.lrn': 'none'}


def _lrn_constant(c) -> dict:
  # model.lrn=constant multiplies by the paper formula's k^-beta; it is the control only
  # for a base whose LRN has that constant (the paper's, at any lrn_gain).
  if c.model.lrn == 'paper':
    return {'model.lrn': 'constant'}
  reasons = {
      'none': 'the base config has no LRN',
      'constant': 'the base config is the constant control already (model.lrn=constant)',
      'caffe': "the base's 'caffe' LRN has k=1, so its constant factor 1^-0.75 is 1 and "
               "model.lrn=none is its own control (model.lrn=constant is the paper's "
               '2^-0.75)',
      'cuda_convnet': "cuda-convnet's response norms have constant 1 (1^-power = 1): "
                      'model.lrn=constant is the same net as model.lrn=none',
  }
  raise NotApplicable(reasons.get(c.model.lrn, f'model.lrn={c.model.lrn!r} has no control'))


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
  arch = c.model.get('arch', 'alexnet')
  if arch != 'alexnet':
    from alexnet_jax.model import cifar  # only here: the sweep driver needs no jax
    if not any(op.kind == 'fc' and op.act for op in cifar.NETS[arch]):
      raise NotApplicable(f'model.arch={arch!r} has no hidden fully connected layer')
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


# The control variants some ablations are run with (plan puts each right after its
# ablation, under its own name): ablation -> (variant name, description, overrides).
CONTROLS: dict[str, tuple[str, str, Callable[[Any], dict]]] = {
    'lrn': ('lrn_constant', "control for no LRN: the LRN's constant factor k^-beta kept, "
            'no normalisation', _lrn_constant),
}
CONTROL_OF = {control: name for name, (control, _, _) in CONTROLS.items()}


def parse_sweep(text: str, *, allow_empty: bool = False) -> list[str]:
  """Ablation names from 'lrn,pooling'; an unknown name is an error listing the allowed."""
  names = [n.strip() for n in text.split(',') if n.strip()]
  if not names and not allow_empty:
    raise ValueError(f'--sweep is empty; allowed names: {", ".join(ABLATIONS)}')
  unknown = [n for n in names if n not in ABLATIONS]
  if unknown:
    raise ValueError(f'unknown ablation(s) {", ".join(unknown)}; allowed: '
                     f'{", ".join(ABLATIONS)}')
  return list(dict.fromkeys(names))   # drop repeats, keep order


@dataclasses.dataclass(frozen=True)
class GridVariant:
  """A variant given as raw `--config.KEY=VALUE` overrides (values as typed)."""
  name: str
  overrides: dict[str, str]


_NAME_RE = re.compile(r'^[A-Za-z0-9_.=+-]+$')


def _auto_name(overrides: dict[str, str]) -> str:
  parts = []
  for key, value in overrides.items():
    value = re.sub(r'[^A-Za-z0-9_.+-]+', '_', value).strip('_') or 'x'
    parts.append(f'{key.rsplit(".", 1)[-1]}={value}')
  return '+'.join(parts)


def parse_grid(texts: str | Sequence[str], base_config=None) -> list[GridVariant]:
  """Grid variants from one or more strings (see the module docstring for the syntax).

  'KEY=VALUE' or '--config.KEY=VALUE'; KEY must exist in base_config (when given), a
  typo is an error naming it. A name is derived from the overrides unless 'name:' is
  given; names must be unique, be usable as a folder name and not be 'baseline'.
  """
  if isinstance(texts, str):
    texts = [texts]
  variants: list[GridVariant] = []
  for text in texts:
    for chunk in text.split(';'):
      chunk = chunk.strip()
      if not chunk:
        continue
      name = None
      head, sep, rest = chunk.partition(':')
      if sep and '=' not in head:
        name, chunk = head.strip(), rest.strip()
      choices: list[tuple[str, list[str]]] = []
      for item in chunk.split():
        item = item.removeprefix('--config.')
        key, eq, value = item.partition('=')
        if not eq or not key or not value:
          raise ValueError(f'grid override {item!r}: expected KEY=VALUE (e.g. model.lrn=none)')
        if base_config is not None:
          try:
            fields.get_field(base_config, key)
          except (KeyError, AttributeError):
            raise ValueError(f'grid override {item!r}: the base config has no field {key!r}'
                             ) from None
        choices.append((key, value.split('|')))
      if not choices:
        raise ValueError(f'grid variant {name!r} has no overrides')
      keys = [k for k, _ in choices]
      if len(set(keys)) != len(keys):
        raise ValueError(f'grid variant {chunk!r} sets a key twice')
      combos = list(itertools.product(*[v for _, v in choices]))
      for combo in combos:
        overrides = dict(zip(keys, combo, strict=True))
        label = _auto_name(overrides)
        if name:
          label = name if len(combos) == 1 else f'{name}+{label}'
        variants.append(GridVariant(label, overrides))
  names = [v.name for v in variants]
  for n in names:
    if n == BASELINE or n in ABLATIONS or n in CONTROL_OF or not _NAME_RE.match(n):
      raise ValueError(f'grid variant name {n!r} is reserved or not a plain folder name')
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'grid variant names repeat: {", ".join(dupes)}; name them with name:')
  return variants


def parse_sets(texts: Sequence[str], config) -> dict[str, str]:
  """--set=FIELD=VALUE overrides for every run, checked against the config's fields."""
  if not texts:
    return {}
  for t in texts:
    if '|' in t or ';' in t or not t.strip():
      raise ValueError(f'--set={t!r}: expected one FIELD=VALUE (e.g. '
                       '--set=dataset.data_dir=/data), without | or ;')
  try:
    (grid,) = parse_grid(' '.join(t.strip() for t in texts), config)
  except ValueError as e:
    raise ValueError(str(e).replace('grid override', '--set')) from None
  return dict(grid.overrides)


def seed_list(base_seed: int, seeds: int | None) -> list[int | None]:
  """[None] (one run, the config's own seed, no --config.seed flag) for seeds=None,
  else base_seed .. base_seed + seeds - 1."""
  if seeds is None:
    return [None]
  if seeds < 1:
    raise ValueError(f'--seeds={seeds}: need at least 1')
  return [base_seed + i for i in range(seeds)]


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
  if the ablation would leave base_config unchanged. A control's variant name
  (lrn_constant) gives the control's overrides.
  """
  if name == BASELINE:
    return {}
  if name in CONTROL_OF:
    return CONTROLS[CONTROL_OF[name]][2](base_config)
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
  """One run: a variant (name) at one seed."""
  name: str
  description: str
  overrides: dict[str, Any]
  workdir: str
  command: list[str]            # with 'python', as printed and recorded
  seed: int | None = None       # None: the base config's own seed, not overridden

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
         base_config=None, log=print, grid: Sequence[GridVariant] = (),
         seeds: int | None = None, common: dict[str, Any] | None = None) -> list[Variant]:
  """The baseline, each applicable ablation in `sweep` (followed by its control, see
  `CONTROLS`, where the base has one) and each grid variant, once per seed (see
  `seed_list`), with their commands: for each seed in turn, baseline first. `common`
  (`parse_sets`) goes on every command line, the baseline's included; which ablations
  apply is decided on the base config as its file gives it.

  Workdirs are <runs_dir>/<name> (seeds=None) or <runs_dir>/<name>/seed<S>; they and the
  base config's path are written as `portable_path` gives them.
  """
  base_config = load_config(base) if base_config is None else base_config
  base = portable_config_arg(base)
  entries = []
  for name in [BASELINE, *sweep]:
    try:
      overrides = ablation_overrides(name, base_config)
    except NotApplicable as e:
      log(f'skipping {name}: {e}')
      continue
    description = 'the base config unchanged' if name == BASELINE else ABLATIONS[name][0]
    entries.append((name, description, overrides))
    if name in CONTROLS:
      control, description, _ = CONTROLS[name]
      try:
        entries.append((control, description, ablation_overrides(control, base_config)))
      except NotApplicable as e:
        log(f'no control {control} for {name}: {e}')
  for g in grid:
    entries.append((g.name, 'grid: ' + ' '.join(f'{k}={v}' for k, v in g.overrides.items()),
                    dict(g.overrides)))
  return expand(entries, base, runs_dir, seed_list(int(base_config.seed), seeds),
                epochs=epochs, common=common)


def expand(entries: Sequence[tuple[str, str, dict[str, Any]]], base: str, runs_dir: str,
           seeds: Sequence[int | None], *, epochs: float | None = None,
           common: dict[str, Any] | None = None) -> list[Variant]:
  """One Variant per (name, description, overrides) entry and seed, seed-major, with its
  workdir (<runs_dir>/<name>[/seed<S>], as `portable_path` gives it) and command; `common`
  overrides go first on every command line (they are not part of a variant's overrides)."""
  variants = []
  # Seed-major: every variant's first seed runs before any second seed, so a sweep stopped
  # early still compares all variants.
  for seed in seeds:
    for name, description, overrides in entries:
      workdir = os.path.join(runs_dir, name) if seed is None else os.path.join(
          runs_dir, name, f'seed{seed}')
      workdir = portable_path(workdir)
      run_overrides = {**(common or {}), **overrides}
      if seed is not None:
        run_overrides['seed'] = seed
      variants.append(Variant(name, description, overrides, workdir,
                              build_command(base, workdir, run_overrides, epochs=epochs),
                              seed))
  return variants


def group(variants: Sequence[Variant]) -> dict[str, list[Variant]]:
  """Runs by variant name, in plan order."""
  out: dict[str, list[Variant]] = {}
  for v in variants:
    out.setdefault(v.name, []).append(v)
  return out


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


def make_runs_dir(runs_dir: str, owner: str) -> None:
  """Creates the folder of the workdirs with a .gitignore of '*': checkpoints and logs of
  a sweep are never committed by accident (its reports are)."""
  os.makedirs(runs_dir, exist_ok=True)
  with open(os.path.join(runs_dir, '.gitignore'), 'w') as f:
    f.write(f'# checkpoints and logs of {owner}: never commit them\n*\n')


def is_finished(variant: Variant) -> bool:
  marker = read_marker(variant.workdir)
  return bool(marker.get('finished')) and marker.get('command') == variant.command


def fmt_time(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


def run_variant(variant: Variant, index: int, total: int, sweep_start: float,
                extra_env: dict[str, str] | None = None) -> bool:
  """Runs (or resumes) one variant; its output goes to <workdir>/train.log. `extra_env`
  places it on its own accelerators (experiments/placement.py)."""
  tag = f'[{index}/{total}] {variant.name}'
  if is_finished(variant):
    print(f'{tag}: already finished in {variant.workdir}, skipping')
    return True
  marker = read_marker(variant.workdir)
  previous = marker.get('wall_s', 0.0) if marker.get('command') == variant.command else 0.0
  os.makedirs(variant.workdir, exist_ok=True)
  log_path = os.path.join(variant.workdir, 'train.log')
  on = ''.join(f'\n  on: {k}={v}' for k, v in (extra_env or {}).items()
               if k in ('CUDA_VISIBLE_DEVICES', 'TPU_VISIBLE_CHIPS'))
  print(f'{tag}: {variant.description}\n  {variant.command_line}\n  log: {log_path}{on}',
        flush=True)
  argv = [sys.executable, *variant.command[1:]]
  env = dict(os.environ, PYTHONUNBUFFERED='1', **(extra_env or {}))
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


# --- statistics --------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
  """(mean, sample std with ddof 1); std is None for fewer than 2 values, both for none."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None, None
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var)


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float | None]:
  """mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b), Welch's t, the
  Welch-Satterthwaite degrees of freedom and the two-sided p-value (scipy's t
  distribution). None where a side has fewer than 2 values; with zero variance on both
  sides p is 0 for different means and 1 for equal ones."""
  ma, sa = mean_std(a)
  mb, sb = mean_std(b)
  out = {'diff': None if ma is None or mb is None else ma - mb, 'se': None, 't': None,
         'df': None, 'p': None}
  if sa is None or sb is None:
    return out
  na, nb = len(a), len(b)
  va, vb = sa * sa / na, sb * sb / nb
  se = math.sqrt(va + vb)
  out['se'] = se
  if se == 0:
    out['p'] = 0.0 if out['diff'] != 0 else 1.0
    return out
  t = out['diff'] / se
  df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1))
  from scipy import stats
  out.update(t=t, df=df, p=float(2 * stats.t.sf(abs(t), df)))
  return out


def significance(p: float | None, comparisons: int, alpha: float = ALPHA) -> str:
  """'yes' (p < alpha / comparisons, Bonferroni), 'p<alpha only' (not after the
  correction), 'no', or 'n/a' (no p-value)."""
  if p is None:
    return 'n/a'
  if p < alpha / max(1, comparisons):
    return 'yes'
  if p < alpha:
    return f'p<{alpha:g} only'
  return 'no'


# --- report ------------------------------------------------------------------

def summarize(variant: Variant) -> dict:
  """Final/best eval metrics and wall time of a run's workdir (None where missing)."""
  from alexnet_jax.tools import curves as plotting
  out = {'seed': variant.seed, 'workdir': variant.workdir, 'final_top1': None,
         'final_top5': None, 'final_loss': None, 'best_top1': None, 'step': None,
         'count': None, 'epoch': None, 'wall_s': read_marker(variant.workdir).get('wall_s'),
         'finished': is_finished(variant)}
  try:
    records = plotting.read_metrics(variant.workdir)
  except FileNotFoundError:
    return out
  final = plotting.final_eval(records)
  if final is not None:
    out.update(final_top1=final.get('top1'), final_top5=final.get('top5'),
               final_loss=final.get('loss'), step=final['step'], count=final.get('count'))
    per_epoch = plotting.steps_per_epoch(records)
    out['epoch'] = final['step'] / per_epoch if per_epoch else None
  out['best_top1'] = plotting.best_eval_top1(records)
  return out


def group_stats(runs: Sequence[dict]) -> dict:
  """Mean, std and n over the runs (seeds) of one variant that finished with an eval."""
  done = [r for r in runs if r['finished'] and r['final_top1'] is not None]
  out = {'n': len(done)}
  for key in ('final_top1', 'final_top5', 'final_loss'):
    mean, std = mean_std([r[key] for r in done if r[key] is not None])
    out[f'{key}_mean'], out[f'{key}_std'] = mean, std
  walls = [r['wall_s'] for r in done if r['wall_s'] is not None]
  out['wall_s_mean'] = sum(walls) / len(walls) if walls else None
  return out


def results(variants: Sequence[Variant], base_name: str, epochs: float | None) -> dict:
  """Everything the report shows, as the JSON written next to it (see write_report)."""
  groups = group(variants)
  per_run = {v.workdir: summarize(v) for v in variants}

  def top1s(name: str) -> list[float]:
    rows = [per_run[v.workdir] for v in groups.get(name, [])]
    return [r['final_top1'] for r in rows if r['finished'] and r['final_top1'] is not None]

  # Each ablation whose control is in the sweep is compared with it too (one more test).
  controlled = {name: CONTROLS[name][0] for name in groups
                if name in CONTROLS and CONTROLS[name][0] in groups}
  comparisons = len([n for n in groups if n != BASELINE]) + len(controlled)

  def versus(name: str, other: str) -> dict:
    w = welch(top1s(name), top1s(other))
    return {'diff_top1': w['diff'], 'se': w['se'], 't': w['t'], 'df': w['df'],
            'p_welch': w['p'], 'significant': significance(w['p'], comparisons)}

  out_variants = []
  for name, runs in groups.items():
    rows = [per_run[v.workdir] for v in runs]
    stats = group_stats(rows)
    entry = {'name': name, 'description': runs[0].description,
             'overrides': {k: format_value(x) for k, x in runs[0].overrides.items()},
             **stats, 'runs': [{**r, 'command': shlex.join(v.command)}
                               for r, v in zip(rows, runs, strict=True)]}
    if name != BASELINE:
      entry['vs_baseline'] = versus(name, BASELINE)
    if name in controlled:
      entry['vs_control'] = {'control': controlled[name], **versus(name, controlled[name])}
    out_variants.append(entry)
  return {
      'base': portable_config_arg(base_name),
      'epochs': epochs,
      'seeds': sorted({v.seed for v in variants if v.seed is not None}) or None,
      'metric': 'final eval top-1/top-5/loss (the last evaluation of each run)',
      'std': 'sample standard deviation over seeds (ddof 1)',
      'test': ("Welch's two-sided t-test of the final top-1 against the baseline's"
               + (" (and, in vs_control, against the ablation's control)" if controlled
                  else '') + '; '
               f'significant = p < {ALPHA:g} / {comparisons} (Bonferroni over the '
               f'{comparisons} comparisons)'),
      'variants': out_variants,
  }


def _pct(x: float | None) -> str:
  return '-' if x is None else f'{100 * x:.1f}%'


def _pm(mean: float | None, std: float | None) -> str:
  if mean is None:
    return '-'
  return f'{100 * mean:.1f}' + ('' if std is None else f' ± {100 * std:.1f}')


def _versus_cells(vs: dict | None) -> list[str]:
  """Δ (± SE) in pp, Welch p and the significance of a vs_baseline/vs_control entry."""
  if vs is None or vs['diff_top1'] is None:
    return ['-', '-', '-']
  delta = f'{100 * vs["diff_top1"]:+.1f}' + (
      '' if vs['se'] is None else f' ± {100 * vs["se"]:.1f}')
  return [delta, '-' if vs['p_welch'] is None else f'{vs["p_welch"]:.3g}', vs['significant']]


def markdown_table(report: dict) -> str:
  """The report's table; with a control in the sweep (lrn_constant), three more columns
  compare each controlled ablation with its control."""
  controlled = any('vs_control' in e for e in report['variants'])
  head = ['variant', 'overrides', 'n', 'top-1 % (mean ± std)', 'top-1 per seed',
          'top-5 % (mean ± std)', 'Δ top-1 vs baseline (± SE), pp', 'Welch p', 'beyond noise']
  if controlled:
    head += ['Δ top-1 vs its control (± SE), pp', 'Welch p (control)',
             'beyond noise (control)']
  head.append('wall time per run')
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for entry in report['variants']:
    overrides = ', '.join(f'`{k}={x}`' for k, x in entry['overrides'].items()) or '-'
    per_seed = ', '.join(
        ('' if r['seed'] is None else f's{r["seed"]}: ') + _pct(r['final_top1'])
        + ('' if r['finished'] else ' (unfinished)') for r in entry['runs'])
    cells = [entry['name'], overrides, str(entry['n']),
             _pm(entry['final_top1_mean'], entry['final_top1_std']), per_seed,
             _pm(entry['final_top5_mean'], entry['final_top5_std']),
             *_versus_cells(entry.get('vs_baseline'))]
    if controlled:
      vs = entry.get('vs_control')
      cells += _versus_cells(vs)
      if vs is not None:
        cells[-3] = f'{cells[-3]} (vs {vs["control"]})'
    cells.append('-' if entry['wall_s_mean'] is None else fmt_time(entry['wall_s_mean']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def control_notes(report: dict) -> list[str]:
  """What each controlled comparison measures, with the numbers (the LRN: which of the
  three differences is its normalisation effect)."""
  by_name = {e['name']: e for e in report['variants']}
  notes = []
  lrn, control = by_name.get('lrn'), by_name.get(CONTROLS['lrn'][0])
  if lrn is None or control is None:
    return notes
  pp = lambda vs: ('-' if vs is None or vs['diff_top1'] is None
                   else f'{100 * vs["diff_top1"]:+.1f} pp')
  effect = control.get('vs_baseline')
  effect = None if effect is None or effect['diff_top1'] is None else {
      **effect, 'diff_top1': -effect['diff_top1']}
  notes.append(
      '**LRN: compare the baseline with `lrn_constant`, not with `lrn`.** `model.lrn=none` '
      '(`lrn`) removes the normalisation *and* the formula\'s constant factor k^-β '
      '(2^-0.75 = 0.595 for the paper\'s k=2), so baseline vs `lrn` is confounded with a '
      'rescaling of the normalised layers\' outputs. `model.lrn=constant` (`lrn_constant`) '
      'keeps that factor without normalising, so the LRN\'s normalisation effect is '
      f'baseline - lrn_constant = {pp(effect)} (the sign-reversed Δ of the `lrn_constant` '
      f'row); lrn - lrn_constant = {pp(lrn.get("vs_control"))} is the rescaling alone, and '
      f'lrn - baseline = {pp(lrn.get("vs_baseline"))} is both together.')
  return notes


def _schedule_note(config) -> str:
  if config.schedule.name == 'step':
    return 'decay x{:g} at epochs {}'.format(
        config.schedule.factor, ', '.join(f'{e:g}' for e in config.schedule.step_epochs))
  if config.schedule.name == 'plateau':
    return f'decay x{config.schedule.factor:g} after {config.schedule.patience} flat evals'
  return 'constant learning rate'


def write_report(variants: Sequence[Variant], root: str, base_name: str,
                 epochs: float | None) -> tuple[str, str | None]:
  """Writes <root>/ablations.md, <root>/ablations.json and <root>/ablations.png (final
  top-1 per variant, mean ± std over seeds with the per-seed values, and eval curves);
  returns the paths of the Markdown and the plot (None before any run has evaluated)."""
  from alexnet_jax.tools import curves as plotting
  config_path = base_name
  base_name = portable_config_arg(base_name)
  report = results(variants, config_path, epochs)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'ablations.json'), 'w') as f:
    json.dump(report, f, indent=1)
  groups = group(variants)
  # The plot shows what the table counts: finished runs that evaluated.
  with_metrics = {name: [v.workdir for v in runs
                         if is_finished(v) and summarize(v)['final_top1'] is not None]
                  for name, runs in groups.items()}
  with_metrics = {k: w for k, w in with_metrics.items() if w}
  png = None
  if with_metrics:
    png = plotting.plot_sweep(list(with_metrics), list(with_metrics.values()),
                              os.path.join(root, 'ablations.png'),
                              title=f'AlexNet ablations ({base_name})')
  length = f'{epochs:g} epochs each' if epochs is not None else "the base config's num_epochs"
  seeds = report['seeds']
  seed_note = (f'{len(seeds)} seeds per variant ({", ".join(map(str, seeds))}: '
               '`--config.seed`, which sets the initialisation, the data order, the '
               'augmentation and the dropout masks)' if seeds else
               'one run (one seed, fixed by the config) per variant')
  caveats = []
  base = next((e for e in report['variants'] if e['name'] == BASELINE), None)
  if base and base['runs'] and base['runs'][0].get('count') and base['final_top1_mean']:
    p, n = base['final_top1_mean'], base['runs'][0]['count']
    caveats.append(f'The eval split has {n:.0f} images: at the baseline\'s top-1 the binomial '
                   f'standard error of one evaluation is about '
                   f'{100 * (p * (1 - p) / n) ** 0.5:.1f} pp.')
  if epochs is not None:
    config = load_config(config_path)
    caveats.append(f'num_epochs is overridden ({epochs:g}; the base trains for '
                   f'{config.num_epochs:g}); the rest of its schedule '
                   f'({config.schedule.name}, {_schedule_note(config)}) is unchanged, so '
                   'a shortened run may stop before any decay.')
  comparisons = len([e for e in report['variants'] if e['name'] != BASELINE]) + len(
      [e for e in report['variants'] if 'vs_control' in e])
  text = [
      '# Ablations',
      '',
      f'Base config `{base_name}`, {length}; {seed_note}. Top-1/top-5 are the final '
      'evaluation on the eval split; mean ± sample std (ddof 1) over seeds, and each seed\'s '
      'top-1. Δ is the difference of the mean top-1 to the baseline\'s in percentage points, '
      '± its standard error sqrt(s1²/n1 + s2²/n2). Welch p: Welch\'s two-sided t-test of the '
      'per-seed top-1 against the baseline\'s. Beyond noise: "yes" if p < '
      f'{ALPHA:g}/{comparisons} (Bonferroni over the {comparisons} comparisons), '
      f'"p<{ALPHA:g} only" if significant only without that correction, else "no" (with 3 '
      'seeds the test only detects differences of a few standard deviations). Wall time: '
      'the training subprocess (compile, training and evaluation), mean over seeds.',
      '',
      markdown_table(report),
      '',
      *[line for note in control_notes(report) for line in (note, '')],
      ' '.join(caveats),
      '',
      '![final top-1 and curves](ablations.png)' if png else
      '(no run has evaluated yet: no plot)',
      '',
      'Per-seed numbers, statistics and commands: `ablations.json`. Commands (run from the '
      'repository root; re-running one resumes it):',
      '',
      '```sh',
      *[v.command_line for v in variants],
      '```',
      '',
  ]
  md = os.path.join(root, 'ablations.md')
  with open(md, 'w') as f:
    f.write('\n'.join(text))
  return md, png
