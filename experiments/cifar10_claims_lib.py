"""The paper's CIFAR-10 claims: plans, runs and result files (`experiments/cifar10_claims.py`).

Three claims, each a set of `python -m alexnet_jax.main` runs built and run with the
machinery of experiments/ablations_lib.py (commands, workdirs <out>/runs/<claim>/...,
skipping finished runs, resuming interrupted ones, mean ± std and Welch's t-test):

- figure1 (section 3.1, Figure 1): configs/cifar10_figure1.py with model.activation=relu
  and tanh. A sweep of the learning rate (`rates`, one seed, `sweep_epochs`) picks per
  activation the rate that reaches 25% training error in the fewest epochs (never reached
  by any rate: the lowest training error at the sweep's last epoch); then `seeds` runs per
  activation at that rate for `epochs`. An epoch's training error is the step-weighted
  mean of the running training error (1 - top-1 of the training batches, in training
  mode) the loop logs every log_every_steps (`epoch_train_errors`); epochs to 25% is the
  first whole epoch whose error is at or below 25%.
- lrn (section 3.3): configs/cifar10_conv_local.py with model.lrn=cuda_convnet (with_lrn),
  none (without_lrn) and constant (constant_control: cuda-convnet's norm with a zero scale
  is the constant 1^-0.75 = 1, the same net as without_lrn). With `epochs` below the
  config's 320 the rate drops move with it: at epochs x 300/320 and x 310/320. Validation
  error: the final checkpoint on the held-out split, centre crop and 10 crops
  (`python -m alexnet_jax.evaluate --crops=1,10`).
- dropout (section 4.2): configs/cifar10_dropout.py with model.dropout_rate=0.5 and 0.0.
  Training error: the final checkpoint on the training split in eval mode (`evaluate
  --split=train --crops=1`); validation error: the final evaluation of the run.

Errors are fractions (0.11 is 11%). Every result file holds the commands (training and
evaluation), the machine (benchmarks/machine.py's describe(), recorded when the runs ran),
the schedule and the seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from alexnet_jax.common import exits
from experiments import ablations_lib as lib

TARGET_ERROR = 0.25
ACTIVATIONS = ('relu', 'tanh')
# Doubling steps wide enough to bracket both activations' best rates: on CIFAR-10 (2-epoch
# sweep, Zen 5, 2026-12-04) ReLU trained fastest at 0.004 (0.008 slower, 0.032 stuck at
# chance, 0.064 diverged) and tanh at 0.032 (0.064 slower): tanh takes an 8x higher rate.
DEFAULT_RATES = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)
UNSWEPT = 'SWEPT'     # the rate in a dry run's seed commands before the sweep has run


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim's config, its full-length schedule and its seeds (the defaults of the command)."""
  config: str
  epochs: float
  seeds: int
  paper: str


CLAIMS: dict[str, Claim] = {
    'figure1': Claim('configs/cifar10_figure1.py', 80.0, 2,
                     'ReLU reaches 25% training error six times faster than tanh'),
    'lrn': Claim('configs/cifar10_conv_local.py', 320.0, 3,
                 '11% test error with response normalization, 13% without'),
    'dropout': Claim('configs/cifar10_dropout.py', 100.0, 2,
                     'without dropout the net overfits substantially'),
}
LRN_VARIANTS = {
    'with_lrn': ('response normalization (conv-local-11pct)', {'model.lrn': 'cuda_convnet'}),
    'without_lrn': ('no response normalization (conv-local-13pct)', {'model.lrn': 'none'}),
    'constant_control': ('the norm replaced by its constant 1^-0.75 = 1 (= without_lrn)',
                         {'model.lrn': 'constant'}),
}
PAPER_LRN_ERROR = {'with_lrn': 0.11, 'without_lrn': 0.13, 'constant_control': 0.13}
DROPOUT_VARIANTS = {
    'with_dropout': ('dropout 0.5 after the hidden fc layer', {'model.dropout_rate': 0.5}),
    'without_dropout': ('no dropout', {'model.dropout_rate': 0.0}),
}


@dataclasses.dataclass
class Run:
  """One training run and the evaluations of its final checkpoint that follow it."""
  variant: lib.Variant
  evals: list[list[str]] = dataclasses.field(default_factory=list)   # argv, with 'python'
  stage: str = 'main'          # figure1: 'sweep' or 'main'

  @property
  def commands(self) -> list[str]:
    return [self.variant.command_line] + [shlex.join(e) for e in self.evals]


@dataclasses.dataclass
class Plan:
  """Everything a claim runs and reports: its runs in order, the settings behind them."""
  claim: str
  config: str
  runs_dir: str
  epochs: float
  seeds: list[int]
  common: dict[str, Any]
  runs: list[Run]
  sweep_epochs: float | None = None
  rates: list[float] | None = None
  schedule: str = ''


# --- planning ---------------------------------------------------------------------------

parse_sets = lib.parse_sets    # shared with experiments.ablations


def scaled_step_epochs(config, epochs: float) -> tuple[float, ...]:
  """The config's rate drops moved in proportion to a shortened (or lengthened) schedule:
  conv-local's drops at 300 and 310 of 320 epochs become epochs x 300/320 and x 310/320."""
  factor = epochs / float(config.num_epochs)
  return tuple(round(e * factor, 4) for e in config.schedule.step_epochs)


def schedule_text(config, epochs: float, common: dict) -> str:
  if config.schedule.name == 'step':
    drops = common.get('schedule.step_epochs', tuple(config.schedule.step_epochs))
    return (f'{epochs:g} epochs, rate x{config.schedule.factor:g} at epochs '
            + ', '.join(f'{e:g}' for e in drops))
  return f'{epochs:g} epochs at a constant learning rate'


def _eval_argv(workdir: str, crops: str, split: str | None) -> list[str]:
  name = f'eval_{split or "validation"}_latest.json'
  argv = ['python', '-m', 'alexnet_jax.evaluate', f'--workdir={workdir}', f'--crops={crops}']
  if split:
    argv.append(f'--split={split}')
  return argv + [f'--json={os.path.join(workdir, name)}']


def _rate_name(act: str, rate: float | str) -> str:
  return f'{act}_lr{rate:g}' if isinstance(rate, float | int) else f'{act}_lr{rate}'


def plan(claim: str, folder: str, out: str, *, epochs: float | None = None,
         seeds: int | None = None, sets: Sequence[str] = (),
         rates: Sequence[float] | None = None, sweep_epochs: float | None = None,
         chosen: dict[str, float] | None = None) -> Plan:
  """The runs of `claim` (figure1: the sweep, then the seed runs at the `chosen` rate per
  activation, or at UNSWEPT when none is given). Raises ValueError for bad settings."""
  if claim not in CLAIMS:
    raise ValueError(f'unknown claim {claim!r}; allowed: {", ".join(CLAIMS)}')
  spec = CLAIMS[claim]
  config = lib.load_config(spec.config)
  epochs = float(spec.epochs if epochs is None else epochs)
  if epochs <= 0:
    raise ValueError(f'--epochs={epochs:g}: must be > 0')
  seed_values = lib.seed_list(int(config.seed), spec.seeds if seeds is None else seeds)
  common = {'dataset.folder': lib.portable_path(folder)}
  if config.schedule.name == 'step' and epochs != float(config.num_epochs):
    common['schedule.step_epochs'] = scaled_step_epochs(config, epochs)
  common.update(parse_sets(sets, config))
  runs_dir = os.path.join(out, lib.RUNS_SUBDIR, claim)
  base = lib.portable_config_arg(spec.config)
  result = Plan(claim, base, lib.portable_path(runs_dir), epochs, seed_values, common, [],
                schedule=schedule_text(config, epochs, common))
  if claim == 'figure1':
    rates = list(DEFAULT_RATES if rates is None else rates)
    if not rates or any(r <= 0 for r in rates):
      raise ValueError(f'--rates={",".join(map(str, rates))}: give one or more rates > 0')
    # By default each sweep run is as long as a seed run and stops at 25% like one, so the
    # sweep picks by the claim's own measure, epochs to 25%. A shorter sweep (cheaper)
    # picks by the training error at its end: early speed, which favours high rates that
    # later plateau.
    sweep_epochs = float(epochs if sweep_epochs is None else sweep_epochs)
    if sweep_epochs <= 0:
      raise ValueError(f'--sweep_epochs={sweep_epochs:g}: must be > 0')
    result.rates, result.sweep_epochs = rates, sweep_epochs
    stop = {'stop_at_train_error': TARGET_ERROR} if sweep_epochs >= epochs else {}
    sweep = [(_rate_name(act, r), f'{act}, learning rate {r:g} (sweep)',
              {**stop, 'model.activation': act, 'optimizer.learning_rate': r})
             for act in ACTIVATIONS for r in rates]
    for v in lib.expand(sweep, base, os.path.join(runs_dir, 'sweep'), seed_values[:1],
                        epochs=sweep_epochs, common=common):
      result.runs.append(Run(v, stage='sweep'))
    chosen = chosen or {}
    # A seed run ends at the first epoch at or below the target (train.py,
    # stop_at_train_error): the rate is constant, so the epochs after it change nothing the
    # claim measures, and tanh's cap stays affordable.
    entries = [(_rate_name(act, chosen.get(act, UNSWEPT)), f'{act} at the swept rate',
                {'stop_at_train_error': TARGET_ERROR, 'model.activation': act,
                 'optimizer.learning_rate': chosen.get(act, UNSWEPT)})
               for act in ACTIVATIONS]
    for v in lib.expand(entries, base, runs_dir, seed_values, epochs=epochs, common=common):
      result.runs.append(Run(v))
    return result
  variants = LRN_VARIANTS if claim == 'lrn' else DROPOUT_VARIANTS
  entries = [(name, description, overrides) for name, (description, overrides)
             in variants.items()]
  for v in lib.expand(entries, base, runs_dir, seed_values, epochs=epochs, common=common):
    evals = ([_eval_argv(v.workdir, '1,10', None)] if claim == 'lrn' else
             [_eval_argv(v.workdir, '1', 'train')])
    result.runs.append(Run(v, evals))
  return result


# --- running ----------------------------------------------------------------------------

def diverged(variant: lib.Variant) -> bool:
  """The run stopped on a non-finite loss (exit status DIVERGED): a result, not retried."""
  marker = lib.read_marker(variant.workdir)
  return marker.get('command') == variant.command and marker.get('returncode') == exits.DIVERGED


def _eval_json(argv: Sequence[str]) -> str:
  return next(a for a in argv if a.startswith('--json=')).split('=', 1)[1]


def eval_done(workdir: str, argv: Sequence[str]) -> bool:
  """The evaluation's JSON exists and was written after the training run last ended."""
  path, marker = _eval_json(argv), os.path.join(workdir, lib.MARKER)
  return (os.path.isfile(path) and os.path.isfile(marker)
          and os.path.getmtime(path) >= os.path.getmtime(marker))


def execute(runs: Sequence[Run], start: float) -> list[str]:
  """Runs (or resumes, or skips) each training run, then its evaluations; returns the
  names of what failed (a diverged figure1 sweep run is a result, not a failure)."""
  failed = []
  for i, run in enumerate(runs, start=1):
    v = run.variant
    name = f'{v.name}/seed{v.seed}' if v.seed is not None else v.name
    if run.stage == 'sweep' and diverged(v):
      print(f'[{i}/{len(runs)}] {name}: diverged before (a result of the sweep), skipping')
      continue
    if not lib.run_variant(v, i, len(runs), start):
      if not (run.stage == 'sweep' and diverged(v)):
        failed.append(name)
      continue
    for argv in run.evals:
      if eval_done(v.workdir, argv):
        continue
      print(f'  {shlex.join(argv)}', flush=True)
      with open(os.path.join(v.workdir, 'evaluate.log'), 'a') as log:
        code = subprocess.call([sys.executable, *argv[1:]], stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ,
                                                                  PYTHONUNBUFFERED='1'))
      if code != 0:
        print(f'  evaluation FAILED (exit {code}); log: {v.workdir}/evaluate.log', flush=True)
        failed.append(f'{name} (evaluation)')
  return failed


MACHINE_FILE = 'machine.json'


def describe_machine() -> dict:
  """benchmarks/machine.py's describe() from a subprocess: this process never starts a JAX
  backend (on a GPU it would hold memory the training subprocesses need)."""
  code = 'import json; from benchmarks import machine; print(json.dumps(machine.describe()))'
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false', TF_CPP_MIN_LOG_LEVEL='2')
  try:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (subprocess.SubprocessError, ValueError, IndexError) as e:
    return {'error': f'could not describe the machine: {e}'}


def record_machine(runs_dir: str) -> None:
  """Writes the machine the runs ran on next to them, for reports written later."""
  os.makedirs(runs_dir, exist_ok=True)
  with open(os.path.join(runs_dir, MACHINE_FILE), 'w') as f:
    json.dump(describe_machine(), f, indent=1)


def read_machine(runs_dir: str) -> dict:
  try:
    with open(os.path.join(runs_dir, MACHINE_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {**describe_machine(), 'note': 'described when the report was written: no record '
            'of the machine the runs ran on'}


# --- reading runs -----------------------------------------------------------------------

def epoch_train_errors(records: Sequence[dict]) -> list[float]:
  """The training error of each whole epoch the records cover: the mean of the logged
  running errors (1 - train top1), each weighted by the steps of that epoch it covers (a
  row logged at step s covers the steps after the previous row up to s). Exact when
  log_every_steps divides the steps per epoch; an epoch not yet covered is left out."""
  from alexnet_jax.tools import curves
  steps, top1 = curves.split_series(records, 'train', 'top1')
  per_epoch = curves.steps_per_epoch(records)
  if not steps or not per_epoch:
    return []
  rows, previous = [], 0
  for s, t in zip(steps, top1, strict=True):
    rows.append((previous, s, 1.0 - t))
    previous = s
  errors = []
  for k in range(1, int(steps[-1] / per_epoch + 1e-9) + 1):
    lo, hi = (k - 1) * per_epoch, k * per_epoch
    weights = [(max(0.0, min(b, hi) - max(a, lo)), e) for a, b, e in rows]
    total = sum(w for w, _ in weights)
    errors.append(sum(w * e for w, e in weights) / total if total else math.nan)
  return errors


def epoch_val_errors(records: Sequence[dict]) -> tuple[list[float], list[float]]:
  """(epochs, 1 - eval top-1) of the run's evaluations."""
  from alexnet_jax.tools import curves
  steps, top1 = curves.split_series(records, 'eval', 'top1')
  per_epoch = curves.steps_per_epoch(records) or 1.0
  return [s / per_epoch for s in steps], [1.0 - t for t in top1]


def epochs_to_target(errors: Sequence[float], target: float = TARGET_ERROR) -> int | None:
  """The first whole epoch (1-based) whose training error is at or below `target`."""
  from alexnet_jax.tools import figures
  hit = figures.first_reaching(list(range(1, len(errors) + 1)), errors, target)
  return None if hit is None else int(hit)


def _records(workdir: str) -> list[dict]:
  from alexnet_jax.tools import curves
  try:
    return curves.read_metrics(workdir)
  except FileNotFoundError:
    return []


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def run_summary(run: Run) -> dict:
  """A run's curves and final numbers, as the result files show them."""
  v = run.variant
  records = _records(v.workdir)
  train = epoch_train_errors(records)
  val_epochs, val = epoch_val_errors(records)
  status = ('finished' if lib.is_finished(v) else 'diverged' if diverged(v) else
            'unfinished')
  out = {'seed': v.seed, 'workdir': v.workdir, 'status': status,
         'train_error_per_epoch': train, 'val_epochs': val_epochs, 'val_error': val,
         'final_val_error': val[-1] if val else None,
         'final_running_train_error': train[-1] if train else None}
  for argv in run.evals:
    r = _read_json(_eval_json(argv)) if eval_done(v.workdir, argv) else None
    for crops in (1, 10):
      key = f'crops_{crops}'
      if r and key in r:
        out[f'eval_{r.get("split", "?")}_{key}_error'] = 1.0 - r[key]['top1']
        out[f'eval_{r.get("split", "?")}_count'] = r[key].get('count')
  return out


# --- figure1 ----------------------------------------------------------------------------

def _rate_of(run: Run) -> float | str:
  return run.variant.overrides['optimizer.learning_rate']


def sweep_table(p: Plan) -> list[dict]:
  """One row per swept (activation, rate): its epochs to 25% and last training error."""
  rows = []
  for run in (r for r in p.runs if r.stage == 'sweep'):
    s = run_summary(run)
    errors = s['train_error_per_epoch']
    rows.append({'activation': run.variant.overrides['model.activation'],
                 'learning_rate': _rate_of(run), 'status': s['status'],
                 'epochs_run': len(errors), 'epochs_to_25pct': epochs_to_target(errors),
                 'final_train_error': errors[-1] if errors else None,
                 'command': run.variant.command_line})
  return rows


def choose_rates(table: Sequence[dict]) -> dict[str, float]:
  """Per activation, the rate of the finished sweep run that reaches 25% in the fewest
  epochs (ties, and when none reaches it: the lowest training error at the sweep's end).
  An activation whose sweep has not finished for every rate gets no rate yet."""
  chosen = {}
  for act in ACTIVATIONS:
    rows = [r for r in table if r['activation'] == act]
    if not rows or any(r['status'] not in ('finished', 'diverged') for r in rows):
      continue
    ok = [r for r in rows if r['status'] == 'finished' and r['final_train_error'] is not None]
    if ok:
      best = min(ok, key=lambda r: (r['epochs_to_25pct'] if r['epochs_to_25pct'] is not None
                                    else math.inf, r['final_train_error']))
      chosen[act] = best['learning_rate']
  return chosen


def rates_at_edge(table: Sequence[dict], chosen: dict[str, float]) -> dict[str, str]:
  """Per activation whose chosen rate is the highest or the lowest one swept, which: the
  sweep then has not bracketed the fastest rate (one further out may train faster still).
  Diverged sweep runs count as swept: a rate below a diverged one is bracketed."""
  edges = {}
  for act, rate in chosen.items():
    swept = sorted(r['learning_rate'] for r in table if r['activation'] == act)
    if len(swept) < 2:
      continue
    if rate == swept[-1]:
      edges[act] = 'highest'
    elif rate == swept[0]:
      edges[act] = 'lowest'
  return edges


def edge_warnings(table: Sequence[dict], chosen: dict[str, float]) -> list[str]:
  """One line per activation whose chosen rate is at the edge of the sweep, saying how to
  widen it."""
  return [f'warning: {act}\'s chosen learning rate {chosen[act]:g} is the {edge} swept, so '
          f'a {"higher" if edge == "highest" else "lower"} rate may train faster still: add '
          f'{chosen[act] * (2 if edge == "highest" else 0.5):g} to --rates (finished sweep '
          'runs are skipped)'
          for act, edge in rates_at_edge(table, chosen).items()]


def figure1_results(p: Plan) -> dict:
  """figure1.json (without the commands and machine, which `write_results` adds)."""
  table = sweep_table(p)
  chosen = choose_rates(table)
  per_seed, means, capped = {}, {}, {}
  for act in ACTIVATIONS:
    rows = []
    for run in (r for r in p.runs if r.stage == 'main'
                and r.variant.overrides['model.activation'] == act):
      s = run_summary(run)
      rows.append({'seed': s['seed'], 'learning_rate': _rate_of(run), 'status': s['status'],
                   'epochs_to_25pct': epochs_to_target(s['train_error_per_epoch']),
                   'final_train_error': s['final_running_train_error'],
                   'train_error_per_epoch': s['train_error_per_epoch'],
                   'workdir': s['workdir']})
    per_seed[act] = rows
    done = [r for r in rows if r['status'] == 'finished']
    values = [r['epochs_to_25pct'] for r in done]
    # Not reached by every finished seed within the cap: null, and the cap stands in for
    # the seeds that did not reach it when bounding the ratio.
    means[act] = (lib.mean_std(values)[0] if done and None not in values else None)
    capped[act] = lib.mean_std([p.epochs if v is None else v for v in values])[0]
  relu, tanh = means['relu'], means['tanh']
  if relu is not None and tanh is not None:
    ratio, kind = tanh / relu, 'exact'
  elif relu is not None and capped['tanh'] is not None:
    ratio, kind = capped['tanh'] / relu, 'lower_bound'
  elif tanh is not None and capped['relu'] is not None:
    ratio, kind = tanh / capped['relu'], 'upper_bound'
  else:
    ratio, kind = None, 'undefined'
  text = None if ratio is None else (
      {'exact': '', 'lower_bound': '>= ', 'upper_bound': '<= '}[kind] + f'{ratio:.2f}')
  return {
      'claim': 'figure1', 'paper': 'Figure 1: ' + CLAIMS['figure1'].paper + ' (ratio 6)',
      'epochs_to_25pct_train_error': means, 'ratio': ratio, 'ratio_kind': kind,
      'ratio_text': text,
      'ratio_note': ('tanh / relu of the mean epochs to 25% training error; lower_bound: '
                     'tanh did not reach 25% within the cap in every seed (the cap stands in '
                     'for those seeds); upper_bound: relu did not; undefined: neither did'),
      'learning_rates': {act: chosen.get(act) for act in ACTIVATIONS},
      'seeds': p.seeds, 'per_seed': per_seed,
      'sweep': {'epochs': p.sweep_epochs, 'rates': p.rates, 'seed': p.seeds[0],
                'criterion': 'fewest epochs to 25% training error; ties and never reached: '
                             'lowest training error at the last sweep epoch',
                'chosen_at_edge': rates_at_edge(table, chosen),
                'table': table},
      'epochs': p.epochs, 'schedule': p.schedule, 'target_error': TARGET_ERROR,
      'definition': ("an epoch's training error is the step-weighted mean of the running "
                     'training error (1 - top-1 of the training batches in training mode) '
                     'logged over it; epochs to 25% is the first whole epoch at or below '
                     '25%'),
  }


def plot_figure1(result: dict, path: str) -> str:
  """The paper's Figure 1 on these runs: training error against epochs, ReLU solid and
  tanh dashed (one line per seed), the 25% line."""
  from alexnet_jax.tools import curves
  plt = curves.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  style = {'relu': ('-', 'tab:blue'), 'tanh': ('--', 'tab:red')}
  for act in ACTIVATIONS:
    line, color = style[act]
    for i, r in enumerate(result['per_seed'][act]):
      errors = r['train_error_per_epoch']
      if errors:
        ax.plot(range(1, len(errors) + 1), errors, line, color=color, linewidth=1.5,
                label=(f'{act} (lr {r["learning_rate"]:g})' if i == 0 else None))
  ax.axhline(TARGET_ERROR, color='grey', linestyle=':', linewidth=1)
  highest = max((e for act in ACTIVATIONS for r in result['per_seed'][act]
                 for e in r['train_error_per_epoch']), default=0.0)
  ax.set_xlabel('Epochs')
  ax.set_ylabel('Training error rate')
  ax.set_xlim(left=0)
  ax.set_ylim(0, min(1.0, max(0.8, highest + 0.02)))    # the paper's axis ends at 0.75
  ax.grid(True, alpha=0.3)
  ax.legend(loc='lower left')        # early epochs are high: the lower left stays empty
  text = result['ratio_text'] or 'n/a'
  ax.set_title('CIFAR-10, ReLU vs tanh: epochs to 25%, tanh/relu '
               + (text if text[:1] in '<>' else '= ' + text))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


# --- lrn --------------------------------------------------------------------------------

def _by_variant(p: Plan) -> dict[str, list[Run]]:
  out: dict[str, list[Run]] = {}
  for run in p.runs:
    out.setdefault(run.variant.name, []).append(run)
  return out


def lrn_results(p: Plan) -> dict:
  """lrn.json (without the commands and machine)."""
  out: dict[str, Any] = {'claim': 'lrn', 'paper': 'section 3.3: ' + CLAIMS['lrn'].paper}
  values = {}
  for name, runs in _by_variant(p).items():
    rows = [run_summary(r) for r in runs]
    done = [r for r in rows if r['status'] == 'finished']
    centre = [r.get('eval_validation_crops_1_error', r['final_val_error']) for r in done]
    centre = [c for c in centre if c is not None]
    ten = [r['eval_validation_crops_10_error'] for r in done
           if r.get('eval_validation_crops_10_error') is not None]
    mean, std = lib.mean_std(centre)
    mean10, std10 = lib.mean_std(ten)
    values[name] = centre
    out[name] = {'val_error_mean': mean, 'val_error_std': std, 'n': len(centre),
                 'values': centre, 'seeds': [r['seed'] for r in done],
                 'curves': [{'seed': r['seed'], 'val_epochs': r['val_epochs'],
                             'val_error_per_epoch': r['val_error']} for r in rows],
                 'val_error_10crop_mean': mean10, 'val_error_10crop_std': std10,
                 'values_10crop': ten, 'paper_test_error': PAPER_LRN_ERROR[name],
                 'overrides': {k: lib.format_value(x)
                               for k, x in runs[0].variant.overrides.items()},
                 'count': next((r['eval_validation_count'] for r in done
                                if r.get('eval_validation_count')), None)}
  w = lib.welch(values.get('with_lrn', []), values.get('without_lrn', []))
  out['welch_p'] = w['p']
  out['welch'] = {**w, 'of': 'with_lrn - without_lrn, centre-crop validation error'}
  out['welch_p_constant_vs_without'] = lib.welch(values.get('constant_control', []),
                                                 values.get('without_lrn', []))['p']
  out.update(epochs=p.epochs, schedule=p.schedule, seeds=p.seeds)
  return out


def _pct(x: float | None, std: float | None = None) -> str:
  if x is None:
    return '-'
  return f'{100 * x:.2f}' + ('' if std is None else f' ± {100 * std:.2f}')


def lrn_markdown(result: dict) -> str:
  rows = ['| variant | overrides | n | val error % centre (mean ± std) | per seed | '
          'val error % 10 crops | paper test error % |', '|---|---|---|---|---|---|---|']
  for name in LRN_VARIANTS:
    e = result.get(name)
    if not e:
      continue
    rows.append(f'| {name} | ' + ', '.join(f'`{k}={x}`' for k, x in e['overrides'].items())
                + f' | {e["n"]} | {_pct(e["val_error_mean"], e["val_error_std"])} | '
                + ', '.join(_pct(x) for x in e['values']) + ' | '
                + f'{_pct(e["val_error_10crop_mean"], e["val_error_10crop_std"])} | '
                + f'{100 * e["paper_test_error"]:g} |')
  p = result['welch_p']
  count = (result.get('with_lrn') or {}).get('count')
  mean = (result.get('with_lrn') or {}).get('val_error_mean')
  se = ('' if not count or mean is None else
        f' One evaluation on {count:.0f} images has a binomial standard error of about '
        f'{100 * math.sqrt(mean * (1 - mean) / count):.2f} points at the measured error.')
  return '\n'.join([
      '# Response normalization on CIFAR-10 (the paper\'s section 3.3)', '',
      f'conv-local net (`configs/cifar10_conv_local.py`), {result["schedule"]}; seeds '
      f'{", ".join(map(str, result["seeds"]))}. Validation error: the final checkpoint on '
      'the held-out 10% of the training images (by a hash of the file name; the paper '
      'reports CIFAR-10\'s test set), centre crop and 10 crops (`alexnet_jax.evaluate`).',
      '', *rows, '',
      f'Welch\'s two-sided t-test, with_lrn against without_lrn (centre crop): p = '
      f'{"n/a" if p is None else f"{p:.3g}"}.{se}', '',
      'constant_control (`model.lrn=constant`) replaces each norm by the constant it '
      'reduces to with a zero scale, 1^-0.75 = 1: the same net as without_lrn with the same '
      'seeds, run as its own variant as a check of the switch: it matches without_lrn run '
      'for run (on a CPU bit for bit; a GPU\'s nondeterministic kernels may differ in the '
      'last digits), and a difference beyond that would point at a bug (Welch p constant vs '
      'without: '
      + ('n/a' if result['welch_p_constant_vs_without'] is None
         else f'{result["welch_p_constant_vs_without"]:.3g}') + ').', '',
      'What the schedule can and cannot show: the paper\'s numbers come from '
      'cuda-convnet\'s ~470-epoch protocol (300 epochs on 40k images, ~150 more on all '
      '50k, then 10 + 10 at rates /10 and /100). A shortened schedule keeps the shape '
      '(the rate drops at epochs x 300/320 and x 310/320) and compares the two nets at an '
      'equal, smaller budget: it can show whether the norm helps early, not the size of '
      'the gap at convergence, and with 3 seeds the test only detects differences of a '
      'few standard deviations.', '',
      '![validation error per epoch](lrn.png)', '',
      'Commands (from the repository root; rerunning the experiment command resumes): '
      '`lrn.json`.', ''])


# --- dropout ----------------------------------------------------------------------------

def dropout_results(p: Plan) -> dict:
  """dropout.json (without the commands and machine)."""
  out: dict[str, Any] = {'claim': 'dropout', 'paper': 'section 4.2: '
                         + CLAIMS['dropout'].paper + '; dropout roughly halves the gap'}
  for name, runs in _by_variant(p).items():
    per_seed = []
    for s in (run_summary(r) for r in runs):
      if s['status'] != 'finished':
        continue
      train = s.get('eval_train_crops_1_error')
      source = 'evaluate --split=train (final checkpoint, eval mode)'
      if train is None:
        train, source = s['final_running_train_error'], 'running (last epoch, training mode)'
      val = s['final_val_error']
      per_seed.append({'seed': s['seed'], 'train_error': train, 'val_error': val,
                       'gap': None if train is None or val is None else val - train,
                       'train_error_source': source,
                       'train_error_per_epoch': s['train_error_per_epoch'],
                       'val_error_per_epoch': s['val_error'], 'val_epochs': s['val_epochs']})
    entry = {'n': len(per_seed), 'values': per_seed,
             'overrides': {k: lib.format_value(x) for k, x in runs[0].variant.overrides.items()}}
    for key in ('train_error', 'val_error', 'gap'):
      entry[key], entry[f'{key}_std'] = lib.mean_std([r[key] for r in per_seed])
    out[name] = entry
  gaps = [out.get(n, {}).get('gap') for n in DROPOUT_VARIANTS]
  out['gap_ratio'] = (gaps[0] / gaps[1] if None not in gaps and gaps[1] else None)
  out['gap_welch_p'] = lib.welch(
      [r['gap'] for r in out.get('with_dropout', {}).get('values', [])],
      [r['gap'] for r in out.get('without_dropout', {}).get('values', [])])['p']
  out.update(epochs=p.epochs, schedule=p.schedule, seeds=p.seeds)
  return out


def dropout_markdown(result: dict) -> str:
  rows = ['| variant | n | train error % | val error % | gap (val - train), points |',
          '|---|---|---|---|---|']
  for name in DROPOUT_VARIANTS:
    e = result.get(name)
    if e:
      rows.append(f'| {name} | {e["n"]} | {_pct(e["train_error"], e["train_error_std"])} | '
                  f'{_pct(e["val_error"], e["val_error_std"])} | '
                  f'{_pct(e["gap"], e["gap_std"])} |')
  ratio = result['gap_ratio']
  sources = {r['train_error_source'] for n in DROPOUT_VARIANTS
             for r in result.get(n, {}).get('values', [])}
  return '\n'.join([
      '# Dropout against overfitting on CIFAR-10 (the paper\'s section 4.2)', '',
      f'`configs/cifar10_dropout.py` (the 80sec net with a 1,024-unit hidden fc layer, no '
      f'augmentation, no weight decay), {result["schedule"]}; seeds '
      f'{", ".join(map(str, result["seeds"]))}; mean ± std over seeds.', '', *rows, '',
      f'Gap with dropout / gap without: {"n/a" if ratio is None else f"{ratio:.2f}"} (the '
      'paper: dropout roughly halves it, about 0.5); Welch p of the gaps: '
      + ('n/a' if result['gap_welch_p'] is None else f'{result["gap_welch_p"]:.3g}') + '.', '',
      'Training error: ' + ('; '.join(sorted(sources)) or '-') + '. Validation error: the '
      'final evaluation on the held-out 10% of the training images (whole 32x32 images).', '',
      '![train and validation error per epoch](dropout.png)', '',
      'Commands: `dropout.json`.', ''])


def plot_lrn(result: dict, path: str) -> str:
  """lrn.png: the validation error per epoch of every seed of each variant (the run's own
  centre-crop evaluations), the paper's 11% and 13% as dotted lines."""
  from alexnet_jax.tools import curves
  plt = curves.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  styles = {'with_lrn': ('tab:blue', '-'), 'without_lrn': ('tab:red', '-'),
            'constant_control': ('tab:gray', ':')}
  for name in LRN_VARIANTS:
    color, style = styles[name]
    for i, c in enumerate(result.get(name, {}).get('curves', [])):
      ax.plot(c['val_epochs'], c['val_error_per_epoch'], style, color=color, marker='.',
              linewidth=1.2, label=name if i == 0 else None)
  for error, label in ((0.11, "paper, with (11%)"), (0.13, "paper, without (13%)")):
    ax.axhline(error, color='black', linestyle='--' if error < 0.12 else '-.',
               linewidth=0.8, label=label)
  return _save_error_plot(plt, fig, ax, path, f'Epochs (of a {result["epochs"]:g}-epoch schedule)',
                          'Validation error (centre crop)',
                          'CIFAR-10 conv-local net: response norm on vs off')


def _save_error_plot(plt, fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> str:
  """The error-per-epoch axes of lrn.png and dropout.png: labels, 0-1, grid, legend; saved."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1)
  ax.grid(True, alpha=0.3)
  ax.legend(loc='upper right', fontsize='small')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_dropout(result: dict, path: str) -> str:
  from alexnet_jax.tools import curves
  plt = curves.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  colors = {'with_dropout': 'tab:blue', 'without_dropout': 'tab:red'}
  for name in DROPOUT_VARIANTS:
    for i, r in enumerate(result.get(name, {}).get('values', [])):
      train = r['train_error_per_epoch']
      ax.plot(range(1, len(train) + 1), train, '-', color=colors[name], linewidth=1.2,
              label=f'{name}: train (running)' if i == 0 else None)
      ax.plot(r['val_epochs'], r['val_error_per_epoch'], '--', color=colors[name],
              linewidth=1.2, label=f'{name}: validation' if i == 0 else None)
  return _save_error_plot(plt, fig, ax, path, 'Epochs', 'Error rate',
                          'CIFAR-10: dropout 0.5 vs none')


# --- writing ----------------------------------------------------------------------------

def write_results(p: Plan, out: str, invocation: str) -> list[str]:
  """Writes <out>/<claim>.json (and .png, .md where the claim has them); returns the paths."""
  os.makedirs(out, exist_ok=True)
  if p.claim == 'figure1':
    result = figure1_results(p)
  elif p.claim == 'lrn':
    result = lrn_results(p)
  else:
    result = dropout_results(p)
  result['config'] = p.config
  result['command'] = invocation
  result['commands'] = [c for run in p.runs for c in run.commands]
  result['machine'] = read_machine(p.runs_dir)
  # The runs got the folder as an absolute path where it lies outside the repository
  # (../shared): the committed files name it relative to the repository root instead.
  folder = p.common.get('dataset.folder')
  if folder and os.path.isabs(folder):
    result = json.loads(json.dumps(result).replace(folder, os.path.relpath(folder)))
  written = [os.path.join(out, f'{p.claim}.json')]
  with open(written[0], 'w') as f:
    json.dump(result, f, indent=1)
  if p.claim == 'figure1':
    written.append(plot_figure1(result, os.path.join(out, 'figure1.png')))
  elif p.claim == 'lrn':
    written.append(plot_lrn(result, os.path.join(out, 'lrn.png')))
    written.append(os.path.join(out, 'lrn.md'))
    with open(written[-1], 'w') as f:
      f.write(lrn_markdown(result))
  else:
    written.append(plot_dropout(result, os.path.join(out, 'dropout.png')))
    written.append(os.path.join(out, 'dropout.md'))
    with open(written[-1], 'w') as f:
      f.write(dropout_markdown(result))
  return written
