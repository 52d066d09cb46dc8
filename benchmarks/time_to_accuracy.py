r"""Time to accuracy on CIFAR-10: this project's training command against the same net,
data order and recipe in PyTorch, on the same machine, one after the other.

  python -m benchmarks.time_to_accuracy --folder=../shared/data/cifar10/train \
      [--config=configs/cifar10_fast.py] [--target_error=0.26] [--frameworks=jax,torch] \
      [--set=num_epochs=12 --set=optimizer.learning_rate=0.01] [--out=benchmarks/logs/tta]

Each framework runs as its own process, from a cold start, with the clock started at the
launch: the interpreter and library imports, the pass over the training images for the
mean image (each side gets an empty statistics cache), every training step, every
validation pass and the data decoding of both are inside the time. The sides:

- jax: `python -m alexnet_jax.main --config=CONFIG --workdir=... --config.dataset.folder=DIR`,
  the command a user runs; its validation passes are read from its log as they happen;
- torch: `python -m benchmarks.torch_cifar` with the same config (see there: the same
  tf.data pipeline and so the same images in the same order, the same preprocessing, net,
  init scale, paper SGD and schedule).

Both validate on the config's held-out part once per epoch (centre crop). A side stops at its
first validation pass at or below --target_error (the JAX run through SIGTERM, which it
answers by checkpointing and stopping; the time was taken before), or at the end of the
schedule. Results: OUT.json (per side: every validation pass with its wall time, the time to
the target or null, the exit status; the machine; the command), OUT.md (the table) and
OUT.png (validation error against wall-clock minutes, both sides and the target). Never run
two of these at once or beside other work: the sides are timed on the whole machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a command: tests import this module beside other commands."""
  flags.DEFINE_string('folder', None, 'CIFAR-10 training images in class sub-folders (the '
                      'validation part is held out of them).')
  flags.DEFINE_string('config', 'configs/cifar10_fast.py', 'The recipe both sides train.')
  flags.DEFINE_float('target_error', 0.26, 'Validation error to reach.')
  flags.DEFINE_list('frameworks', ['jax', 'torch'], 'Sides to run, in order.')
  flags.DEFINE_multi_string('set', [], 'FIELD=VALUE config overrides for both sides.')
  flags.DEFINE_string('out', 'benchmarks/logs/time_to_accuracy',
                      'Path prefix of the .json, .md and .png written.')
  flags.DEFINE_string('workdir', None, 'Where the runs go (default: a new temporary '
                      'directory, removed after).')
  flags.DEFINE_float('max_minutes', 60.0, 'Stop a side after this long.')


SIDE_NAMES = {'jax': 'alexnet_jax (python -m alexnet_jax.main)',
              'torch': 'PyTorch twin (benchmarks.torch_cifar)'}
# The training loop's validation line (alexnet_jax/run/train.py).
_EVAL_LINE = re.compile(r'eval at step (\d+): top1 ([0-9.]+)')
_STEPS_LINE = re.compile(r'(\d+) steps/epoch')


def exact_val_error(run_dir: str, step: int, rounded: float) -> float:
  """1 - top1 of the run's evaluation at `step`, from its metrics.jsonl (written before the
  log line): the log prints top-1 to 4 decimals, which would put 1,332 errors in 5,123
  (26.0004%) at 26%. `rounded` (from the log line) where the file has no such row."""
  try:
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError):
    return rounded
  for row in reversed(rows):
    if row.get('split') == 'eval' and row.get('step') == step and 'top1' in row:
      return 1.0 - float(row['top1'])
  return rounded


def _side_command(framework: str, workdir: str, overrides: list[str]) -> list[str]:
  sets = [f'--config.{o}' for o in overrides]
  if framework == 'jax':
    return [sys.executable, '-m', 'alexnet_jax.main', f'--config={FLAGS.config}',
            f'--workdir={os.path.join(workdir, "run")}', *sets]
  return [sys.executable, '-m', 'benchmarks.torch_cifar', f'--config={FLAGS.config}',
          f'--target_error={FLAGS.target_error}', *sets]


def run_side(framework: str, workdir: str, overrides: list[str], target: float,
             max_seconds: float) -> dict:
  """Launches one side and follows its validation passes; returns its record."""
  os.makedirs(workdir, exist_ok=True)
  cmd = _side_command(framework, workdir, overrides)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
  start = time.time()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  passes, reached, steps_per_epoch, tail = [], None, None, []
  stopping = False
  with open(os.path.join(workdir, 'output.log'), 'w') as log:
    for line in proc.stdout:
      now = time.time() - start
      log.write(line)
      tail = (tail + [line])[-20:]
      record = None
      if framework == 'jax':
        if (m := _STEPS_LINE.search(line)) and steps_per_epoch is None:
          steps_per_epoch = int(m.group(1))
        if m := _EVAL_LINE.search(line):
          step = int(m.group(1))
          record = {'step': step, 'epoch': step / steps_per_epoch if steps_per_epoch else None,
                    'val_error': exact_val_error(os.path.join(workdir, 'run'), step,
                                                 1.0 - float(m.group(2))),
                    'elapsed_s': now}
      elif line.startswith('{'):
        d = json.loads(line)
        if 'val_error' in d:
          record = {k: d[k] for k in ('step', 'epoch', 'val_error', 'train_error')}
          record['elapsed_s'] = now
      if record:
        passes.append(record)
        print(f'  {framework}: epoch {record["epoch"] or 0:5.2f}  val error '
              f'{record["val_error"]:.4f}  at {now / 60:6.2f} min', flush=True)
        if reached is None and record['val_error'] <= target:
          reached = record
      if not stopping and (reached is not None or now > max_seconds) and proc.poll() is None:
        stopping = True
        proc.send_signal(signal.SIGTERM)
  status = proc.wait()
  return {'command': shlex.join(cmd[2:]), 'exit_status': status, 'passes': passes,
          'seconds_to_target': reached['elapsed_s'] if reached else None,
          'epochs_to_target': reached['epoch'] if reached else None,
          'best_val_error': min((p['val_error'] for p in passes), default=None),
          'wall_s': time.time() - start,
          'output_tail': ''.join(tail) if status not in (0, -signal.SIGTERM, 143) else ''}


def format_table(report: dict) -> str:
  rows = ['| side | time to target | epochs | best val error | passes | exit |',
          '|---|---|---|---|---|---|']
  for name, r in report['sides'].items():
    t = r['seconds_to_target']
    best = r['best_val_error']
    rows.append(f'| {name} | {f"{t / 60:.2f} min" if t is not None else "not reached"} | '
                f'{r["epochs_to_target"] if r["epochs_to_target"] is not None else "-"} | '
                f'{f"{best:.4%}" if best is not None else "-"} | {len(r["passes"])} | '
                f'{r["exit_status"]} |')
  ratio = report.get('ratio_torch_over_jax')
  rows.append('')
  rows.append(f'target: validation error <= {report["target_error"]}; ratio torch/jax of the '
              f'times to target: {f"{ratio:.2f}" if ratio else "n/a (a side did not reach it)"}')
  return '\n'.join(rows)


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name, r in report['sides'].items():
    xs = [p['elapsed_s'] / 60 for p in r['passes']]
    ax.plot(xs, [p['val_error'] for p in r['passes']], 'o-', label=SIDE_NAMES[name])
  ax.axhline(report['target_error'], color='grey', ls='--', lw=1, label='target')
  ax.set_xlim(left=0)
  ax.set_xlabel('wall-clock minutes from launch')
  ax.set_ylabel('validation error')
  ax.set_title(f'{os.path.basename(report["config"])} on {report["machine"]["cpu"]}',
               fontsize=9)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.folder or not os.path.isdir(FLAGS.folder):
    raise app.UsageError(f'--folder={FLAGS.folder!r}: a folder of CIFAR-10 class '
                         'sub-folders is required, e.g. --folder=../shared/data/cifar10/train')
  unknown = set(FLAGS.frameworks) - {'jax', 'torch'}
  if unknown or not FLAGS.frameworks:
    raise app.UsageError(f'--frameworks={",".join(FLAGS.frameworks)}: allowed jax, torch')
  for o in FLAGS.set:
    if '=' not in o:
      raise app.UsageError(f'--set={o!r}: expected FIELD=VALUE, e.g. --set=num_epochs=12')
  from benchmarks import machine
  m = machine.describe()
  print(machine.format_machine(m), flush=True)
  root = FLAGS.workdir or tempfile.mkdtemp(prefix='tta_')
  sides = {}
  for framework in FLAGS.frameworks:
    wd = os.path.join(root, framework)
    # A fresh statistics cache per side: each pays for its own mean-image pass.
    overrides = [f'dataset.folder={os.path.abspath(FLAGS.folder)}',
                 f'dataset.data_dir={os.path.join(wd, "data")}', *FLAGS.set]
    print(f'{framework}: {shlex.join(_side_command(framework, wd, overrides)[2:])}', flush=True)
    sides[framework] = run_side(framework, wd, overrides, FLAGS.target_error,
                                60 * FLAGS.max_minutes)
  if not FLAGS.workdir:
    shutil.rmtree(root, ignore_errors=True)
  for r in sides.values():   # the committed record names no path of this machine
    r['command'] = (r['command'].replace(os.path.abspath(FLAGS.folder), FLAGS.folder)
                    .replace(root, '$WORKDIR'))
  report = {'benchmark': 'time_to_accuracy', 'config': FLAGS.config,
            'overrides': FLAGS.set, 'target_error': FLAGS.target_error,
            'machine': {**m, 'cpu': _cpu_name(m)}, 'sides': sides,
            'command': shlex.join(['python', '-m', 'benchmarks.time_to_accuracy',
                                   *sys.argv[1:]]).replace(os.path.abspath('.') + '/', '')
                 .replace(root, '$WORKDIR'),
            'date': time.strftime('%Y-%m-%d')}
  times = [sides.get(s, {}).get('seconds_to_target') for s in ('torch', 'jax')]
  report['ratio_torch_over_jax'] = times[0] / times[1] if all(times) else None
  table = format_table(report)
  print(table)
  os.makedirs(os.path.dirname(FLAGS.out) or '.', exist_ok=True)
  with open(FLAGS.out + '.json', 'w') as f:
    json.dump(report, f, indent=2)
  with open(FLAGS.out + '.md', 'w') as f:
    f.write(f'# Time to {FLAGS.target_error:.0%} validation error on CIFAR-10\n\n'
            f'```\n{report["command"]}\n```\n\n{machine.format_machine(m)}, '
            f'{report["date"]}\n\n{table}\n')
  plot(report, FLAGS.out + '.png')
  print(f'wrote {FLAGS.out}.json, .md, .png')
  failed = [s for s, r in sides.items() if r['exit_status'] not in (0, 143, -signal.SIGTERM)]
  return 1 if failed else 0


def _cpu_name(m: dict) -> str:
  gen = m.get('cpu_generation')
  return f'{m.get("cpu_model", "?")}{f" ({gen})" if gen else ""}, {m.get("cores")} cores'


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main))
