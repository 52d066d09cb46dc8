"""experiments/ablations_lib.py (overrides, commands, report) and the ablations command."""

import os
import shlex

import pytest
from absl import flags
from data_utils import REPO, run_cli, write_metrics
from ml_collections import config_flags

from alexnet_jax.common import fields
from experiments import ablations_lib as ablations

DEFAULT = 'configs/default.py'     # as a user passes it, from the repository root


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
  """Commands are written relative to the current directory: run from the repository root."""
  monkeypatch.chdir(REPO)


EXPECTED = {
    'lrn': {'model.lrn': 'none'},
    'pooling': {'model.pooling': 'non_overlapping'},
    'towers': {'model.towers': 1, 'model.conv_widths': (24, 64, 96, 96, 128),
               'mesh.model': 1},
    'lighting': {'input.pca_lighting': 0.0},
    'activation': {'model.activation': 'tanh'},
    'dropout': {'model.dropout_rate': 0.5},      # the default config has none
}


@pytest.fixture(scope='module')
def default_config():
  return ablations.load_config(DEFAULT)


def test_every_ablation_is_tested():
  assert set(EXPECTED) == set(ablations.ABLATIONS)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_overrides_and_command(name, default_config, tmp_path):
  assert ablations.ablation_overrides(name, default_config) == EXPECTED[name]
  (variant,) = [v for v in ablations.plan([name], DEFAULT, str(tmp_path),
                                          base_config=default_config, epochs=3)
                if v.name == name]
  argv = variant.command
  assert argv[:3] == ['python', '-m', 'alexnet_jax.main']
  assert f'--config={DEFAULT}' in argv and f'--workdir={tmp_path / name}' in argv
  assert argv[-1] == '--config.num_epochs=3.0'
  # The printed line is what a user copies: it must parse back to the same argv, and
  # ml_collections must turn its flags into exactly the intended config.
  assert shlex.split(variant.command_line) == argv
  args = ['prog'] + [a for a in argv[3:] if not a.startswith('--workdir')]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=args)
  flag_values(args)
  config = flag_values.config
  assert config.num_epochs == 3.0
  for key, value in EXPECTED[name].items():
    got = fields.get_field(config, key)
    if isinstance(value, tuple):
      got, value = tuple(got), tuple(value)
      assert all(type(g) is int for g in got), key
    assert got == value and type(got) is type(value), key


def test_baseline_is_first_and_unchanged(default_config, tmp_path):
  variants = ablations.plan(['lrn', 'pooling'], DEFAULT, str(tmp_path), base_config=default_config)
  # lrn brings its control, lrn_constant, right after it.
  assert [v.name for v in variants] == ['baseline', 'lrn', 'lrn_constant', 'pooling']
  assert variants[0].overrides == {}
  assert not [a for a in variants[0].command if a.startswith('--config.')]


def test_commands_hold_repository_relative_paths(default_config, tmp_path):
  """Paths inside the repository are written relative to it (reports get committed);
  others stay absolute (main.py makes a relative workdir absolute itself)."""
  inside = os.path.join(REPO, 'experiments', 'results', 'x')
  (rel,) = ablations.plan([], os.path.join(REPO, DEFAULT), inside, base_config=default_config)
  assert rel.workdir == os.path.join('experiments', 'results', 'x', 'baseline')
  assert rel.command[3:5] == [f'--config={DEFAULT}', f'--workdir={rel.workdir}']
  (rel,) = ablations.plan([], f'{DEFAULT}:towers=1', 'rel/runs', base_config=default_config)
  assert rel.command[3:5] == [f'--config={DEFAULT}:towers=1', '--workdir=rel/runs/baseline']
  (outside,) = ablations.plan([], DEFAULT, str(tmp_path), base_config=default_config)
  assert outside.workdir == str(tmp_path / 'baseline')


def test_unknown_ablation_lists_the_allowed_ones(default_config):
  allowed = 'lrn, pooling, towers, lighting, activation, dropout'
  with pytest.raises(ValueError, match=f'unknown ablation.*bogus.*allowed: {allowed}'):
    ablations.ablation_overrides('bogus', default_config)
  with pytest.raises(ValueError, match=f'unknown ablation.*nope.*allowed: {allowed}'):
    ablations.parse_sweep('lrn,nope')
  assert ablations.parse_sweep(' lrn, pooling,lrn ') == ['lrn', 'pooling']


def test_ablations_follow_the_base_config(tmp_path):
  one_tower = ablations.load_config('configs/one_tower.py')
  for name in ('lrn', 'towers'):                 # one_tower.py has neither LRN nor 2 towers
    with pytest.raises(ablations.NotApplicable):
      ablations.ablation_overrides(name, one_tower)
  logged = []
  names = [v.name for v in ablations.plan(['lrn', 'towers', 'dropout'], 'x.py', str(tmp_path),
                                          base_config=one_tower, log=logged.append)]
  assert names == ['baseline', 'dropout'] and len(logged) == 2
  # The paper config has dropout 0.5: the ablation turns it off.
  assert ablations.ablation_overrides('dropout', one_tower) == {'model.dropout_rate': 0.0}


def test_the_lrn_control_follows_the_base_lrn(default_config, tmp_path):
  """lrn_constant (model.lrn=constant keeps the paper formula's 2^-0.75) is the control only
  for the paper's LRN; for the others the reason is logged and the variant left out."""
  assert ablations.ablation_overrides('lrn_constant', default_config) == {
      'model.lrn': 'constant'}
  for lrn, reason in (('caffe', 'k=1'), ('cuda_convnet', 'same net as model.lrn=none'),
                      ('constant', 'constant control already'), ('none', 'no LRN')):
    config = ablations.load_config(DEFAULT)
    config.model.lrn = lrn
    with pytest.raises(ablations.NotApplicable, match=reason):
      ablations.ablation_overrides('lrn_constant', config)
    logged = []
    names = [v.name for v in ablations.plan(['lrn'], DEFAULT, str(tmp_path),
                                            base_config=config, log=logged.append)]
    assert 'lrn_constant' not in names
    assert names == (['baseline'] if lrn == 'none' else ['baseline', 'lrn'])
    assert len(logged) == 1
  with pytest.raises(ValueError, match='reserved'):
    ablations.parse_grid('lrn_constant:model.lrn=constant', default_config)
  out = run_cli('experiments.ablations', '--sweep=lrn', f'--base={DEFAULT}',
                f'--out={tmp_path}', '--dry_run')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3 and lines[1].endswith(f'{tmp_path}/runs/lrn --config.model.lrn=none')
  assert lines[2].endswith(f'{tmp_path}/runs/lrn_constant --config.model.lrn=constant')


def test_dry_run_prints_commands_and_runs_nothing(tmp_path):
  root = tmp_path / 'root'
  out = run_cli('experiments.ablations', '--sweep=towers', f'--base={DEFAULT}', f'--out={root}',
                '--epochs=2', '--dry_run')
  assert out.returncode == 0, out.stderr
  assert 'deprecated' not in out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 2 and all(line.startswith('python -m alexnet_jax.main ') for line in lines)
  assert "'--config.model.conv_widths=(24,64,96,96,128)'" in lines[1]
  assert f'--config={DEFAULT} ' in lines[0] and '--config.num_epochs=2.0' in lines[0]
  assert not root.exists()
  bad = run_cli('experiments.ablations', '--sweep=lrn,bogus', '--dry_run')
  assert bad.returncode == 2 and 'error: unknown ablation(s) bogus; allowed: lrn' in bad.stderr
  assert 'Traceback' not in bad.stderr


def test_report_table_from_finished_runs(default_config, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)                     # stands in for the repository root
  os.symlink(os.path.join(REPO, 'configs'), 'configs')
  variants = ablations.plan(['lrn', 'pooling'], DEFAULT, 'results/runs',
                            base_config=default_config, epochs=3)
  for v, top1 in zip(variants, (0.60, 0.55, 0.57, 0.625), strict=True):
    write_metrics(v.workdir, top1)
    done = v.name != 'pooling'                  # pooling: interrupted, resumable
    ablations.write_marker(v.workdir, {'command': v.command, 'wall_s': 95.0,
                                        'finished': done, 'returncode': 0 if done else -2})
    assert ablations.is_finished(v) == done
  md, png = ablations.write_report(variants, 'results', str(tmp_path / DEFAULT), 3)
  assert md == os.path.join('results', 'ablations.md')
  text = open(md).read()
  rows = [line for line in text.splitlines() if line.startswith('| ')][1:]
  assert [r.split(' | ')[0] for r in rows] == ['| baseline', '| lrn', '| lrn_constant',
                                               '| pooling']
  # One seed: no std, no test; the unfinished run is listed but not counted. lrn is also
  # compared with its control (55.0 - 57.0).
  assert '| - | 1 | 60.0 | 60.0% | 90.0 | - | - | - | - | - | - | 1m35s |' in rows[0]
  assert '| 1 | 55.0 | 55.0% |' in rows[1] and '| -5.0 | - | n/a |' in rows[1]
  assert '| -2.0 (vs lrn_constant) | - | n/a |' in rows[1]
  assert '`model.lrn=constant` | 1 | 57.0 |' in rows[2] and '| -3.0 | - | n/a | - |' in rows[2]
  assert '| 0 | - | 62.5% (unfinished) |' in rows[3]
  assert ('normalisation effect is baseline - lrn_constant = +3.0 pp' in text
          and 'lrn - lrn_constant = -2.0 pp is the rescaling alone' in text)
  assert '`model.lrn=none`' in rows[1]
  assert os.path.getsize(png) > 0 and '](ablations.png)' in text
  assert 'standard error of one evaluation is about 1.5 pp' in text   # sqrt(.6 * .4 / 1000)
  assert f'overridden (3; the base trains for {default_config.num_epochs:g})' in text
  # Committed reports hold no path of the machine they ran on.
  assert str(tmp_path) not in text and REPO not in text
  assert 'Base config `configs/default.py`' in text
  assert ('python -m alexnet_jax.main --config=configs/default.py '
          '--workdir=results/runs/lrn --config.model.lrn=none') in text


# --- grid, seeds, statistics, JSON ----------------------------------------------

def test_grid_parser(default_config):
  grid = ablations.parse_grid(
      ['model.lrn=caffe; nowd:optimizer.weight_decay=0.0 --config.model.dropout_rate=0.5',
       'optimizer.learning_rate=0.005|0.02 model.conv_widths=(24,64,96,96,128)'],
      default_config)
  assert [g.name for g in grid] == [
      'lrn=caffe', 'nowd',
      'learning_rate=0.005+conv_widths=24_64_96_96_128',
      'learning_rate=0.02+conv_widths=24_64_96_96_128']
  assert grid[1].overrides == {'optimizer.weight_decay': '0.0', 'model.dropout_rate': '0.5'}
  assert grid[3].overrides == {'optimizer.learning_rate': '0.02',
                               'model.conv_widths': '(24,64,96,96,128)'}
  named = ablations.parse_grid('lr:optimizer.learning_rate=0.005|0.02')
  assert [g.name for g in named] == ['lr+learning_rate=0.005', 'lr+learning_rate=0.02']
  for bad, match in (('model.lrnn=none', "no field 'model.lrnn'"),
                     ('model.lrn', 'expected KEY=VALUE'),
                     ('baseline:model.lrn=none', 'reserved'),
                     ('model.lrn=none; model.lrn=none', 'repeat'),
                     ('model.lrn=none model.lrn=caffe', 'twice')):
    with pytest.raises(ValueError, match=match):
      ablations.parse_grid(bad, default_config)


def test_seeds_expand_every_variant_with_its_own_workdir(default_config, tmp_path):
  grid = ablations.parse_grid('model.lrn=caffe', default_config)
  variants = ablations.plan(['lrn'], DEFAULT, str(tmp_path), base_config=default_config,
                            grid=grid, seeds=3)
  assert [(v.name, v.seed) for v in variants] == [
      (n, s) for s in (0, 1, 2) for n in ('baseline', 'lrn', 'lrn_constant', 'lrn=caffe')]
  assert len({v.workdir for v in variants}) == 12
  v = variants[-1]
  assert v.workdir == str(tmp_path / 'lrn=caffe' / 'seed2')
  assert v.command[-2:] == ['--config.model.lrn=caffe', '--config.seed=2']
  assert v.overrides == {'model.lrn': 'caffe'}          # the seed is not an override
  assert list(ablations.group(variants)) == ['baseline', 'lrn', 'lrn_constant', 'lrn=caffe']
  assert ablations.seed_list(5, None) == [None] and ablations.seed_list(5, 2) == [5, 6]
  with pytest.raises(ValueError, match='at least 1'):
    ablations.seed_list(0, 0)


def test_statistics_against_known_numbers():
  mean, std = ablations.mean_std([0.5, 0.6, 0.7])
  assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
  assert ablations.mean_std([0.4]) == (0.4, None) and ablations.mean_std([]) == (None, None)
  # Welch: a = (1, 2, 3), b = (4, 5, 6, 7): diff -3.5, se sqrt(1/3 + 1.6667/4) = 0.8660,
  # t -4.041, df 4.959, p 0.01008 (scipy.stats.ttest_ind(a, b, equal_var=False)).
  w = ablations.welch([1, 2, 3], [4, 5, 6, 7])
  assert w['diff'] == pytest.approx(-3.5)
  assert w['se'] == pytest.approx(0.8660, abs=1e-4)
  assert w['t'] == pytest.approx(-4.0415, abs=1e-3)
  assert w['df'] == pytest.approx(4.9592, abs=1e-3)
  assert w['p'] == pytest.approx(0.010077, abs=1e-5)
  assert ablations.welch([1.0], [2.0, 3.0])['p'] is None
  assert ablations.welch([1.0, 1.0], [1.0, 1.0])['p'] == 1.0
  assert ablations.significance(0.001, 6) == 'yes'
  assert ablations.significance(0.03, 6) == 'p<0.05 only'
  assert ablations.significance(0.2, 6) == 'no' and ablations.significance(None, 6) == 'n/a'


def _fake_sweep(tmp_path, default_config, top1s, *, unfinished=()):
  variants = ablations.plan(['lrn'], DEFAULT, 'results/runs', base_config=default_config,
                            seeds=3)
  for v in variants:
    write_metrics(v.workdir, top1s[v.name][v.seed])
    done = (v.name, v.seed) not in unfinished
    ablations.write_marker(v.workdir, {'command': v.command, 'wall_s': 60.0,
                                        'finished': done, 'returncode': 0 if done else -2})
  return variants


def test_json_and_table_with_seeds(default_config, tmp_path, monkeypatch):
  import json
  monkeypatch.chdir(tmp_path)
  os.symlink(os.path.join(REPO, 'configs'), 'configs')
  top1s = {'baseline': [0.60, 0.62, 0.64], 'lrn': [0.50, 0.51, 0.52],
           'lrn_constant': [0.55, 0.56, 0.57]}
  variants = _fake_sweep(tmp_path, default_config, top1s, unfinished={('lrn', 2)})
  md, png = ablations.write_report(variants, 'results', DEFAULT, None)
  report = json.load(open(os.path.join('results', 'ablations.json')))
  assert report['base'] == DEFAULT and report['seeds'] == [0, 1, 2]
  base, lrn, control = report['variants']
  assert base['name'] == 'baseline' and base['n'] == 3 and 'vs_baseline' not in base
  assert base['final_top1_mean'] == pytest.approx(0.62)
  assert base['final_top1_std'] == pytest.approx(0.02)
  assert [r['seed'] for r in base['runs']] == [0, 1, 2]
  assert set(base['runs'][0]) >= {'seed', 'workdir', 'command', 'finished', 'final_top1',
                                  'final_top5', 'final_loss', 'wall_s'}
  assert lrn['n'] == 2                                   # the unfinished seed is left out
  assert lrn['overrides'] == {'model.lrn': 'none'}
  vs = lrn['vs_baseline']
  assert vs['diff_top1'] == pytest.approx(0.505 - 0.62)
  assert vs['p_welch'] < 0.05 and vs['significant'] in ('yes', 'p<0.05 only')
  # The control: the LRN's constant factor kept, compared with the baseline (the LRN's
  # normalisation effect, sign reversed) and with no LRN (the rescaling alone).
  assert control['name'] == 'lrn_constant' and control['overrides'] == {'model.lrn': 'constant'}
  assert control['vs_baseline']['diff_top1'] == pytest.approx(0.56 - 0.62)
  assert 'vs_control' not in control and 'vs_control' not in base
  vc = lrn['vs_control']
  assert vc['control'] == 'lrn_constant' and vc['diff_top1'] == pytest.approx(0.505 - 0.56)
  # Welch on (0.50, 0.51) vs (0.55, 0.56, 0.57): sample variances 5e-5 and 1e-4, so
  # se = sqrt(5e-5 / 2 + 1e-4 / 3) = 0.0076.
  assert vc['se'] == pytest.approx((0.0001 / 2 * 0.5 + 0.0001 / 3) ** 0.5, rel=1e-6)
  assert '3 comparisons' in report['test'] and 'vs_control' in report['test']
  text = open(md).read()
  row = [line for line in text.splitlines() if line.startswith('| lrn ')][0]
  assert '| 2 | 50.5 ± 0.7 |' in row and 's2: 52.0% (unfinished)' in row
  assert '-11.5 ± ' in row
  assert '| 62.0 ± 2.0 | s0: 60.0%, s1: 62.0%, s2: 64.0% |' in text
  assert '-5.5 ± 0.8 (vs lrn_constant)' in row
  assert 'Bonferroni over the 3 comparisons' in text and os.path.getsize(png) > 0
  assert str(tmp_path) not in text and str(tmp_path) not in json.dumps(report)


def test_finished_runs_are_skipped(default_config, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  os.symlink(os.path.join(REPO, 'configs'), 'configs')
  top1s = {'baseline': [0.6] * 3, 'lrn': [0.5] * 3, 'lrn_constant': [0.55] * 3}
  variants = _fake_sweep(tmp_path, default_config, top1s)
  calls = []
  monkeypatch.setattr(ablations.subprocess, 'call', lambda *a, **k: calls.append(a) or 0)
  assert all(ablations.run_variant(v, i, len(variants), 0.0)
             for i, v in enumerate(variants, start=1))
  assert not calls and 'already finished' in capsys.readouterr().out
  # A changed command (e.g. other epochs) is not the finished run: it runs.
  v = variants[0]
  v.command = [*v.command, '--config.num_epochs=1.0']
  assert ablations.run_variant(v, 1, 1, 0.0) and len(calls) == 1
  assert ablations.is_finished(v)


def test_grid_and_seeds_dry_run(tmp_path):
  out = run_cli('experiments.ablations', '--sweep=', '--grid=model.lrn=caffe', '--seeds=2',
                f'--base={DEFAULT}', f'--root={tmp_path}', '--dry_run')
  assert out.returncode == 0, out.stderr
  # --root is the old name of --out: it still works, for one release, with a warning.
  assert 'warning: --root is deprecated' in out.stderr and f'{tmp_path}/runs' in out.stdout
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4
  assert lines[3].endswith('--config.model.lrn=caffe --config.seed=1')
  bad = run_cli('experiments.ablations', '--grid=model.nope=1', '--dry_run')
  assert bad.returncode == 2 and "no field 'model.nope'" in bad.stderr


def test_set_puts_an_override_on_every_run_of_a_cifar_base(tmp_path):
  """--set=FIELD=VALUE: on every command, the baseline's included (a CIFAR-10 base needs its
  dataset folder); the ablations that do not apply to the conv-local net are skipped by
  name; a field the base does not have is exit 2."""
  out = run_cli('experiments.ablations', '--base=configs/cifar10_conv_local.py',
                '--sweep=lrn,pooling,activation,dropout,towers', '--seeds=2',
                '--set=dataset.folder=/data/cifar10', '--set=dataset.data_dir=/data/tfds',
                f'--out={tmp_path}', '--epochs=3', '--dry_run')
  assert out.returncode == 0, out.stderr
  lines = [x for x in out.stdout.splitlines() if x.startswith('python -m alexnet_jax.main')]
  assert len(lines) == 8                      # baseline, lrn, pooling, activation x 2 seeds
  assert all('--config.dataset.folder=/data/cifar10 --config.dataset.data_dir=/data/tfds'
             in line for line in lines)
  assert '--config.model.lrn=none' in lines[1] and lines[0].endswith(
      '--config.seed=0 --config.num_epochs=3.0')
  assert 'skipping dropout' in out.stdout + out.stderr
  assert 'skipping towers' in out.stdout + out.stderr
  bad = run_cli('experiments.ablations', '--base=configs/cifar10_conv_local.py',
                '--sweep=lrn', '--set=dataset.foldr=/x', '--dry_run')
  assert bad.returncode == 2 and "--set 'dataset.foldr=/x'" in bad.stderr
