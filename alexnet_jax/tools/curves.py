"""Reading runs' metrics.jsonl and drawing their training curves (`figures curves`,
experiments/ablations.py).

`plot_runs` draws four panels: loss and top-1 accuracy (columns) for the train split
(the logged running means, solid) and the eval split (dashed, with markers) (rows),
against the global step or the epoch; one colour per run. It uses matplotlib's Agg
backend: no display needed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence

import numpy as np

from alexnet_jax.run.workdir import metrics_path

_REQUIRED = ('step', 'split')


def pyplot():
  """matplotlib's pyplot, drawing to files (the Agg backend).

  Imported on the first figure, not with this module: the commands' --help and the code
  that only reads metrics (sweeps, the figures' JSON data) stay fast without matplotlib,
  and only code that writes a PNG chooses the backend."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir`/metrics.jsonl, in file order.

  Raises FileNotFoundError naming the file if it is missing. Lines that are not a
  JSON object with 'step' and 'split' (e.g. a line cut short by a crash) are
  skipped, with one warning giving their count, the file and the first bad line
  number. Blank lines are ignored.
  """
  path = metrics_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no metrics file {path!r}: is {workdir!r} the workdir of a '
                            'run of python -m alexnet_jax.main?')
  records, bad = [], []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        bad.append(number)
        continue
      if not isinstance(record, dict) or any(k not in record for k in _REQUIRED):
        bad.append(number)
        continue
      records.append(record)
  if bad:
    warnings.warn(f'{path}: skipped {len(bad)} malformed line(s) (first: line {bad[0]})',
                  stacklevel=2)
  return records


def split_series(records: Sequence[dict], split: str, key: str) -> tuple[list, list]:
  """(steps, values) of one metric in one split, sorted by step.

  A resumed run can log a step twice (it replays from its last checkpoint); the
  later record wins.
  """
  by_step = {}
  for r in records:
    if r.get('split') == split and isinstance(r.get(key), int | float):
      by_step[int(r['step'])] = float(r[key])
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def steps_per_epoch(records: Sequence[dict]) -> float | None:
  """step / epoch from any train record that logs both (None if none does)."""
  for r in records:
    if r.get('epoch') and r.get('step'):
      return float(r['step']) / float(r['epoch'])
  return None


def final_eval(records: Sequence[dict]) -> dict | None:
  """The eval record with the highest step (None if the run never evaluated)."""
  evals = [r for r in records if r.get('split') == 'eval']
  return max(evals, key=lambda r: r['step']) if evals else None


def best_eval_top1(records: Sequence[dict]) -> float | None:
  values = [r['top1'] for r in records if r.get('split') == 'eval' and 'top1' in r]
  return max(values) if values else None


def default_labels(workdirs: Sequence[str]) -> list[str]:
  """Each workdir's last path component (one more if two runs share it)."""
  names = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  if len(set(names)) == len(names):
    return names
  return [os.path.join(*os.path.normpath(w).split(os.sep)[-2:]) for w in workdirs]


def plot_runs(workdirs: Sequence[str], out_path: str, labels: Sequence[str] | None = None,
              *, x: str = 'step', title: str | None = None) -> str:
  """Plots loss and top-1 (train and eval) of each run; returns out_path (a PNG).

  x is 'step' or 'epoch' (epochs come from the train records' step/epoch ratio).
  """
  if isinstance(workdirs, str):
    workdirs = [workdirs]
  if not workdirs:
    raise ValueError('plot_runs needs at least one workdir')
  if x not in ('step', 'epoch'):
    raise ValueError(f"x={x!r} is invalid; allowed: 'step', 'epoch'")
  labels = list(labels) if labels is not None else default_labels(workdirs)
  if len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} workdirs')
  runs = [read_metrics(w) for w in workdirs]

  plt = pyplot()

  # Columns: loss, top-1; rows: train, eval (a column shares its y axis).
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, sharey='col')
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  panels = (('train', 'loss'), ('eval', 'loss'), ('train', 'top1'), ('eval', 'top1'))
  for i, (records, label) in enumerate(zip(runs, labels, strict=True)):
    color = colors[i % len(colors)]
    per_epoch = steps_per_epoch(records) if x == 'epoch' else 1.0
    if per_epoch is None:
      raise ValueError(f'{metrics_path(workdirs[i])} has no epoch field: use x="step"')
    for ax, (split, key) in zip(axes.T.flat, panels, strict=True):
      steps, values = split_series(records, split, key)
      if not steps:
        continue
      xs = [s / per_epoch for s in steps]
      style = dict(marker='o', markersize=4, linestyle='--') if split == 'eval' else {}
      ax.plot(xs, values, color=color, label=label, linewidth=1.5, **style)
  for ax, (split, key) in zip(axes.T.flat, panels, strict=True):
    ax.set_title(f'{split} {"top-1 accuracy" if key == "top1" else "loss"}')
    ax.grid(True, alpha=0.3)
  for ax in axes[1]:
    ax.set_xlabel(x)
  axes[0][0].legend(loc='best', fontsize='small')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(out_path, dpi=80, format='png')
  plt.close(fig)
  return out_path


def plot_sweep(names: Sequence[str], workdir_groups: Sequence[Sequence[str]], out_path: str,
               *, title: str | None = None) -> str:
  """A sweep over seeds: final eval top-1 per variant (bar: mean over the runs, error bar:
  sample std, dots: each run) and eval top-1 against the epoch (mean over the runs, band:
  ± std where the runs share the evaluation). Returns out_path (a PNG)."""
  if len(names) != len(workdir_groups) or not names:
    raise ValueError(f'{len(names)} names for {len(workdir_groups)} groups of workdirs')
  plt = pyplot()

  fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 5),
                                     gridspec_kw={'width_ratios': [1, 1.3]})
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, (name, workdirs) in enumerate(zip(names, workdir_groups, strict=True)):
    color = colors[i % len(colors)]
    runs = [read_metrics(w) for w in workdirs]
    finals = [final_eval(r) for r in runs]
    top1 = [100 * f['top1'] for f in finals if f is not None and 'top1' in f]
    if top1:
      mean = float(np.mean(top1))
      std = float(np.std(top1, ddof=1)) if len(top1) > 1 else 0.0
      bars.bar(i, mean, color=color, alpha=0.55, yerr=std, capsize=6,
               error_kw={'elinewidth': 1.5})
      bars.scatter([i] * len(top1), top1, color='k', s=14, zorder=3)
    series = {}
    for r in runs:
      per_epoch = steps_per_epoch(r) or 1.0
      for step, value in zip(*split_series(r, 'eval', 'top1'), strict=True):
        series.setdefault(round(step / per_epoch, 3), []).append(100 * value)
    shared = sorted(e for e, v in series.items() if len(v) == len(runs))
    if shared:
      m = np.array([np.mean(series[e]) for e in shared])
      s = np.array([np.std(series[e], ddof=1) if len(series[e]) > 1 else 0.0 for e in shared])
      curves.plot(shared, m, color=color, marker='o', markersize=3, label=f'{name} (n={len(runs)})')
      curves.fill_between(shared, m - s, m + s, color=color, alpha=0.15)
  bars.set_xticks(range(len(names)))
  bars.set_xticklabels(names, rotation=30, ha='right')
  bars.set_ylabel('final eval top-1 (%)')
  bars.set_title('final eval top-1: mean ± std, dots: seeds')
  bars.grid(True, axis='y', alpha=0.3)
  curves.set_xlabel('epoch')
  curves.set_ylabel('eval top-1 (%)')
  curves.set_title('eval top-1: mean over seeds ± std')
  curves.grid(True, alpha=0.3)
  curves.legend(loc='lower right', fontsize='small')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=80, format='png')
  plt.close(fig)
  return out_path
