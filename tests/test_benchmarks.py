"""benchmarks/: the step and input libraries on tiny settings, and each CLI once."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import input_lib, machine, step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TORCH = importlib.util.find_spec('torch') is not None
TINY = ('model.conv_widths=(8,16,16,16,16);model.fc_widths=(32,32);model.num_classes=10;'
        'model.input_size=67;input.resize_size=72')


def step_config(**changes):
  from benchmarks.configs import step
  config = step.get_config()
  config.update(dict(models='paper', dtypes='float32', batch_sizes='8', runs=2,
                     peak_sizes='256', overrides=TINY), **changes)
  return config


def test_machine_description():
  m = machine.describe()
  assert m['cpu_model'] and m['cores'] >= 1
  assert m['backend'] == jax.default_backend() and m['device_count'] == len(jax.devices())
  assert set(m['cpu_flags']) <= set(machine.ISA_FLAGS)
  assert m['device_kind'] in machine.format_machine(m)


def test_cpu_flags_from_cpuinfo(tmp_path):
  x86 = tmp_path / 'x86'
  x86.write_text('processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n'
                 'model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f '
                 'amx_tile amx_bf16 avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Other\n')
  assert machine.cpu_info(str(x86)) == {
      'model': 'Some CPU', 'flags': ['avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'],
      'vendor': 'GenuineIntel', 'family': 6, 'model_number': 143,
      'generation': 'Sapphire Rapids'}
  # A KVM guest's bare "AMD EPYC": the generation comes from family/model.
  assert machine.cpu_generation('AuthenticAMD', 25, 1) == 'Zen 3'
  assert machine.cpu_generation('AuthenticAMD', 25, 0x11) == 'Zen 4'
  assert machine.cpu_generation('AuthenticAMD', 26, 2) == 'Zen 5'
  assert machine.cpu_generation('GenuineIntel', 6, 0x4e) == ''
  assert machine.cpu_generation('', None, None) == ''
  arm = tmp_path / 'arm'
  arm.write_text('processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n')
  assert machine.cpu_info(str(arm))['flags'] == ['asimd', 'sve', 'bf16', 'i8mm']
  assert machine.cpu_info(str(tmp_path / 'missing'))['flags'] == []


# Building a train state compiles the sharded init for about 30 CPU-seconds even for this
# tiny model, so every test that runs the step is marked slow.
@pytest.fixture(scope='module')
def tiny_report():
  partial = []
  report = step_lib.run(step_config(), log=lambda m: None, on_case=partial.append)
  # After the one case: the report so far, not yet complete; then the complete one.
  assert [(p['complete'], len(p['results'])) for p in partial] == [(False, 1)]
  assert report['complete'] is True and report['results'] == partial[0]['results']
  return report


@pytest.mark.slow
def test_step_report_schema(tiny_report):
  assert tiny_report['machine']['backend'] == jax.default_backend()
  assert tiny_report['config']['models'] == 'paper'
  (r,) = tiny_report['results']
  assert (r['model'], r['dtype'], r['batch_size']) == ('paper', 'float32', 8)
  # The fields docs/benchmarks.md promises stay where they are.
  assert r['step']['images_per_sec'] > 0 and 0 < r['step']['mfu'] <= 1
  json.dumps(tiny_report)


@pytest.mark.slow
def test_jax_numbers_are_sane(tiny_report):
  (r,) = tiny_report['results']
  for kind in ('step', 'forward'):
    assert r[kind]['images_per_sec'] > 0
    assert r[kind]['images_per_sec_best'] >= r[kind]['images_per_sec']
    assert 0 < r[kind]['mfu'] <= 1
    assert 0 < r[kind]['mfu_cpu'] <= 1.5     # CPU-time form: spin-waiting threads add noise
    assert r[kind]['cpu_s'] > 0
    assert r[kind]['runs'] == 2
    assert r[kind]['images_per_sec'] == pytest.approx(8 / (r[kind]['ms_median'] / 1e3))
  assert r['compile_time_s']['step'] > 0 and r['compile_time_s']['forward'] > 0
  assert r['recompiles'] == {'step': 0, 'forward': 0}
  assert r['matmul_peak_flops'] > 0
  assert np.isfinite(r['loss_first_step'])
  # The FLOP count is the spec's: 6 x MACs per image per trained image, MFU against the peak.
  flops = 6 * r['macs_per_image'] * 8
  assert r['step']['tflops'] == pytest.approx(flops / (r['step']['ms_median'] / 1e3) / 1e12)
  assert r['step']['mfu'] == pytest.approx(
      flops / (r['step']['ms_median'] / 1e3) / r['matmul_peak_flops'])


@pytest.mark.slow
def test_loop_row():
  r = step_lib.run_case('paper', 'float32', 8, runs=2, use_torch=False, forward=False,
                        peak_sizes=(128,), loop=True, loop_windows=1,
                        overrides=step_lib.parse_overrides(TINY), log=lambda m: None)
  loop = r['loop']
  assert loop['images_per_sec'] > 0
  assert len(loop['window_images_per_sec']) == 2      # compile window + 1 timed window
  assert loop['bare_images_per_sec_before'] > 0 and loop['bare_images_per_sec_after'] > 0
  bare = (loop['bare_images_per_sec_before'] + loop['bare_images_per_sec_after']) / 2
  assert loop['overhead'] == pytest.approx(1 - loop['images_per_sec'] / bare)


@pytest.mark.slow
def test_torch_comparison_present_exactly_when_torch_is(tiny_report):
  """CI has no torch (it is the optional `bench` extra): then the row must say so."""
  (r,) = tiny_report['results']
  assert ('torch' in r) == HAS_TORCH
  if HAS_TORCH:
    assert r['torch']['step']['images_per_sec'] > 0
    assert r['ratio_vs_torch'] == step_lib.ratios_vs_torch(r)
    assert r['ratio_vs_torch']['step'] > 0 and r['ratio_vs_torch']['forward'] > 0


def test_ratios_are_computed_from_the_measured_times():
  ours = {'ms_median': 100.0, 'ms_min': 90.0, 'cpu_s': 0.2}
  theirs = {'ms_median': 150.0, 'ms_min': 180.0, 'cpu_s': 0.5}
  r = {'step': ours, 'torch': {'step': theirs}}
  assert step_lib.ratios_vs_torch(r) == {'step': 1.5, 'step_best': 2.0, 'step_cpu': 2.5}


@pytest.mark.slow
def test_table_has_a_row_per_case(tiny_report):
  lines = step_lib.format_table(tiny_report['results']).splitlines()
  assert len(lines) == 3
  assert lines[2].startswith('| paper | split:custom:rsqrt:matmul | float32 | 8 |')


def test_kernel_variants_are_overrides_and_bad_ones_are_refused():
  assert step_lib.kernel_overrides('auto') == {}
  assert step_lib.kernel_overrides('grouped:autodiff:pow') == {
      'model.conv_impl': 'grouped', 'model.pool_grad': 'autodiff', 'model.lrn_impl': 'pow'}
  assert step_lib.kernel_overrides('split:custom:rsqrt:native') == {
      'model.conv_impl': 'split', 'model.pool_grad': 'custom', 'model.lrn_impl': 'rsqrt',
      'model.conv_weight_grad': 'native'}
  with pytest.raises(ValueError, match='config.kernels'):
    step_lib.kernel_overrides('grouped')
  with pytest.raises(ValueError, match="model.conv_weight_grad='fft'"):
    step_lib.check(step_config(kernels='split:custom:rsqrt:fft'))
  config = step_config(kernels='auto,grouped:custom:cubic')
  with pytest.raises(ValueError, match="model.lrn_impl='cubic'"):
    step_lib.check(config)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match='config.models'):
    step_lib.model_config('nope', 'float32', 8)
  with pytest.raises(ValueError, match='config.overrides'):
    step_lib.parse_overrides('model.lrn')
  assert step_lib.parse_overrides('a.b=(1,2); c=none') == {'a.b': (1, 2), 'c': 'none'}
  assert step_lib.model_config('paper:towers=1', 'float32', 8).model.towers == 1


def _run_cli(module: str, *flags: str) -> subprocess.CompletedProcess:
  """python -m MODULE from the repository root, on one CPU device (quickest to compile)."""
  env = dict(os.environ, XLA_FLAGS='', PYTHONPATH=os.pathsep.join(
      [ROOT, *filter(None, [os.environ.get('PYTHONPATH')])]))
  return subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_step_cli(tmp_path):
  path = tmp_path / 'step.json'
  p = _run_cli('benchmarks.step', '--config=benchmarks/configs/step.py',
               '--config.models=one_tower', '--config.dtypes=float32',
               '--config.batch_sizes=8', '--config.runs=1', '--config.peak_sizes=128',
               '--config.forward=False', '--config.torch=False',
               f'--config.overrides={TINY}', f'--config.json={path}')
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads(path.read_text())
  (r,) = report['results']
  assert r['model'] == 'one_tower' and r['step']['images_per_sec'] > 0
  assert report['complete'] is True
  assert report['command'].startswith('python -m benchmarks.step --config=')
  assert report['machine']['cpu_model'] in p.stdout
  assert '| one_tower | split:custom:rsqrt:matmul | float32 | 8 |' in p.stdout


# ------------------------------------------------------------------------------ input


def input_config(**changes):
  from benchmarks.configs import input as input_configs
  config = input_configs.get_config()
  config.update(dict(seconds=1.0, warmup_seconds=0.5, batch_size=16), **changes)
  return config


HAS_PHOTOS = os.path.isdir(input_lib.images_dir(input_config()))


def test_input_ratios_are_computed_from_the_rows():
  measured = {'project': (300, 1.0, 2.0), 'pytorch': (100, 1.0, 1.5),
              'preresized': (900, 1.0, 2.0)}
  rows = [input_lib.row(name, '', dict(zip(('images', 'wall_s', 'cpu_s'), v, strict=True)), 2)
          for name, v in measured.items()]
  assert rows[0]['images_per_s'] == 300 and rows[0]['images_per_s_per_core'] == 150
  assert rows[0]['images_per_s_per_core_wall'] == 150 and rows[1]['busy_cores'] == 1.5
  assert input_lib.ratios(rows, 'images_per_s') == {'project/pytorch': 3.0,
                                                   'preresized/pytorch': 9.0}
  assert input_lib.ratios(rows, 'images_per_s_per_core') == pytest.approx(
      {'project/pytorch': 150 / (100 / 1.5), 'preresized/pytorch': 450 / (100 / 1.5)})


def test_missing_photos_name_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.images_dir'):
    input_lib.run(input_config(images_dir=str(tmp_path)), log=lambda m: None)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PHOTOS, reason='needs ../shared/data/imagenet-sample')
def test_input_report():
  report = input_lib.run(input_config(), log=lambda m: None)
  assert [r['name'] for r in report['rows']] == ['project', 'pytorch', 'preresized']
  assert report['cores'] == machine.host_cores() and 'machine' in report
  assert 'goals' not in report          # goals live in benchmarks/logs/input.md
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
  json.dumps(report)
  assert 'project/pytorch' in input_lib.format_table(report)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PHOTOS, reason='needs ../shared/data/imagenet-sample')
def test_input_cli(tmp_path):
  path = tmp_path / 'input.json'
  p = _run_cli('benchmarks.input', '--config=benchmarks/configs/input.py',
               '--config.seconds=1', '--config.warmup_seconds=0.5', '--config.batch_size=16',
               f'--config.json={path}')
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads(path.read_text())
  assert set(report['ratios']) == {'project/pytorch', 'preresized/pytorch'}
  assert 'project/pytorch' in p.stdout and report['machine']['cpu_model'] in p.stdout


def test_input_cli_without_photos(tmp_path):
  p = _run_cli('benchmarks.input', f'--config.images_dir={tmp_path}')
  assert p.returncode == 2 and 'config.images_dir' in p.stderr


def test_step_cli_refuses_a_bad_config():
  p = _run_cli('benchmarks.step', '--config.models=nope')
  assert p.returncode == 2 and 'config.models' in p.stderr, p.stderr[-2000:]
