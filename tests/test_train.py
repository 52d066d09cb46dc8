"""The training loop end to end on the built-in dataset (tiny model, 8 CPU devices).

The runs train in subprocesses (tests/train_runs.py): an XLA abort on the 8 simulated
devices then fails these tests, not the whole session."""

import json
import os
import signal

import numpy as np
import pytest
import train_runs
from data_utils import run_cli, tiny_config
from jax.sharding import PartitionSpec

from alexnet_jax.data import statistics
from alexnet_jax.run import checkpoints, train
from alexnet_jax.run import workdir as workdir_lib


@pytest.fixture(scope='module')
def data_dir(tiny_data_dir):
  return tiny_data_dir


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory) -> dict[str, train_runs.TrainRun]:
  """The module's runs, in one subprocess (each costs ~10 s of imports): a whole run (then
  evaluated as the evaluate command does); the same run stopped after 3 steps, then
  resumed; 2 steps from the whole run's parameters (init_from); a long run sent SIGTERM
  once it has logged."""
  root = tmp_path_factory.mktemp('runs')
  tiny = {'data_dir': str(data_dir)}
  full = str(root / 'run')
  results = train_runs.train([
      {**tiny, 'workdir': full, 'evaluate': {'checkpoint': 'best', 'crops': [1, 10]}},
      {**tiny, 'workdir': str(root / 'resumed'), 'max_steps': 3},
      {**tiny, 'workdir': str(root / 'resumed')},
      # lr=0: the paper's update (decay scaled by lr too) leaves the parameters untouched.
      {**tiny, 'workdir': str(root / 'finetune'), 'config': {
          'num_train_steps': 2, 'init_from': full, 'optimizer.learning_rate': 0.0}},
      {**tiny, 'workdir': str(root / 'sigterm'), 'sigterm': True, 'config': {
          'num_train_steps': 400, 'checkpoint_every_steps': 1000, 'eval_every_steps': 1000,
          'log_every_steps': 2}},
      # stop_at_train_error: 3 epochs of 8 steps asked for; any first epoch is <= 0.999.
      # The same command again trains nothing; a lower target trains on.
      {**tiny, 'workdir': str(root / 'target'), 'config': {
          'num_train_steps': 24, 'stop_at_train_error': 0.999}},
      {**tiny, 'workdir': str(root / 'target'), 'config': {
          'num_train_steps': 24, 'stop_at_train_error': 0.999}},
      {**tiny, 'workdir': str(root / 'target'), 'config': {
          'num_train_steps': 24, 'stop_at_train_error': 1e-9}},
  ], root / 'out')
  return dict(zip(('full', 'first', 'second', 'finetune', 'sigterm', 'target', 'target_again',
                   'target_lower'), results, strict=True))


@pytest.fixture(scope='module')
def finished_run(runs):
  return runs['full'].workdir, runs['full']


@pytest.mark.slow
def test_run_logs_evaluates_every_example_once_and_never_recompiles(finished_run):
  workdir, result = finished_run
  assert result.step == 8
  assert result.eval['count'] == 101          # padded batches masked, none dropped
  assert 0.0 <= result.eval['top1'] <= result.eval['top5'] <= 1.0
  assert result.train_compilations == 1          # one compilation for all 8 steps
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in records if r['split'] == 'train']
  eval_rows = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in train_rows] == [4, 8] and [r['step'] for r in eval_rows] == [8]
  for r in records:
    assert {'step', 'split', 'loss', 'top1', 'top5', 'learning_rate',
            'images_per_sec'} <= set(r), r
    assert np.isfinite(r['loss']) and r['images_per_sec'] > 0
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  assert os.listdir(os.path.join(workdir, 'best')) == ['8']
  # What evaluation needs of the dataset is kept with the run: the mean it subtracted.
  saved = workdir_lib.read_preprocessing(workdir)
  config = workdir_lib.load_config(workdir)
  np.testing.assert_array_equal(saved['mean'], statistics.load_or_compute_mean_image(config))
  assert saved['mean'].shape == (config.input.resize_size,) * 2 + (3,)


@pytest.mark.slow
def test_evaluate_command_centre_and_ten_crops(finished_run):
  workdir, result = finished_run
  r = result.evaluation        # evaluate.evaluate_checkpoint(workdir, checkpoint='best', ...)
  assert r['step'] == 8 and r['checkpoint'] == 'best'
  assert r['crops_1']['count'] == r['crops_10']['count'] == 101
  assert r['crops_1']['top1'] == pytest.approx(result.eval['top1'], abs=1e-6)
  assert r['crops_10']['loss'] != pytest.approx(r['crops_1']['loss'], abs=1e-6)


@pytest.mark.slow
def test_params_stay_sharded_over_the_towers(finished_run):
  _, result = finished_run
  assert result.param_specs['conv2/kernel'] == PartitionSpec('model')
  assert result.mesh_shape == {'data': 4, 'model': 2}


@pytest.mark.slow
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(runs):
  full, first, second = runs['full'], runs['first'], runs['second']
  assert first.stopped == 'max_steps' and first.step == 3
  assert second.step == 8
  for a, b in zip(second.state_leaves, full.state_leaves, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(runs):
  result = runs['sigterm']
  assert result.stopped == 'signal'
  assert 2 <= result.step < 400
  ckpt = checkpoints.Checkpointer(result.workdir)
  assert ckpt.latest_step() == result.step
  ckpt.close()


def test_a_stop_signal_is_agreed_on_by_a_vote_one_step_later():
  # One process stops after the step its signal arrived in.
  alone = train._StopRequest(vote=False)
  assert not alone.requested()
  alone.signal = signal.SIGTERM                 # what the handler records
  assert alone.requested() and alone.processes == [0]
  # With several processes each step's vote (an all-gather over all 8 devices here) is
  # read at the next step: every process gets the same answer at the same step.
  voting = train._StopRequest(vote=True)
  assert not voting.requested() and not voting.requested()
  voting.signal = signal.SIGTERM
  assert not voting.requested()                 # cast now, read at the next step
  assert voting.requested() and voting.processes == [0]


@pytest.mark.slow
def test_init_from_starts_from_another_runs_parameters(runs):
  full, result = runs['full'], runs['finetune']
  for a, b in zip(result.params_leaves, full.params_leaves, strict=True):
    np.testing.assert_array_equal(a, b)


def test_stop_at_train_error_ends_the_run_after_the_first_epoch_at_or_below_it(runs):
  first, again, lower = runs['target'], runs['target_again'], runs['target_lower']
  assert (first.step, first.stopped) == (8, 'train_error')        # 1 epoch of the 3
  rows = [json.loads(line) for line in open(os.path.join(first.workdir, 'metrics.jsonl'))
          if json.loads(line)['step'] <= 8]
  # What was reached is kept in every later checkpoint's meta (steps 16-24 are left, of the
  # three runs; checkpoints every 4 steps, 3 kept).
  meta_file = os.path.join(first.workdir, 'checkpoints', '24', 'meta', 'metadata')
  reached = json.load(open(meta_file))['train_error_reached']
  assert (reached['epoch'], reached['step'], reached['threshold']) == (1, 8, 0.999)
  # The epoch's error is the one the Figure 1 experiment reads from metrics.jsonl: the mean
  # of the rows' running top-1 (log_every_steps=4 divides the 8 steps).
  assert reached['train_error'] == pytest.approx(
      1 - np.mean([r['top1'] for r in rows if r['split'] == 'train' and r['step'] <= 8]),
      abs=1e-6)
  # The same command again: nothing trained, nothing compiled.
  assert (again.step, again.stopped, again.train_compilations) == (8, 'train_error', 0)
  # A lower target than the one reached: training goes on to the end.
  assert (lower.step, lower.stopped) == (24, None)
  after = [json.loads(line) for line in open(os.path.join(first.workdir, 'metrics.jsonl'))]
  assert max(r['step'] for r in after) == 24 and after[:len(rows)] == rows


@pytest.mark.parametrize('override, text', [
    ({'batch_size': 30}, "batch_size=30 is invalid; allowed: a multiple of the mesh's data"),
    ({'eval_batch_size': 6}, 'eval_batch_size=6'),
    ({'schedule.name': 'cosine'}, "schedule.name='cosine'"),
    ({'model.towers': 3}, 'model.towers=3'),
    ({'optimizer.momentum': 1.5}, 'optimizer.momentum=1.5'),
    ({'input.mean': 'median'}, "input.mean='median'"),
    ({'model.num_classes': 1000}, 'model.num_classes=1000 but dataset'),
    ({'stop_at_train_error': 1.0}, 'stop_at_train_error=1.0'),
])
def test_bad_config_is_refused_before_compiling(data_dir, tmp_path, override, text):
  config = tiny_config(data_dir, **override)
  with pytest.raises(ValueError) as err:
    train.train_and_evaluate(config, str(tmp_path / 'bad'))
  assert text in str(err.value)
  assert not os.path.exists(tmp_path / 'bad' / 'checkpoints')


def test_main_without_workdir_prints_usage():
  out = run_cli('alexnet_jax.main', '--config=configs/default.py')
  assert out.returncode != 0
  assert 'both --config and --workdir are required' in out.stderr
  assert 'Traceback' not in out.stderr


@pytest.mark.slow
def test_paper_config_without_imagenet_says_what_is_missing(tmp_path):
  out = run_cli('alexnet_jax.main', '--config=configs/paper.py', f'--workdir={tmp_path / "w"}',
                f'--config.dataset.data_dir={tmp_path / "tfds"}')
  assert out.returncode == 2
  assert 'Traceback' not in out.stderr
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'
  for name in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
    assert str(manual / name) in out.stderr
  assert 'python -m alexnet_jax.prepare' in out.stderr
