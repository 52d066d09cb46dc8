r"""The paper's ablations, one training run each, summarised as a Markdown table and a plot.

  python -m experiments.ablations --sweep=lrn,pooling,towers,lighting,activation,dropout
  python -m experiments.ablations --sweep=lrn,pooling --epochs=3 \
      --root=experiments/results/ablations_3ep
  python -m experiments.ablations --sweep=towers --base=configs/default.py --dry_run

Run from the repository root. Every variant (plus the baseline: the base config
unchanged) is one `python -m alexnet_jax.main --config=BASE --workdir=... --config.X=Y`
subprocess, printed before it starts so it can be copied. Workdirs go to
<root>/runs/<variant> (that folder holds a .gitignore of '*': checkpoints are never
committed by accident); a variant whose workdir already finished the same command is
skipped, and an interrupted one resumes (main.py resumes from the workdir). At the end
<root>/ablations.md (table) and <root>/ablations.png (curves) are written. Paths inside
the repository are written relative to it. The ablations themselves are listed in
experiments/ablations_lib.py.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from experiments import ablations_lib as lib

_SWEEP = flags.DEFINE_list('sweep', None, 'Ablations to run, from: '
                           f'{", ".join(lib.ABLATIONS)}.')
_BASE = flags.DEFINE_string('base', 'configs/default.py',
                            'Base config, as main.py takes it (path.py or path.py:arg).')
_ROOT = flags.DEFINE_string('root', '/tmp/ablations',
                            'Where ablations.md/.png go; the workdirs go to ROOT/runs.')
_RUNS_DIR = flags.DEFINE_string('runs_dir', None, 'Put the workdirs here instead of ROOT/runs.')
_EPOCHS = flags.DEFINE_float('epochs', None,
                             "Override num_epochs of every variant (default: the base's).")
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the command lines and exit without running anything.')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _SWEEP.value:
    raise app.UsageError(f'--sweep is required; allowed names: {", ".join(lib.ABLATIONS)}')
  from alexnet_jax import logs
  logs.setup()
  root, epochs = _ROOT.value, _EPOCHS.value
  runs_dir = _RUNS_DIR.value or os.path.join(root, lib.RUNS_SUBDIR)
  try:
    sweep = lib.parse_sweep(','.join(_SWEEP.value))
    variants = lib.plan(sweep, _BASE.value, runs_dir, epochs=epochs)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  if _DRY_RUN.value:
    for v in variants:
      state = '  # finished: would be skipped' if lib.is_finished(v) else ''
      print(v.command_line + state)
    return 0

  os.makedirs(runs_dir, exist_ok=True)
  if not _RUNS_DIR.value:
    with open(os.path.join(runs_dir, '.gitignore'), 'w') as f:
      f.write('# checkpoints and logs of experiments/ablations.py: never commit them\n*\n')
  start = time.time()
  print(f'{len(variants)} runs: {", ".join(v.name for v in variants)}; workdirs in {runs_dir}',
        flush=True)
  failed = []
  try:
    for i, v in enumerate(variants, start=1):
      if not lib.run_variant(v, i, len(variants), start):
        failed.append(v.name)
  except KeyboardInterrupt:
    print('interrupted: run the same command again to resume; writing the report so far')
    failed.append('(interrupted)')
  md, png = lib.write_report(variants, root, _BASE.value, epochs)
  print(f'wrote {md}' + (f' and {png}' if png else '')
        + f'; total {lib.fmt_time(time.time() - start)}')
  if failed:
    print(f'failed: {", ".join(failed)}', file=sys.stderr)
    return 1
  with open(md) as f:
    print(''.join(line for line in f if line.startswith('|')), end='')
  return 0


if __name__ == '__main__':
  app.run(main)
