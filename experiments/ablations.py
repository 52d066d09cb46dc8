r"""The paper's ablations and any grid of config overrides, over seeds, summarised as a
Markdown table, a JSON file and a plot.

  python -m experiments.ablations --base=configs/ablation_base.py --seeds=3 \
      --sweep=lrn,pooling,towers,lighting,activation,dropout \
      --out=experiments/results/ablations_hard
  python -m experiments.ablations --sweep=lrn,pooling --epochs=3 \
      --out=experiments/results/ablations_3ep
  python -m experiments.ablations --sweep= --seeds=3 \
      --grid='model.lrn=caffe; lr:optimizer.learning_rate=0.005|0.02' \
      --grid='nowd:optimizer.weight_decay=0 optimizer.decay_biases=false'
  python -m experiments.ablations --sweep=towers --base=configs/default.py --dry_run
  python -m experiments.ablations --base=configs/cifar10_conv_local.py --seeds=3 \
      --sweep=lrn,pooling,activation --epochs=60 \
      --set=dataset.folder=../shared/data/cifar10/train --out=/tmp/cifar10_ablations

Run from the repository root. Every variant (plus the baseline: the base config unchanged)
is one `python -m alexnet_jax.main --config=BASE --workdir=... --config.X=Y` subprocess
per seed, printed before it starts so it can be copied. --sweep names the paper's
ablations (experiments/ablations_lib.py lists them); --grid (repeatable) adds variants of
raw `--config.KEY=VALUE` overrides: ';' separates variants, whitespace the overrides of
one, an optional `name:` names it, `a|b` expands a value into one variant per alternative.
--seeds=N runs each variant (and the baseline) with --config.seed= base_seed ..
base_seed+N-1. --set=FIELD=VALUE (repeatable) puts an override on every run's command, the
baseline's included (a dataset folder, a data_dir). Workdirs go to
<out>/runs/<variant>[/seed<S>] (that folder holds a .gitignore of '*': checkpoints are
never committed by accident); a run whose workdir already finished the same command is
skipped, and an interrupted one resumes (main.py resumes from the workdir). At the end
<out>/ablations.md (table: mean ± std, per-seed values, difference to the baseline with
Welch's t-test), <out>/ablations.json (the same numbers per run) and <out>/ablations.png
(final top-1 with error bars, eval curves) are written; --report_only rewrites them from
the workdirs. Paths inside the repository are written relative to it. On a terminal a
progress bar counts the runs done.

Exit status (alexnet_jax/common/exits.py): 0 every run finished; 1 some run failed (the
report covers the others); 2 a bad flag, ablation name or --grid override. --root is the
old name of --out (deprecated, removed in the next release).
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from alexnet_jax.common import exits, progress
from experiments import ablations_lib as lib
from experiments import placement

_SWEEP = flags.DEFINE_list('sweep', None, 'Named ablations to run, from: '
                           f'{", ".join(lib.ABLATIONS)} (may be empty with --grid).')
_GRID = flags.DEFINE_multi_string(
    'grid', [], "Variants of raw config overrides: 'KEY=VALUE KEY2=VALUE2; name:KEY=A|B' "
    "(';' separates variants, whitespace overrides, 'a|b' expands).")
_SET = flags.DEFINE_multi_string(
    'set', [], 'FIELD=VALUE: a config override for every run, the baseline included '
    '(e.g. --set=dataset.folder=../shared/data/cifar10/train).')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Runs per variant with --config.seed=base_seed+i '
                              '(default: one run with the config\'s own seed).')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'Training subprocesses at a time. On GPUs/TPUs each gets its own '
    '(an equal share of the GPUs, one TPU chip); more runs than accelerators is refused. On '
    'CPU they share the cores (each uses every core XLA finds: 1 unless cores are idle).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False,
                                 'Write the report from the workdirs without running anything.')
_BASE = flags.DEFINE_string('base', 'configs/default.py',
                            'Base config, as main.py takes it (path.py or path.py:arg).')
_OUT = flags.DEFINE_string('out', '/tmp/ablations',
                           'The sweep folder: ablations.md/.json/.png, the workdirs in OUT/runs.')
_ROOT = flags.DEFINE_string('root', None, 'Deprecated: the old name of --out.')
_RUNS_DIR = flags.DEFINE_string('runs_dir', None, 'Put the workdirs here instead of OUT/runs.')
_EPOCHS = flags.DEFINE_float('epochs', None,
                             "Override num_epochs of every variant (default: the base's).")
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the command lines and exit without running anything.')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _SWEEP.value is None and not _GRID.value:
    raise app.UsageError(f'--sweep or --grid is required; allowed names: '
                         f'{", ".join(lib.ABLATIONS)}')
  from alexnet_jax.common import logs
  logs.setup()
  root, epochs = exits.deprecated_flag(_ROOT, _OUT), _EPOCHS.value
  runs_dir = _RUNS_DIR.value or os.path.join(root, lib.RUNS_SUBDIR)
  try:
    sweep = lib.parse_sweep(','.join(_SWEEP.value or []), allow_empty=bool(_GRID.value))
    base_config = lib.load_config(_BASE.value)
    grid = lib.parse_grid(_GRID.value, base_config)
    common = lib.parse_sets(_SET.value, base_config)
    variants = lib.plan(sweep, _BASE.value, runs_dir, epochs=epochs, base_config=base_config,
                        grid=grid, seeds=_SEEDS.value, common=common)
  except (ValueError, FileNotFoundError) as e:
    return exits.user_fault(e)

  if _DRY_RUN.value:
    for v in variants:
      state = '  # finished: would be skipped' if lib.is_finished(v) else ''
      print(v.command_line + state)
    return exits.OK

  if _REPORT_ONLY.value:
    md, png = lib.write_report(variants, root, _BASE.value, epochs)
    print(f'wrote {md}' + (f' and {png}' if png else ''))
    return exits.OK
  slots = [{}]
  if _PARALLEL.value > 1:
    try:
      accelerators = placement.probe()
      slots = placement.slots(_PARALLEL.value, accelerators)
    except placement.PlacementError as e:
      return exits.user_fault(e)
    print(placement.describe(slots, accelerators), flush=True)
  os.makedirs(runs_dir, exist_ok=True)
  if not _RUNS_DIR.value:
    lib.make_runs_dir(runs_dir, 'experiments/ablations.py')
  start = time.time()
  print(f'{len(variants)} runs: {", ".join(v.name for v in variants)}; workdirs in {runs_dir}',
        flush=True)
  failed = []
  bar = progress.bar(total=len(variants), desc='ablation runs', unit='run')
  try:
    if _PARALLEL.value <= 1:
      for i, v in enumerate(variants, start=1):
        if not lib.run_variant(v, i, len(variants), start):
          failed.append(v.name)
        bar.update(1)
    else:
      import queue
      from concurrent.futures import ThreadPoolExecutor
      free = queue.Queue()           # a run takes a slot (its accelerators), then returns it
      for slot in slots:
        free.put(slot)

      def run_in_a_slot(index_variant) -> bool:
        slot = free.get()
        try:
          return lib.run_variant(index_variant[1], index_variant[0], len(variants), start,
                                 extra_env=slot)
        finally:
          free.put(slot)
      with ThreadPoolExecutor(_PARALLEL.value) as pool:
        done = pool.map(run_in_a_slot, list(enumerate(variants, start=1)))
        for v, ok in zip(variants, done, strict=True):
          bar.update(1)
          if not ok:
            failed.append(v.name)
  except KeyboardInterrupt:
    print('interrupted: run the same command again to resume; writing the report so far')
    failed.append('(interrupted)')
  bar.close()
  md, png = lib.write_report(variants, root, _BASE.value, epochs)
  print(f'wrote {md}' + (f' and {png}' if png else '')
        + f'; total {lib.fmt_time(time.time() - start)}')
  if failed:
    print(f'failed: {", ".join(failed)}', file=sys.stderr)
    return exits.PARTIAL
  with open(md) as f:
    print(''.join(line for line in f if line.startswith('|')), end='')
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
