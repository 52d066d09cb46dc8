"""alexnet_jax.plots (metrics.jsonl reading, PNG curves) and experiments/ablations.py's commands."""

import importlib.util
import json
import os
import shlex
import sys

import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from alexnet_jax import plots

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, 'configs', 'default.py')


def _load_ablations():
  path = os.path.join(REPO, 'experiments', 'ablations.py')
  spec = importlib.util.spec_from_file_location('ablations', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules['ablations'] = module      # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


ablations = _load_ablations()


def _write_run(workdir, final_top1, *, steps_per_epoch=78, evals=3, extra_lines=()):
  """A synthetic metrics.jsonl: train records every 20 steps, an eval per epoch."""
  os.makedirs(workdir, exist_ok=True)
  lines = []
  for e in range(1, evals + 1):
    for step in range((e - 1) * steps_per_epoch + 20, e * steps_per_epoch, 20):
      lines.append(json.dumps({'step': step, 'split': 'train', 'loss': 2.3 / (1 + step / 50),
                               'top1': min(0.9, step / 300), 'top5': 0.9,
                               'learning_rate': 0.01, 'images_per_sec': 500.0,
                               'epoch': step / steps_per_epoch}))
    top1 = final_top1 * e / evals
    lines.append(json.dumps({'step': e * steps_per_epoch, 'split': 'eval', 'loss': 2.0 / e,
                             'top1': top1, 'top5': min(1.0, top1 + 0.3), 'count': 1000.0,
                             'learning_rate': 0.01}))
  lines.extend(extra_lines)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return lines


# --- read_metrics ------------------------------------------------------------------

def test_read_metrics_parses_and_counts_skipped_lines(tmp_path):
  good = _write_run(tmp_path / 'run', 0.6, extra_lines=[
      '{"step": 240, "split": "train", "loss": 0.5',      # cut short by a crash
      '',                                                  # blank: ignored silently
      '[1, 2, 3]',                                         # JSON but not an object
      '{"loss": 1.0}',                                     # no step/split
  ])
  good = [line for line in good if line.startswith('{"step"') and line.endswith('}')]
  with pytest.warns(UserWarning, match=r'skipped 3 malformed line\(s\) \(first: line \d+\)'):
    records = plots.read_metrics(str(tmp_path / 'run'))
  assert len(records) == len(good)
  assert records[0] == json.loads(good[0])
  assert {r['split'] for r in records} == {'train', 'eval'}
  assert plots.final_eval(records)['step'] == 3 * 78
  assert plots.best_eval_top1(records) == pytest.approx(0.6)
  assert plots.steps_per_epoch(records) == pytest.approx(78)


def test_read_metrics_clean_file_does_not_warn(tmp_path, recwarn):
  _write_run(tmp_path / 'run', 0.5)
  records = plots.read_metrics(str(tmp_path / 'run' / 'metrics.jsonl'))  # the file itself
  assert records and not [w for w in recwarn if 'malformed' in str(w.message)]


def test_read_metrics_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'no_such_run[/\\]metrics\.jsonl'):
    plots.read_metrics(str(tmp_path / 'no_such_run'))


def test_split_series_later_record_wins_on_resume():
  records = [{'step': 20, 'split': 'train', 'loss': 3.0},
             {'step': 40, 'split': 'train', 'loss': 2.0},
             {'step': 20, 'split': 'train', 'loss': 2.5},     # replayed after a resume
             {'step': 40, 'split': 'eval', 'loss': 9.0}]
  assert plots.split_series(records, 'train', 'loss') == ([20, 40], [2.5, 2.0])
  assert plots.split_series(records, 'eval', 'top1') == ([], [])


# --- plot_runs ---------------------------------------------------------------------

@pytest.mark.parametrize('x', ['step', 'epoch'])
def test_plot_runs_writes_png(tmp_path, x):
  _write_run(tmp_path / 'a', 0.6)
  _write_run(tmp_path / 'b', 0.4)
  out = tmp_path / 'out' / 'curves.png'
  path = plots.plot_runs([str(tmp_path / 'a'), str(tmp_path / 'b')], str(out), x=x)
  assert path == str(out)
  assert out.stat().st_size > 10_000          # four panels of curves, not a blank canvas
  with Image.open(out) as im:
    assert im.format == 'PNG'
    assert im.size == (880, 600)              # figsize (11, 7.5) at dpi 80
    assert len(im.getcolors(1 << 16)) > 10    # several line colours, not one flat fill


def test_plot_runs_checks_labels_and_inputs(tmp_path):
  _write_run(tmp_path / 'a', 0.6)
  with pytest.raises(ValueError, match='2 labels for 1 workdirs'):
    plots.plot_runs([str(tmp_path / 'a')], str(tmp_path / 'x.png'), labels=['p', 'q'])
  with pytest.raises(ValueError, match="allowed: 'step', 'epoch'"):
    plots.plot_runs([str(tmp_path / 'a')], str(tmp_path / 'x.png'), x='time')
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    plots.plot_runs([str(tmp_path / 'missing')], str(tmp_path / 'x.png'))
  assert not (tmp_path / 'x.png').exists()


def test_default_labels_disambiguate():
  assert plots.default_labels(['/r/lrn', '/r/pooling/']) == ['lrn', 'pooling']
  assert plots.default_labels(['/a/run', '/b/run']) == ['a/run', 'b/run']


def test_cli(tmp_path, capsys):
  _write_run(tmp_path / 'a', 0.6)
  assert plots.main([f'--workdir={tmp_path / "a"}', '--labels=mine']) == 0
  assert (tmp_path / 'a' / 'curves.png').stat().st_size > 0
  assert capsys.readouterr().out.strip() == str(tmp_path / 'a' / 'curves.png')


# --- ablations.py ------------------------------------------------------------------

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
    got = config
    for part in key.split('.'):
      got = got[part]
    if isinstance(value, tuple):
      got, value = tuple(got), tuple(value)
      assert all(type(g) is int for g in got), key
    assert got == value and type(got) is type(value), key


def test_baseline_is_first_and_unchanged(default_config, tmp_path):
  variants = ablations.plan(['lrn', 'pooling'], DEFAULT, str(tmp_path), base_config=default_config)
  assert [v.name for v in variants] == ['baseline', 'lrn', 'pooling']
  assert variants[0].overrides == {}
  assert not [a for a in variants[0].command if a.startswith('--config.')]
  # Orbax refuses relative checkpoint paths: a relative --root still gives absolute workdirs.
  (rel,) = ablations.plan([], DEFAULT, 'rel/runs', base_config=default_config)
  assert rel.workdir == os.path.join(os.getcwd(), 'rel', 'runs', 'baseline')
  assert f'--workdir={rel.workdir}' in rel.command


def test_unknown_ablation_lists_the_allowed_ones(default_config):
  allowed = 'lrn, pooling, towers, lighting, activation, dropout'
  with pytest.raises(ValueError, match=f'unknown ablation.*bogus.*allowed: {allowed}'):
    ablations.ablation_overrides('bogus', default_config)
  with pytest.raises(ValueError, match=f'unknown ablation.*nope.*allowed: {allowed}'):
    ablations.parse_sweep('lrn,nope')
  assert ablations.parse_sweep(' lrn, pooling,lrn ') == ['lrn', 'pooling']


def test_ablations_follow_the_base_config(tmp_path):
  one_tower = ablations.load_config(os.path.join(REPO, 'configs', 'one_tower.py'))
  for name in ('lrn', 'towers'):                 # one_tower.py has neither LRN nor 2 towers
    with pytest.raises(ablations.NotApplicable):
      ablations.ablation_overrides(name, one_tower)
  logged = []
  names = [v.name for v in ablations.plan(['lrn', 'towers', 'dropout'], 'x.py', str(tmp_path),
                                          base_config=one_tower, log=logged.append)]
  assert names == ['baseline', 'dropout'] and len(logged) == 2
  # The paper config has dropout 0.5: the ablation turns it off.
  assert ablations.ablation_overrides('dropout', one_tower) == {'model.dropout_rate': 0.0}


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
  root = tmp_path / 'root'
  argv = ['--sweep=towers', f'--base={DEFAULT}', f'--root={root}', '--epochs=2', '--dry_run']
  assert ablations.main(argv) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and all(line.startswith('python -m alexnet_jax.main ') for line in lines)
  assert "'--config.model.conv_widths=(24,64,96,96,128)'" in lines[1]
  assert not root.exists()


def test_report_table_from_finished_runs(default_config, tmp_path):
  variants = ablations.plan(['lrn', 'pooling'], DEFAULT, str(tmp_path / 'runs'),
                            base_config=default_config, epochs=3)
  for v, top1 in zip(variants, (0.60, 0.55, 0.625), strict=True):
    _write_run(v.workdir, top1)
    done = v.name != 'pooling'                  # pooling: interrupted, resumable
    ablations._write_marker(v.workdir, {'command': v.command, 'wall_s': 95.0,
                                        'finished': done, 'returncode': 0 if done else -2})
    assert ablations.is_finished(v) == done
  md, png = ablations.write_report(variants, str(tmp_path), DEFAULT, 3)
  text = open(md).read()
  rows = [line for line in text.splitlines() if line.startswith('| ')][1:]
  assert [r.split(' | ')[0] for r in rows] == ['| baseline', '| lrn', '| pooling (unfinished)']
  assert '| 60.0% | 90.0% | 60.0% | - | 3 | 1m35s |' in rows[0]
  assert '-5.0 pp' in rows[1] and '+2.5 pp' in rows[2]
  assert '`model.lrn=none`' in rows[1]
  assert os.path.getsize(png) > 0 and '![curves](ablations.png)' in text
  assert 'standard error is about 1.5 pp' in text          # sqrt(0.6 * 0.4 / 1000)
  assert f'overridden (3; the base trains for {default_config.num_epochs:g})' in text
