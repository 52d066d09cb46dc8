"""A short run of `python -m alexnet_jax.benchmark input` on the real sample photos."""

import json
import os

import pytest

from alexnet_jax import bench_input, benchmark


@pytest.mark.skipif(not os.path.isdir(bench_input.DEFAULT_IMAGES),
                    reason='needs the imagenet-sample photos')
def test_input_benchmark_json(tmp_path, capsys):
  path = tmp_path / 'input.json'
  assert benchmark.main(['input', '--seconds=1.5', '--warmup_seconds=0.5',
                         '--batch_size=16', f'--json={path}']) == 0
  report = json.loads(path.read_text())
  assert [r['name'] for r in report['rows']] == ['project', 'pytorch', 'preresized']
  assert report['cores'] == bench_input.host_cores()
  for r in report['rows']:
    assert r['images'] >= 16 and r['wall_s'] > 0 and r['cpu_s'] > 0
    assert r['images_per_s'] == pytest.approx(r['images'] / r['wall_s'], rel=1e-2)
    assert r['images_per_s_per_core'] == pytest.approx(r['images'] / r['cpu_s'], rel=1e-2)
    assert r['images_per_s_per_core_wall'] == pytest.approx(
        r['images_per_s'] / report['cores'], rel=1e-6)
  rows = {r['name']: r for r in report['rows']}
  for name in ('project', 'preresized'):
    key = f'{name}/pytorch'
    assert report['ratios'][key] == pytest.approx(
        rows[name]['images_per_s_per_core'] / rows['pytorch']['images_per_s_per_core'])
    assert report['ratios_wall'][key] == pytest.approx(
        rows[name]['images_per_s'] / rows['pytorch']['images_per_s'])
    assert report['goals'][key]['met'] == (report['ratios'][key] >= report['goals'][key]['target'])
  assert 'project/pytorch' in capsys.readouterr().out


def test_unknown_benchmark_command():
  assert benchmark.main(['nope']) == 2
