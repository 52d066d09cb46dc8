"""experiments/cifar10_claims.py and its library: the plans, the numbers of the result files
(from fake workdirs), the command line, and one small end-to-end figure1 run."""

import json
import os

import pytest
from data_utils import CIFAR_DIR, REPO, run_cli

from experiments import ablations_lib
from experiments import cifar10_claims_lib as claims


@pytest.fixture
def at_fake_root(tmp_path, monkeypatch):
  """A stand-in repository root: configs/ linked, the machine description faked."""
  monkeypatch.chdir(tmp_path)
  os.symlink(os.path.join(REPO, 'configs'), 'configs')
  monkeypatch.setattr(claims, 'describe_machine', lambda: {'cpu_model': 'fake cpu'})
  return tmp_path


def _write_run(run, train_errors, *, val_errors=None, per_epoch=10, log_every=5,
               finished=True, returncode=None):
  """A fake finished run: a train row every `log_every` steps, each epoch's rows at that
  epoch's error, an eval per epoch, and the marker of the run's command."""
  v = run.variant
  os.makedirs(v.workdir, exist_ok=True)
  lines = []
  for k, err in enumerate(train_errors, start=1):
    for step in range((k - 1) * per_epoch + log_every, k * per_epoch + 1, log_every):
      lines.append({'step': step, 'split': 'train', 'top1': 1.0 - err, 'loss': 1.0,
                    'epoch': step / per_epoch})
    if val_errors:
      lines.append({'step': k * per_epoch, 'split': 'eval', 'top1': 1.0 - val_errors[k - 1],
                    'count': 500.0})
  with open(os.path.join(v.workdir, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(line) + '\n' for line in lines))
  code = (0 if finished else -2) if returncode is None else returncode
  ablations_lib.write_marker(v.workdir, {'command': v.command, 'finished': code == 0,
                                         'returncode': code, 'wall_s': 1.0})


def _write_eval(run, top1s: dict, split: str = 'validation'):
  (argv,) = run.evals
  path = next(a for a in argv if a.startswith('--json=')).split('=', 1)[1]
  with open(path, 'w') as f:
    json.dump({'split': split, **{f'crops_{n}': {'top1': t, 'count': 500.0}
                                  for n, t in top1s.items()}}, f)


# --- epochs and training error ---------------------------------------------------------

def test_epoch_error_is_the_step_weighted_mean_of_the_logged_rows():
  # 10 steps per epoch, a row every 4 steps: the row at step 12 covers steps 9-12, two of
  # them in epoch 1 and two in epoch 2.
  errors = {4: 0.9, 8: 0.7, 12: 0.5, 16: 0.3, 20: 0.1}
  records = [{'step': s, 'split': 'train', 'top1': 1 - e, 'epoch': s / 10}
             for s, e in errors.items()]
  got = claims.epoch_train_errors(records)
  assert got == pytest.approx([(0.9 * 4 + 0.7 * 4 + 0.5 * 2) / 10,
                               (0.5 * 2 + 0.3 * 4 + 0.1 * 4) / 10])
  # An epoch the rows do not reach the end of is left out.
  assert len(claims.epoch_train_errors(records[:4])) == 1
  assert claims.epoch_train_errors([]) == []


def test_epochs_to_25pct():
  assert claims.epochs_to_target([0.6, 0.4, 0.25, 0.1]) == 3
  assert claims.epochs_to_target([0.2]) == 1
  assert claims.epochs_to_target([0.6, 0.3, 0.26]) is None


# --- figure1 ----------------------------------------------------------------------------

def _figure1(tmp_path, *, epochs, chosen=None):
  return claims.plan('figure1', CIFAR_DIR, 'out', epochs=epochs, seeds=2,
                     rates=[0.001, 0.002], sweep_epochs=3, chosen=chosen)


def test_figure1_sweep_choice_and_lower_bound(at_fake_root):
  p = _figure1(at_fake_root, epochs=5)
  sweep = {(r.variant.overrides['model.activation'], r.variant.overrides[
      'optimizer.learning_rate']): r for r in p.runs if r.stage == 'sweep'}
  assert len(sweep) == 4 and [r.variant.seed for r in p.runs if r.stage == 'main'] == [0, 0, 1, 1]
  _write_run(sweep['relu', 0.001], [0.5, 0.3, 0.2])          # reaches 25% at epoch 3
  _write_run(sweep['relu', 0.002], [0.4, 0.2, 0.1])          # at epoch 2: chosen
  _write_run(sweep['tanh', 0.001], [0.7, 0.5, 0.4])          # never: the lowest end wins
  assert claims.choose_rates(claims.sweep_table(p)) == {'relu': 0.002}   # tanh unfinished
  _write_run(sweep['tanh', 0.002], [0.7, 0.5, 0.35])
  assert claims.choose_rates(claims.sweep_table(p)) == {'relu': 0.002, 'tanh': 0.002}
  p = _figure1(at_fake_root, epochs=5, chosen={'relu': 0.002, 'tanh': 0.002})
  main = {(r.variant.overrides['model.activation'], r.variant.seed): r
          for r in p.runs if r.stage == 'main'}
  assert main['relu', 0].variant.workdir == os.path.join('out', 'runs', 'figure1',
                                                         'relu_lr0.002', 'seed0')
  assert '--config.optimizer.learning_rate=0.002' in main['tanh', 1].variant.command
  # The seed runs stop at the first epoch at or below 25% training error; the sweep runs
  # (a few epochs each) do not.
  assert all('--config.stop_at_train_error=0.25' in r.variant.command for r in main.values())
  assert not any('stop_at_train_error' in r.variant.command for r in sweep.values())
  _write_run(main['relu', 0], [0.5, 0.2, 0.1, 0.1, 0.1])     # epoch 2
  _write_run(main['relu', 1], [0.5, 0.4, 0.3, 0.2, 0.1])     # epoch 4
  _write_run(main['tanh', 0], [0.7, 0.6, 0.5, 0.4, 0.3])     # never within 5 epochs
  _write_run(main['tanh', 1], [0.7, 0.6, 0.5, 0.4, 0.24])    # epoch 5
  written = claims.write_results(p, 'out', 'python -m experiments.cifar10_claims figure1')
  assert written == [os.path.join('out', 'figure1.json'), os.path.join('out', 'figure1.png')]
  r = json.load(open(written[0]))
  # The runs were given the folder outside the root as an absolute path; the file names it
  # relative to the root (no path of this machine in a committed result).
  assert os.path.isabs(CIFAR_DIR) and CIFAR_DIR in main['relu', 0].variant.command_line
  text = open(written[0]).read()
  assert f'--config.dataset.folder={CIFAR_DIR}' not in text
  assert f'--config.dataset.folder={os.path.relpath(CIFAR_DIR)} ' in text
  assert r['epochs_to_25pct_train_error'] == {'relu': 3.0, 'tanh': None}
  # tanh's seed 0 never reached 25%: the cap (5) stands in, and the ratio is a lower bound.
  assert r['ratio'] == pytest.approx((5 + 5) / 2 / 3.0) and r['ratio_kind'] == 'lower_bound'
  assert r['ratio_text'] == '>= 1.67'
  assert r['learning_rates'] == {'relu': 0.002, 'tanh': 0.002}
  assert r['seeds'] == [0, 1] and r['epochs'] == 5.0
  assert [s['epochs_to_25pct'] for s in r['per_seed']['tanh']] == [None, 5]
  table = {(row['activation'], row['learning_rate']): row for row in r['sweep']['table']}
  assert table['relu', 0.002]['epochs_to_25pct'] == 2
  assert table['tanh', 0.002]['final_train_error'] == pytest.approx(0.35)
  assert r['sweep']['epochs'] == 3.0 and r['sweep']['rates'] == [0.001, 0.002]
  # Both chose the highest rate swept: the sweep has not bracketed either, and says so.
  assert r['sweep']['chosen_at_edge'] == {'relu': 'highest', 'tanh': 'highest'}
  assert len(r['commands']) == 8 and r['commands'][0].startswith('python -m alexnet_jax.main')
  assert r['machine'] == {'cpu_model': 'fake cpu', 'note': r['machine']['note']}
  assert os.path.getsize(written[1]) > 0
  assert str(at_fake_root) not in json.dumps(r)


def test_figure1_exact_ratio_and_a_diverged_sweep_run(at_fake_root):
  p = _figure1(at_fake_root, epochs=4)
  sweep = [r for r in p.runs if r.stage == 'sweep']
  for run, errors in zip(sweep, ([0.3, 0.2, 0.1], None, [0.5, 0.4, 0.3], [0.5, 0.3, 0.2]),
                         strict=True):
    if errors is None:     # relu at 0.002 diverged: a result, never chosen nor retried
      _write_run(run, [0.9], returncode=3)
      assert claims.diverged(run.variant)
    else:
      _write_run(run, errors)
  table = claims.sweep_table(p)
  assert claims.choose_rates(table) == {'relu': 0.001, 'tanh': 0.002}
  # relu's 0.001 is the lowest rate swept but the next one up diverged: the lowest edge
  # (a slower rate could be faster) still stands. tanh took the highest.
  assert claims.rates_at_edge(table, {'relu': 0.001, 'tanh': 0.002}) == {
      'relu': 'lowest', 'tanh': 'highest'}
  assert claims.rates_at_edge(table, {}) == {}
  (relu_line, tanh_line) = claims.edge_warnings(table, {'relu': 0.001, 'tanh': 0.002})
  assert "relu's chosen learning rate 0.001 is the lowest swept" in relu_line
  assert 'add 0.0005 to --rates' in relu_line
  assert "tanh's chosen learning rate 0.002 is the highest swept" in tanh_line
  assert 'add 0.004 to --rates' in tanh_line
  p = _figure1(at_fake_root, epochs=4, chosen={'relu': 0.001, 'tanh': 0.002})
  for run in (r for r in p.runs if r.stage == 'main'):
    relu = run.variant.overrides['model.activation'] == 'relu'
    _write_run(run, [0.2, 0.1, 0.1, 0.1] if relu else [0.5, 0.4, 0.3, 0.2])
  r = claims.figure1_results(p)
  assert r['epochs_to_25pct_train_error'] == {'relu': 1.0, 'tanh': 4.0}
  assert r['ratio'] == 4.0 and r['ratio_kind'] == 'exact' and r['ratio_text'] == '4.00'
  assert r['sweep']['chosen_at_edge'] == {'relu': 'lowest', 'tanh': 'highest'}


def test_figure1_default_sweep_chooses_by_epochs_to_25pct(at_fake_root):
  """Without --sweep_epochs each sweep run is as long as a seed run and stops at 25% like
  one; the default rates span 0.001-0.064 (tanh's best here was 0.032, ReLU's 0.004)."""
  p = claims.plan('figure1', CIFAR_DIR, 'out', seeds=1)
  assert p.epochs == 80.0 and p.sweep_epochs == 80.0
  assert p.rates == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064]
  sweep = [r for r in p.runs if r.stage == 'sweep']
  assert len(sweep) == 14
  assert all('--config.stop_at_train_error=0.25' in r.variant.command and
             '--config.num_epochs=80.0' in r.variant.command for r in sweep)
  short = claims.plan('figure1', CIFAR_DIR, 'out', seeds=1, sweep_epochs=10)
  assert not any('stop_at_train_error' in r.variant.command
                 for r in short.runs if r.stage == 'sweep')


def test_figure1_a_bracketed_choice_is_not_at_the_edge():
  table = [{'activation': 'tanh', 'learning_rate': lr} for lr in (0.016, 0.032, 0.064)]
  assert claims.rates_at_edge(table, {'tanh': 0.032}) == {}
  assert claims.edge_warnings(table, {'tanh': 0.032}) == []
  assert claims.rates_at_edge(table, {'tanh': 0.064}) == {'tanh': 'highest'}


# --- lrn and dropout --------------------------------------------------------------------

def test_lrn_results_welch_and_keys(at_fake_root):
  p = claims.plan('lrn', CIFAR_DIR, 'out', epochs=32, seeds=3)
  assert p.common['schedule.step_epochs'] == (30.0, 31.0)      # 300/320, 310/320 of 32
  errors = {'with_lrn': [0.10, 0.11, 0.12], 'without_lrn': [0.13, 0.14, 0.15],
            'constant_control': [0.13, 0.14, 0.16]}
  for run in p.runs:
    err = errors[run.variant.name][run.variant.seed]
    _write_run(run, [0.5], val_errors=[err + 0.01])
    if not (run.variant.name == 'constant_control' and run.variant.seed == 2):
      _write_eval(run, {1: 1 - err, 10: 1 - err + 0.01})
    # else: no evaluation JSON, the run's last centre-crop evaluation stands in
  written = claims.write_results(p, 'out', 'cmd')
  assert written == [os.path.join('out', 'lrn.json'), os.path.join('out', 'lrn.png'),
                     os.path.join('out', 'lrn.md')]
  assert os.path.getsize(written[1]) > 10_000          # a drawn figure, not an empty file
  r = json.load(open(written[0]))
  assert set(r) >= {'with_lrn', 'without_lrn', 'constant_control', 'welch_p', 'epochs',
                    'commands', 'machine', 'seeds'}
  for name in ('with_lrn', 'without_lrn', 'constant_control'):
    assert set(r[name]) >= {'val_error_mean', 'val_error_std', 'n', 'values'}
    assert r[name]['n'] == 3
  assert r['with_lrn']['values'] == pytest.approx([0.10, 0.11, 0.12])
  assert r['with_lrn']['val_error_mean'] == pytest.approx(0.11)
  assert r['with_lrn']['val_error_std'] == pytest.approx(0.01)
  assert r['with_lrn']['val_error_10crop_mean'] == pytest.approx(0.10)
  assert r['constant_control']['values'] == pytest.approx([0.13, 0.14, 0.17])
  # Welch: equal variances 1e-4, n 3: t = -0.03 / sqrt(2e-4 / 3), df 4.
  from scipy import stats
  t = -0.03 / (2e-4 / 3) ** 0.5
  assert r['welch_p'] == pytest.approx(2 * stats.t.sf(abs(t), 4))
  assert r['welch_p'] < 0.05 and r['epochs'] == 32.0
  assert len(r['commands']) == 18 and 'alexnet_jax.evaluate' in r['commands'][1]
  curve = r['with_lrn']['curves'][2]
  assert curve['seed'] == 2 and curve['val_error_per_epoch'] == pytest.approx([0.13])
  text = open(written[2]).read()
  assert '![validation error per epoch](lrn.png)' in text
  assert '| with_lrn | `model.lrn=cuda_convnet` | 3 | 11.00 ± 1.00 |' in text
  assert '| 11 |' in text and '| 13 |' in text and 'constant_control' in text
  assert 'epochs 30, 31' in text


def test_dropout_gap(at_fake_root):
  p = claims.plan('dropout', CIFAR_DIR, 'out', epochs=3, seeds=1)
  assert [r.variant.name for r in p.runs] == ['with_dropout', 'without_dropout']
  assert '--split=train' in p.runs[0].evals[0]
  numbers = {'with_dropout': (0.30, 0.35), 'without_dropout': (0.05, 0.40)}
  for run in p.runs:
    train, val = numbers[run.variant.name]
    _write_run(run, [0.6, 0.4, 0.2], val_errors=[0.6, 0.5, val])
    _write_eval(run, {1: 1 - train}, split='train')
  written = claims.write_results(p, 'out', 'cmd')
  r = json.load(open(os.path.join('out', 'dropout.json')))
  assert set(r['with_dropout']) >= {'train_error', 'val_error', 'gap'}
  assert r['with_dropout']['gap'] == pytest.approx(0.05)
  assert r['without_dropout']['gap'] == pytest.approx(0.35)
  assert r['gap_ratio'] == pytest.approx(0.05 / 0.35)
  assert r['without_dropout']['values'][0]['train_error_source'].startswith('evaluate')
  assert r['epochs'] == 3.0 and r['seeds'] == [0]
  assert {os.path.basename(w) for w in written} == {'dropout.json', 'dropout.png',
                                                    'dropout.md'}
  assert '| without_dropout | 1 | 5.00 | 40.00 | 35.00 |' in open(written[-1]).read()


# --- the command ------------------------------------------------------------------------

def test_dry_run_prints_the_commands(tmp_path):
  out = run_cli('experiments.cifar10_claims', 'figure1', f'--folder={CIFAR_DIR}',
                f'--out={tmp_path}', '--epochs=4', '--sweep_epochs=2', '--seeds=2',
                '--rates=0.001,0.004', '--dry_run')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4 + 1 + 4 and lines[4].startswith('# the seed runs')
  assert lines[0].endswith('--config.model.activation=relu '
                           '--config.optimizer.learning_rate=0.001 --config.seed=0 '
                           '--config.num_epochs=2.0')
  assert 'tanh_lr0.004/seed0' in lines[3]
  assert lines[-1].endswith('--config.optimizer.learning_rate=SWEPT --config.seed=1 '
                            '--config.num_epochs=4.0')
  assert not (tmp_path / 'runs').exists()
  out = run_cli('experiments.cifar10_claims', 'lrn', f'--folder={CIFAR_DIR}',
                f'--out={tmp_path}', '--epochs=32', '--set=batch_size=64', '--dry_run')
  lines = out.stdout.strip().splitlines()
  assert out.returncode == 0 and len(lines) == 3 * 3 * 2
  assert "'--config.schedule.step_epochs=(30.0,31.0)' --config.batch_size=64" in lines[0]
  assert lines[1].startswith('python -m alexnet_jax.evaluate') and '--crops=1,10' in lines[1]
  assert '--config.model.lrn=constant --config.seed=0' in lines[4]


def test_bad_input_is_a_usage_error(tmp_path):
  for args, message in [
      (['bogus', f'--folder={CIFAR_DIR}'], "unknown claim 'bogus'; allowed: figure1, lrn"),
      (['lrn'], '--folder is required'),
      (['lrn', f'--folder={tmp_path}/none'], 'is not a directory'),
      (['lrn', f'--folder={CIFAR_DIR}', '--set=model.nope=1'], "--set 'model.nope=1'"),
      (['figure1', f'--folder={CIFAR_DIR}', '--rates=fast'], '--rates=fast: expected numbers')]:
    out = run_cli('experiments.cifar10_claims', *args, '--dry_run')
    assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    assert 'Traceback' not in out.stderr


@pytest.mark.slow
def test_figure1_end_to_end_on_real_images(tmp_path):
  """One rate x 2 activations swept for an epoch, then 2 seeds each for 2 epochs, on the 200
  CIFAR-10 JPEGs (batches of 16, one device): the result files and their keys (the choice
  among several rates is the fast tests' subject; each run here is a process start)."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = run_cli('experiments.cifar10_claims', 'figure1', f'--folder={CIFAR_DIR}',
                f'--out={tmp_path}', '--epochs=2', '--sweep_epochs=1', '--seeds=2',
                '--rates=0.004', '--set=batch_size=16', '--set=eval_batch_size=16',
                '--set=log_every_steps=5', '--set=checkpoint_every_steps=10',
                f'--set=dataset.data_dir={tmp_path}/data', env=env, timeout=1800)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  r = json.load(open(tmp_path / 'figure1.json'))
  assert set(r) >= {'epochs_to_25pct_train_error', 'ratio', 'ratio_kind', 'learning_rates',
                    'seeds', 'per_seed', 'sweep', 'epochs', 'commands', 'machine'}
  assert set(r['learning_rates']) == {'relu', 'tanh'}
  assert r['learning_rates'] == {'relu': 0.004, 'tanh': 0.004}
  assert r['seeds'] == [0, 1] and r['epochs'] == 2.0 and len(r['commands']) == 6
  for act in ('relu', 'tanh'):
    assert [len(s['train_error_per_epoch']) for s in r['per_seed'][act]] == [2, 2]
    assert all(s['status'] == 'finished' for s in r['per_seed'][act])
  assert r['machine']['backend'] == 'cpu'
  assert (tmp_path / 'figure1.png').stat().st_size > 0
  assert (tmp_path / 'runs' / '.gitignore').read_text().endswith('*\n')
  # Everything finished: a second invocation runs nothing and rewrites the same numbers.
  again = run_cli('experiments.cifar10_claims', 'figure1', f'--folder={CIFAR_DIR}',
                  f'--out={tmp_path}', '--epochs=2', '--sweep_epochs=1', '--seeds=2',
                  '--rates=0.004', '--set=batch_size=16', '--set=eval_batch_size=16',
                  '--set=log_every_steps=5', '--set=checkpoint_every_steps=10',
                  f'--set=dataset.data_dir={tmp_path}/data', '--report_only', env=env)
  assert again.returncode == 0, again.stderr
  assert json.load(open(tmp_path / 'figure1.json'))['per_seed'] == r['per_seed']
