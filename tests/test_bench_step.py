"""`python -m alexnet_jax.benchmark step` on a tiny model, and the synthetic data source."""

import importlib.util
import json

import numpy as np
import pytest

from alexnet_jax import bench_step, benchmark, input_pipeline, sources, statistics

TINY = ['--set', 'model.conv_widths=(8,16,16,16,16)', '--set', 'model.fc_widths=(32,32)',
        '--set', 'model.num_classes=10', '--set', 'model.input_size=67',
        '--set', 'input.resize_size=72']
HAS_TORCH = importlib.util.find_spec('torch') is not None


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  path = tmp_path_factory.mktemp('bench') / 'step.json'
  argv = ['step', '--models=paper', '--dtypes=float32', '--batch_sizes=8', '--runs=2',
          '--peak_sizes=256', '--loop', '--loop_windows=1', f'--json={path}', *TINY]
  assert benchmark.main(argv) == 0
  with open(path) as f:
    return json.load(f)


def test_jax_numbers_are_sane(tiny_run):
  (r,) = tiny_run['results']
  assert (r['model'], r['dtype'], r['batch_size']) == ('paper', 'float32', 8)
  for kind in ('step', 'forward'):
    assert r[kind]['images_per_sec'] > 0
    assert r[kind]['images_per_sec_best'] >= r[kind]['images_per_sec']
    assert 0 < r[kind]['mfu'] <= 1
    assert 0 < r[kind]['mfu_cpu'] <= 1.5     # CPU-time form: spin-waiting threads add noise
    assert r[kind]['cpu_s'] > 0
    assert r[kind]['runs'] == 2
  assert r['compile_time_s']['step'] > 0 and r['compile_time_s']['forward'] > 0
  assert r['recompiles'] == {'step': 0, 'forward': 0}
  assert r['matmul_peak_flops'] > 0
  assert np.isfinite(r['loss_first_step'])
  # The FLOP count is the spec's: 6 x MACs per image per trained image.
  assert r['step']['tflops'] == pytest.approx(
      6 * r['macs_per_image'] * 8 / (r['step']['ms_median'] / 1e3) / 1e12)


def test_loop_row(tiny_run):
  (r,) = tiny_run['results']
  loop = r['loop']
  assert loop['images_per_sec'] > 0
  assert len(loop['window_images_per_sec']) == 2      # compile window + 1 timed window
  assert loop['bare_images_per_sec_before'] > 0 and loop['bare_images_per_sec_after'] > 0
  assert loop['overhead'] < 1


def test_torch_comparison_present_exactly_when_torch_is(tiny_run):
  """CI has no torch (it is the optional `bench` extra): then the row must say so."""
  (r,) = tiny_run['results']
  assert ('torch' in r) == HAS_TORCH
  if HAS_TORCH:
    assert r['torch']['step']['images_per_sec'] > 0
    assert r['ratio_vs_torch']['step'] > 0 and r['ratio_vs_torch']['forward'] > 0


def test_table_has_a_row_per_case(tiny_run):
  table = bench_step.format_table(tiny_run['results'])
  lines = table.splitlines()
  assert len(lines) == 3 and lines[2].startswith('| paper | float32 | 8 |')


def test_synthetic_source():
  config = bench_step.load_config('paper', 'float32', 4, {'model.num_classes': 7,
                                                         'input.resize_size': 40})
  config.dataset.name = 'synthetic'
  assert sources.num_classes(config) == 7
  assert sources.num_examples(config, 'train') == 1_281_167
  assert sources.num_examples(config, 'validation') == 50_000
  assert statistics.load_or_compute_mean_image(config) is None
  it = input_pipeline.create_train_iterator(config, local_batch_size=4)
  batches = [next(it) for _ in range(5)]
  b = batches[0]
  assert b['image'].shape == (4, 40, 40, 3) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32 and b['label'].min() >= 0 and b['label'].max() < 7
  # Deterministic, and a resumed iterator yields the same batch k.
  resumed = next(input_pipeline.create_train_iterator(config, local_batch_size=4, start_step=3))
  np.testing.assert_array_equal(resumed['image'], batches[3]['image'])
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])
  evals = list(input_pipeline.create_eval_iterator(config, 'validation', local_batch_size=4))
  assert len(evals) == input_pipeline.SYNTHETIC_EVAL_BATCHES
  assert evals[0]['mask'].all() and evals[-1]['mask'].sum() == 2
  with pytest.raises(ValueError, match='synthetic'):
    sources.num_examples(config, 'test')
