"""experiments/placement.py: where `ablations --parallel=N` puts its runs, on fake
accelerator lists (and the real probe on this CPU machine)."""

import json
import subprocess

import pytest

from experiments import placement
from experiments.placement import Accelerators, PlacementError


def test_cpu_runs_share_the_cores_as_before():
  assert placement.slots(3, Accelerators('cpu')) == [{}, {}, {}]
  assert placement.slots(1, Accelerators('gpu', ('0',))) == [{}]    # one run: everything
  assert placement.describe([{}, {}], Accelerators('cpu')) == (
      '2 runs at a time on the CPU (sharing its cores)')


def test_gpus_are_shared_out_equally():
  gpus = Accelerators('gpu', ('0', '1', '2', '3'))
  assert placement.slots(2, gpus) == [{'CUDA_VISIBLE_DEVICES': '0,1'},
                                      {'CUDA_VISIBLE_DEVICES': '2,3'}]
  three = placement.slots(3, gpus)
  assert three == [{'CUDA_VISIBLE_DEVICES': str(i)} for i in range(3)]
  assert placement.describe(three, gpus) == (
      '3 runs at a time, each on its own CUDA_VISIBLE_DEVICES: 0 / 1 / 2 (1 GPU(s) left idle)')


@pytest.mark.parametrize('count', [1, 2])
def test_more_runs_than_gpus_is_refused_with_the_reason(count):
  with pytest.raises(PlacementError) as e:
    placement.slots(count + 1, Accelerators('gpu', tuple(map(str, range(count)))))
  message = str(e.value)
  assert '\n' not in message
  assert f'--parallel={count + 1} but JAX sees {count} GPU(s)' in message
  assert '75% of its memory' in message and message.endswith(f'use --parallel={count}')


def test_tpu_runs_get_one_chip_and_their_own_port_each():
  envs = placement.slots(4, Accelerators('tpu', ('0', '1', '2', '3')))
  assert [e['TPU_VISIBLE_CHIPS'] for e in envs] == ['0', '1', '2', '3']
  assert len({e['TPU_PROCESS_PORT'] for e in envs}) == 4
  assert all(e['TPU_PROCESS_BOUNDS'] == e['TPU_CHIPS_PER_PROCESS_BOUNDS'] == '1,1,1'
             for e in envs)
  with pytest.raises(PlacementError, match=r'--parallel=5 but JAX sees 4 TPU\(s\)'):
    placement.slots(5, Accelerators('tpu', ('0', '1', '2', '3')))


def _fake_probe(monkeypatch, found: dict, returncode: int = 0):
  seen = {}

  def run(argv, env, **kwargs):
    seen['env'] = env
    return subprocess.CompletedProcess(argv, returncode, json.dumps(found) + '\n',
                                       'RuntimeError: no backend')
  monkeypatch.setattr(placement.subprocess, 'run', run)
  return seen


def test_probe_reads_what_jax_sees_without_preallocating(monkeypatch):
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  seen = _fake_probe(monkeypatch, {'platform': 'gpu', 'devices': 2, 'chips': 2})
  assert placement.probe() == Accelerators('gpu', ('0', '1'))
  assert seen['env']['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  # Runs only ever see the GPUs the sweep itself was given, by their real numbers.
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
  assert placement.probe() == Accelerators('gpu', ('3', '5'))
  # TPU v3: 8 devices, 2 per chip -> 4 chips.
  _fake_probe(monkeypatch, {'platform': 'tpu', 'devices': 8, 'chips': 4})
  assert placement.probe() == Accelerators('tpu', ('0', '1', '2', '3'))
  _fake_probe(monkeypatch, {}, returncode=1)
  with pytest.raises(PlacementError, match='could not count the accelerators.*no backend'):
    placement.probe()


@pytest.mark.slow        # a JAX import in a subprocess: seconds
def test_probe_on_this_machine_finds_the_cpu(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert placement.probe() == Accelerators('cpu')
