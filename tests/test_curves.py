"""alexnet_jax.tools.curves: metrics.jsonl reading and the PNG curves (the command that draws
them, `figures curves --panels`: tests/test_figures.py)."""

import json

import pytest
from data_utils import write_metrics
from PIL import Image

from alexnet_jax.tools import curves as plotting

# --- read_metrics ------------------------------------------------------------------

def test_read_metrics_parses_and_counts_skipped_lines(tmp_path):
  good = write_metrics(tmp_path / 'run', 0.6, extra_lines=[
      '{"step": 240, "split": "train", "loss": 0.5',      # cut short by a crash
      '',                                                  # blank: ignored silently
      '[1, 2, 3]',                                         # JSON but not an object
      '{"loss": 1.0}',                                     # no step/split
  ])
  good = [line for line in good if line.startswith('{"step"') and line.endswith('}')]
  with pytest.warns(UserWarning, match=r'skipped 3 malformed line\(s\) \(first: line \d+\)'):
    records = plotting.read_metrics(str(tmp_path / 'run'))
  assert len(records) == len(good)
  assert records[0] == json.loads(good[0])
  assert {r['split'] for r in records} == {'train', 'eval'}
  assert plotting.final_eval(records)['step'] == 3 * 78
  assert plotting.best_eval_top1(records) == pytest.approx(0.6)
  assert plotting.steps_per_epoch(records) == pytest.approx(78)


def test_read_metrics_clean_file_does_not_warn(tmp_path, recwarn):
  write_metrics(tmp_path / 'run', 0.5)
  records = plotting.read_metrics(str(tmp_path / 'run' / 'metrics.jsonl'))  # the file itself
  assert records and not [w for w in recwarn if 'malformed' in str(w.message)]


def test_read_metrics_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'no_such_run[/\\]metrics\.jsonl'):
    plotting.read_metrics(str(tmp_path / 'no_such_run'))


def test_split_series_later_record_wins_on_resume():
  records = [{'step': 20, 'split': 'train', 'loss': 3.0},
             {'step': 40, 'split': 'train', 'loss': 2.0},
             {'step': 20, 'split': 'train', 'loss': 2.5},     # replayed after a resume
             {'step': 40, 'split': 'eval', 'loss': 9.0}]
  assert plotting.split_series(records, 'train', 'loss') == ([20, 40], [2.5, 2.0])
  assert plotting.split_series(records, 'eval', 'top1') == ([], [])


# --- plot_runs ---------------------------------------------------------------------

@pytest.mark.parametrize('x', ['step', 'epoch'])
def test_plot_runs_writes_png(tmp_path, x):
  write_metrics(tmp_path / 'a', 0.6)
  write_metrics(tmp_path / 'b', 0.4)
  out = tmp_path / 'out' / 'curves.png'
  path = plotting.plot_runs([str(tmp_path / 'a'), str(tmp_path / 'b')], str(out), x=x)
  assert path == str(out)
  assert out.stat().st_size > 10_000          # four panels of curves, not a blank canvas
  with Image.open(out) as im:
    assert im.format == 'PNG'
    assert im.size == (880, 600)              # figsize (11, 7.5) at dpi 80
    assert len(im.getcolors(1 << 16)) > 10    # several line colours, not one flat fill


def test_plot_runs_checks_labels_and_inputs(tmp_path):
  write_metrics(tmp_path / 'a', 0.6)
  with pytest.raises(ValueError, match='2 labels for 1 workdirs'):
    plotting.plot_runs([str(tmp_path / 'a')], str(tmp_path / 'x.png'), labels=['p', 'q'])
  with pytest.raises(ValueError, match="allowed: 'step', 'epoch'"):
    plotting.plot_runs([str(tmp_path / 'a')], str(tmp_path / 'x.png'), x='time')
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    plotting.plot_runs([str(tmp_path / 'missing')], str(tmp_path / 'x.png'))
  assert not (tmp_path / 'x.png').exists()


def test_default_labels_disambiguate():
  assert plotting.default_labels(['/r/lrn', '/r/pooling/']) == ['lrn', 'pooling']
  assert plotting.default_labels(['/a/run', '/b/run']) == ['a/run', 'b/run']
