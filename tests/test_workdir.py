"""alexnet_jax.run.workdir: a run's files, `load_run` (--checkpoint=latest by default), and
preprocessing.npz, which lets a copied workdir be evaluated and used without its dataset."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import workdir_utils

from alexnet_jax.data import statistics
from alexnet_jax.run import workdir as workdir_lib
from alexnet_jax.tools import predict


@pytest.fixture(scope='module')
def two_checkpoints(tiny_data_dir, tmp_path_factory):
  """checkpoints/2 of seed 1 and best/1 of seed 2: the two choices differ."""
  workdir = tmp_path_factory.mktemp('two_checkpoints')
  config, latest = workdir_utils.make_workdir(workdir, tiny_data_dir, seed=1, best_seed=2)
  return str(workdir), config, latest


def _conv1(params) -> np.ndarray:
  return np.asarray(jax.device_get(params['conv1']['kernel']))


def test_the_default_checkpoint_is_latest_and_best_is_asked_for(two_checkpoints):
  workdir, _, latest = two_checkpoints
  run = workdir_lib.load_run(workdir)
  assert (run.checkpoint, run.step) == ('latest', 2)
  assert run.describe() == f'latest checkpoint (step 2) of {workdir}'
  np.testing.assert_array_equal(_conv1(run.params), _conv1(latest))
  best = workdir_lib.load_run(workdir, checkpoint='best')
  assert (best.checkpoint, best.step) == ('best', 1)
  assert not np.allclose(_conv1(best.params), _conv1(latest))
  with pytest.raises(ValueError, match='expected one of latest, best'):
    workdir_lib.load_run(workdir, checkpoint='newest')


def test_a_workdir_with_best_only_says_to_ask_for_it(two_checkpoints, tmp_path):
  workdir, _, _ = two_checkpoints
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / workdir_lib.CHECKPOINTS)
  with pytest.raises(FileNotFoundError, match='has no checkpoints/ .only best/.: pass '
                     '--checkpoint=best'):
    workdir_lib.load_run(str(copy))
  assert workdir_lib.load_run(str(copy), checkpoint='best').step == 1


def test_preprocessing_round_trip_is_atomic(tmp_path):
  mean = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
  pca = statistics.RgbPca(eigval=np.array([3., 2., 1.]), eigvec=np.eye(3), source='dataset',
                          dataset='x')
  workdir_lib.write_preprocessing(str(tmp_path), mean, pca)
  got = workdir_lib.read_preprocessing(str(tmp_path))
  assert sorted(got) == ['mean', 'pca_eigval', 'pca_eigvec']
  np.testing.assert_array_equal(got['mean'], mean)
  np.testing.assert_array_equal(got['pca_eigvec'], np.eye(3, dtype=np.float32))
  assert os.listdir(tmp_path) == [workdir_lib.PREPROCESSING]           # no temporary left
  written = os.stat(tmp_path / workdir_lib.PREPROCESSING).st_mtime_ns
  workdir_lib.write_preprocessing(str(tmp_path), mean, pca)             # a resumed run
  assert os.stat(tmp_path / workdir_lib.PREPROCESSING).st_mtime_ns == written
  workdir_lib.write_preprocessing(str(tmp_path), None)                  # input.mean='none'
  assert workdir_lib.read_preprocessing(str(tmp_path)) == {}
  assert workdir_lib.read_preprocessing(str(tmp_path / 'old')) is None


def test_the_run_mean_comes_from_the_workdir_and_an_old_one_from_the_dataset(
    two_checkpoints, tiny_data_dir, tmp_path):
  workdir, config, _ = two_checkpoints
  expected = statistics.load_or_compute_mean_image(config)
  saved = workdir_lib.read_preprocessing(workdir)['mean']
  np.testing.assert_array_equal(saved, expected)
  old = tmp_path / 'old'
  workdir_utils.make_workdir(old, tiny_data_dir, preprocessing=False)
  assert not (old / workdir_lib.PREPROCESSING).exists()
  np.testing.assert_array_equal(workdir_lib.run_mean(str(old), config), expected)


@pytest.mark.slow
def test_a_copied_workdir_evaluates_and_predicts_without_its_dataset(tiny_data_dir, tmp_path):
  """Evaluate with the dataset's statistics cache deleted (its images still needed), predict
  with no dataset at all; both through the commands, from a copy of the workdir."""
  import data_utils
  data = tmp_path / 'data'
  shutil.copytree(tiny_data_dir, data)
  run_dir = tmp_path / 'run'
  config, _ = workdir_utils.make_workdir(run_dir, data, seed=4)
  files, _ = workdir_utils.export_split(config, 'validation', tmp_path / 'photos')
  files = files[:6]
  original = predict.load_run(str(run_dir), batch_size=8)
  want = np.stack([r.probabilities for r in predict.predict_files(original, files,
                                                                  progress=False)])
  copy = tmp_path / 'elsewhere' / 'run'
  shutil.copytree(run_dir, copy)
  stats = data / statistics.STATS_DIR
  assert stats.is_dir()
  shutil.rmtree(stats)
  out = data_utils.run_cli('alexnet_jax.evaluate', f'--workdir={copy}', '--crops=1',
                           '--batch_size=8', '--json=-', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout)
  assert (result['checkpoint'], result['step']) == ('latest', 2)
  assert result['crops_1']['count'] == 101 and 0 <= result['crops_1']['top1'] <= 1
  assert f'latest checkpoint (step 2) of {copy}, split validation:' in out.stderr
  assert not stats.exists()                   # the mean came from the workdir, not a pass
  assert not (copy / 'eval_validation_latest.json').exists()       # --json=-: stdout only
  shutil.rmtree(data)
  out = data_utils.run_cli('alexnet_jax.predict', f'--workdir={copy}', '--batch_size=8',
                           f'--json={tmp_path / "p.json"}', *files, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  records = json.loads((tmp_path / 'p.json').read_text())
  assert [r['file'] for r in records] == files
  assert out.stdout.splitlines()[0] == files[0]                      # text besides the file
  for record, p in zip(records, want, strict=True):
    assert record['top'][0]['index'] == int(p.argmax())
    assert record['top'][0]['prob'] == pytest.approx(float(p.max()), abs=1e-5)
  assert not data.exists()
