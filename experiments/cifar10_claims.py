r"""The paper's CIFAR-10 claims on real images, one command each (docs/cifar10_claims.md).

  python -m experiments.cifar10_claims figure1 --folder=../shared/data/cifar10/train \
      --out=experiments/results/cifar10 --epochs=80 --seeds=2
  python -m experiments.cifar10_claims lrn --folder=../shared/data/cifar10/train \
      --out=experiments/results/cifar10 --epochs=320 --seeds=3
  python -m experiments.cifar10_claims dropout --folder=../shared/data/cifar10/train \
      --out=experiments/results/cifar10 --epochs=100 --seeds=2
  python -m experiments.cifar10_claims lrn --folder=... --epochs=8 --dry_run

Run from the repository root. CLAIM is one of:
  figure1  section 3.1, Figure 1: ReLU vs tanh, epochs to 25% training error
           (configs/cifar10_figure1.py); a learning-rate sweep per activation (--rates,
           one seed, --sweep_epochs), then --seeds runs of each at its chosen rate
           -> <out>/figure1.json, figure1.png
  lrn      section 3.3: response normalization on the conv-local net
           (configs/cifar10_conv_local.py): with_lrn, without_lrn, constant_control
           -> <out>/lrn.json, lrn.md, lrn.png
  dropout  section 4.2: dropout 0.5 vs none on a net that overfits
           (configs/cifar10_dropout.py) -> <out>/dropout.json, dropout.md, dropout.png

Every run is one `python -m alexnet_jax.main` subprocess (printed before it starts), its
workdir under <out>/runs/<claim>/ (a .gitignore of '*' keeps them out of git); a finished
run is skipped and an interrupted one resumes, so rerunning the same command continues.
lrn and dropout evaluate each final checkpoint with `python -m alexnet_jax.evaluate`.
--epochs sets every run's length (default: the claim's full protocol: figure1 80, lrn 320,
dropout 100); lrn's rate drops move with it (at epochs x 300/320 and x 310/320).
--seeds=N runs seeds base_seed .. base_seed+N-1 (default: figure1 2, lrn 3, dropout 2).
--set=FIELD=VALUE (repeatable) adds a config override to every run. --report_only
rewrites the result files from the workdirs; --dry_run prints the commands.

Exit status (alexnet_jax/common/exits.py): 0 every run finished (figure1: a sweep run that
diverged counts as a result); 1 some run or evaluation failed (the result files cover the
others); 2 a bad claim, flag or --set override.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

from absl import app, flags

from alexnet_jax.common import exits
from experiments import ablations_lib
from experiments import cifar10_claims_lib as lib

_FOLDER = flags.DEFINE_string('folder', None, 'CIFAR-10 as a folder of class sub-folders '
                              '(e.g. ../shared/data/cifar10/train); 10%% of each class is '
                              'held out for validation.')
_OUT = flags.DEFINE_string('out', 'experiments/results/cifar10',
                           'Where the result files go; the workdirs in OUT/runs/CLAIM.')
_EPOCHS = flags.DEFINE_float('epochs', None, "Every run's epochs (default: the claim's full "
                             'protocol: figure1 80, lrn 320, dropout 100).')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Seeds per variant (default: figure1 2, lrn 3, '
                              'dropout 2).')
_RATES = flags.DEFINE_list('rates', None, 'figure1: the learning rates swept per activation '
                           f'(default {",".join(map(str, lib.DEFAULT_RATES))}).')
_SWEEP_EPOCHS = flags.DEFINE_float('sweep_epochs', None, 'figure1: epochs of each sweep run '
                                   '(default: --epochs, and each sweep run stops at 25% like '
                                   'a seed run, so the rate is chosen by epochs to 25%).')
_SET = flags.DEFINE_multi_string('set', [], 'FIELD=VALUE: a config override for every run.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands; run nothing.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False,
                                 'Write the result files from the workdirs; run nothing.')


def _invocation(claim: str) -> str:
  """The experiment command as typed, less --dry_run/--report_only."""
  args = [a for a in sys.argv[1:] if a.lstrip('-').split('=')[0] not in (
      'dry_run', 'report_only', 'nodry_run', 'noreport_only')]
  return shlex.join(['python', '-m', 'experiments.cifar10_claims', *args])


def _plan(claim: str, chosen: dict | None = None) -> lib.Plan:
  rates = None
  if _RATES.value is not None:
    try:
      rates = [float(r) for r in _RATES.value]
    except ValueError:
      raise ValueError(f'--rates={",".join(_RATES.value)}: expected numbers, e.g. '
                       '--rates=0.001,0.002') from None
  return lib.plan(claim, _FOLDER.value, _OUT.value, epochs=_EPOCHS.value, seeds=_SEEDS.value,
                  sets=_SET.value, rates=rates, sweep_epochs=_SWEEP_EPOCHS.value,
                  chosen=chosen)


def _chosen(p: lib.Plan) -> dict:
  return lib.choose_rates(lib.sweep_table(p)) if p.claim == 'figure1' else {}


def main(argv) -> int:
  if len(argv) != 2:
    raise app.UsageError(f'give one CLAIM, one of: {", ".join(lib.CLAIMS)} (got '
                         f'{" ".join(argv[1:]) or "none"})')
  claim = argv[1]
  if not _FOLDER.value:
    raise app.UsageError('--folder is required: CIFAR-10\'s class sub-folders, e.g. '
                         '--folder=../shared/data/cifar10/train')
  from alexnet_jax.common import logs
  logs.setup()
  try:
    if not os.path.isdir(_FOLDER.value):
      raise FileNotFoundError(f'--folder={_FOLDER.value} is not a directory: give CIFAR-10\'s '
                              'class sub-folders (e.g. ../shared/data/cifar10/train)')
    p = _plan(claim)
    p = _plan(claim, _chosen(p))
  except (ValueError, FileNotFoundError) as e:
    return exits.user_fault(e)

  if _DRY_RUN.value:
    for run in p.runs:
      if run.stage == 'main' and claim == 'figure1' and run is p.runs[len(p.rates) * 2]:
        print(f'# the seed runs, at the rate the sweep picks per activation ({lib.UNSWEPT} '
              'until the sweep has run):')
      done = '  # finished: would be skipped' if ablations_lib.is_finished(run.variant) else ''
      print(run.commands[0] + done)
      for command in run.commands[1:]:
        print(command)
    return exits.OK

  if not _REPORT_ONLY.value:
    ablations_lib.make_runs_dir(os.path.join(_OUT.value, ablations_lib.RUNS_SUBDIR),
                                'experiments/cifar10_claims.py')
    start, failed = time.time(), []
    try:
      if claim == 'figure1':
        failed += lib.execute([r for r in p.runs if r.stage == 'sweep'], start)
        p = _plan(claim, _chosen(p))
        chosen = _chosen(p)
        print(f'learning rates chosen by the sweep: {chosen or "none (the sweep failed)"}',
              flush=True)
        for line in lib.edge_warnings(lib.sweep_table(p), chosen):
          print(line, flush=True)
        if set(chosen) == set(lib.ACTIVATIONS):
          failed += lib.execute([r for r in p.runs if r.stage == 'main'], start)
        else:
          failed.append('figure1 seed runs (no rate chosen)')
      else:
        failed += lib.execute(p.runs, start)
    except KeyboardInterrupt:
      print('interrupted: run the same command again to resume; writing the results so far')
      failed.append('(interrupted)')
    lib.record_machine(p.runs_dir)
  written = lib.write_results(p, _OUT.value, _invocation(claim))
  print('wrote ' + ', '.join(written))
  if not _REPORT_ONLY.value and failed:
    print(f'failed: {", ".join(failed)}', file=sys.stderr)
    return exits.PARTIAL
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
