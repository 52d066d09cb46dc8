"""experiments/ablations_lib.py (overrides, commands, report) and the ablations command."""

import os
import shlex

import pytest
from absl import flags
from data_utils import REPO, get_field, run_cli, write_metrics
from ml_collections import config_flags

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
    got = get_field(config, key)
    if isinstance(value, tuple):
      got, value = tuple(got), tuple(value)
      assert all(type(g) is int for g in got), key
    assert got == value and type(got) is type(value), key


def test_baseline_is_first_and_unchanged(default_config, tmp_path):
  variants = ablations.plan(['lrn', 'pooling'], DEFAULT, str(tmp_path), base_config=default_config)
  assert [v.name for v in variants] == ['baseline', 'lrn', 'pooling']
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


def test_dry_run_prints_commands_and_runs_nothing(tmp_path):
  root = tmp_path / 'root'
  out = run_cli('experiments.ablations', '--sweep=towers', f'--base={DEFAULT}', f'--root={root}',
                '--epochs=2', '--dry_run')
  assert out.returncode == 0, out.stderr
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
  for v, top1 in zip(variants, (0.60, 0.55, 0.625), strict=True):
    write_metrics(v.workdir, top1)
    done = v.name != 'pooling'                  # pooling: interrupted, resumable
    ablations.write_marker(v.workdir, {'command': v.command, 'wall_s': 95.0,
                                        'finished': done, 'returncode': 0 if done else -2})
    assert ablations.is_finished(v) == done
  md, png = ablations.write_report(variants, 'results', str(tmp_path / DEFAULT), 3)
  assert md == os.path.join('results', 'ablations.md')
  text = open(md).read()
  rows = [line for line in text.splitlines() if line.startswith('| ')][1:]
  assert [r.split(' | ')[0] for r in rows] == ['| baseline', '| lrn', '| pooling (unfinished)']
  assert '| 60.0% | 90.0% | 60.0% | - | 3 | 1m35s |' in rows[0]
  assert '-5.0 pp' in rows[1] and '+2.5 pp' in rows[2]
  assert '`model.lrn=none`' in rows[1]
  assert os.path.getsize(png) > 0 and '![curves](ablations.png)' in text
  assert 'standard error is about 1.5 pp' in text          # sqrt(0.6 * 0.4 / 1000)
  assert f'overridden (3; the base trains for {default_config.num_epochs:g})' in text
  # Committed reports hold no path of the machine they ran on.
  assert str(tmp_path) not in text and REPO not in text
  assert 'Base config `configs/default.py`' in text
  assert ('python -m alexnet_jax.main --config=configs/default.py '
          '--workdir=results/runs/lrn --config.model.lrn=none') in text
