"""The paper's figures: conv1's kernel grid and colour numbers, fc7 neighbours against brute
force, and the training-error curves' labels and first epoch at the target."""

import json
import os

import jax
import numpy as np
import pytest

from alexnet_jax.run import workdir as workdir_lib
from alexnet_jax.tools import figures as figures_lib
from alexnet_jax.tools import predict


def _synthetic_conv1(towers=2, n=20, seed=0):
  """Tower 0's kernels grey (R = G = B), tower 1's independent per channel."""
  rng = np.random.default_rng(seed)
  k = rng.normal(size=(towers, 11, 11, 3, n)).astype(np.float32)
  k[0] = k[0, :, :, :1, :]                    # grey: one channel copied to all three
  return {'conv1': {'kernel': k, 'bias': np.zeros((towers, n), np.float32)}}


def test_colour_saturation_separates_grey_from_coloured_towers(tmp_path):
  params = _synthetic_conv1()
  data = figures_lib.plot_kernels(params, str(tmp_path / 'k.png'))
  grey, colour = data['saturation']
  assert grey == pytest.approx(0.0, abs=1e-12)
  assert colour > 0.1
  assert os.path.getsize(tmp_path / 'k.png') > 1000
  # One channel at 1, the others at 0 is the most a kernel scores: sqrt(2)/3.
  k = np.zeros((1, 11, 11, 3))
  k[..., 0] = 1.0
  assert figures_lib.colour_saturation(k)[0] == pytest.approx(np.sqrt(2) / 3)


def test_kernel_grid_puts_kernel_k_of_tower_t_where_the_layout_says():
  params = _synthetic_conv1(n=20)
  kernels = figures_lib.conv1_kernels(params)
  assert kernels.shape == (2, 20, 11, 11, 3)
  grid = figures_lib.kernel_grid(kernels, columns=16)
  # 20 kernels, at most 16 a row: 2 rows of 10. Each cell is 11 + 1 pixels, plus 1 at the
  # start; tower 1's block starts 2 rows and a gap of 4 below tower 0's.
  s, pad, gap, cols = 11, 1, 4, 10
  for t in range(2):
    for k in range(20):
      y = t * (2 * (s + pad) + gap) + (k // cols) * (s + pad) + pad
      x = (k % cols) * (s + pad) + pad
      raw = params['conv1']['kernel'][t, :, :, :, k].astype(np.float64)
      expected = (raw - raw.min()) / (raw.max() - raw.min())
      np.testing.assert_allclose(grid.image[y:y + s, x:x + s], expected, atol=1e-6)
      assert grid.image[y:y + s, x:x + s].min() == 0.0
      assert grid.image[y:y + s, x:x + s].max() == pytest.approx(1.0)
  assert grid.image.shape[1] == cols * (s + pad) + pad
  assert grid.image.shape[0] == 2 * 2 * (s + pad) + gap + pad


# ------------------------------------------------------------------------------ neighbours


@pytest.fixture(scope='module')
def run(fresh_workdir):
  return predict.load_run(fresh_workdir, batch_size=32)


@pytest.mark.slow
def test_neighbours_equal_brute_force_over_all_features(run):
  images, labels, indices = figures_lib.pick_queries(run, 3)
  assert len(set(labels.tolist())) == 3          # the first image of 3 different classes
  fc7 = figures_lib.make_feature_fn(run)
  max_train = 100                                 # 3 full batches of 32 and 4 of a fourth
  nb = figures_lib.find_neighbours(run, images, labels, query_indices=indices,
                                   max_train=max_train, feature_fn=fc7)
  assert nb.train_images == max_train
  # Brute force: every training image's fc7 vector, then NumPy distances and a full sort.
  feats, all_images, all_labels = [], [], []
  with jax.set_mesh(run.mesh):
    for batch in figures_lib.train_batches(run, max_train):
      keep = batch['mask']
      feats.append(np.asarray(fc7(run.params, run.put(batch['image']), run.mean))[keep])
      all_images.append(batch['image'][keep])
      all_labels.append(batch['label'][keep])
    padded = np.concatenate([images, np.zeros((32 - len(images),) + images.shape[1:],
                                              np.uint8)])
    q = np.asarray(fc7(run.params, run.put(padded), run.mean), np.float64)[:len(images)]
  feats = np.concatenate(feats).astype(np.float64)
  assert feats.shape[0] == max_train and feats.shape[1] == 32 and (feats >= 0).all()
  d = np.sqrt(((q[:, None, :] - feats[None]) ** 2).sum(-1))
  order = np.argsort(d, axis=1, kind='stable')[:, :figures_lib.NEIGHBOURS]
  np.testing.assert_array_equal(nb.indices, order)
  np.testing.assert_allclose(nb.distances, np.take_along_axis(d, order, 1), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_array_equal(nb.labels, np.concatenate(all_labels)[order])
  np.testing.assert_array_equal(nb.images, np.concatenate(all_images)[order])


def test_feature_layer_is_what_the_output_layer_reads():
  """fc7 for AlexNet; a CIFAR-10 net's last hidden layer (after the pooling that follows
  it, if any), with the config's switches applied."""
  import workdir_utils

  from alexnet_jax.common.model_spec import ModelSpec
  assert figures_lib.feature_layer(ModelSpec()) == 'fc7'
  want = {'cifar10_conv_local': 'local4', 'cifar10_18pct': 'conv3_avg',
          'cifar10_80sec': 'fc64'}
  for arch, layer in want.items():
    model = workdir_utils.cifar_config(arch, '/unused').model
    assert figures_lib.feature_layer(ModelSpec.from_config(model)) == layer
    model.lrn = 'none'
    assert figures_lib.feature_layer(ModelSpec.from_config(model)) == layer


@pytest.mark.slow
def test_cifar_neighbours_equal_brute_force_and_kernels_are_one_tower(cifar_workdir, tmp_path):
  run = predict.load_run(cifar_workdir, batch_size=16)
  images, labels, indices = figures_lib.pick_queries(run, 2)
  features = figures_lib.make_feature_fn(run)
  nb = figures_lib.find_neighbours(run, images, labels, query_indices=indices, max_train=40,
                                   feature_fn=features)
  assert nb.layer == 'conv3_avg' and nb.train_images == 40
  feats = []
  with jax.set_mesh(run.mesh):
    for batch in figures_lib.train_batches(run, 40):
      feats.append(np.asarray(features(run.params, run.put(batch['image']), run.mean))
                   [batch['mask']])
    padded = np.concatenate([images, np.zeros((14,) + images.shape[1:], np.uint8)])
    q = np.asarray(features(run.params, run.put(padded), run.mean), np.float64)[:2]
  feats = np.concatenate(feats).astype(np.float64)
  # 32x32 inputs: conv3 and its 3/2 pooling give 4 x 4 x 64 (pooled ReLU outputs).
  assert feats.shape == (40, 4 * 4 * 64) and (feats >= 0).all()
  d = np.sqrt(((q[:, None, :] - feats[None]) ** 2).sum(-1))
  order = np.argsort(d, axis=1, kind='stable')[:, :figures_lib.NEIGHBOURS]
  np.testing.assert_array_equal(nb.indices, order)
  np.testing.assert_allclose(nb.distances, np.take_along_axis(d, order, 1), rtol=1e-4,
                             atol=1e-5)
  data = figures_lib.plot_kernels(run.params, str(tmp_path / 'k.png'))
  assert len(data['saturation']) == 1 and data['kernels_per_tower'] == 32
  assert data['kernel_shape'] == [5, 5, 3]


@pytest.mark.slow
def test_cli_figures_of_a_cifar_run(cifar_workdir, tmp_path):
  import data_utils
  out = data_utils.run_cli('alexnet_jax.figures', 'neighbours', f'--workdir={cifar_workdir}',
                           f'--out={tmp_path / "n.png"}', '--queries=2', '--max_train=30',
                           '--batch_size=16', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '30 training images searched in conv3_avg space' in out.stdout
  data = json.loads((tmp_path / 'n.json').read_text())
  assert data['feature_layer'] == 'conv3_avg' and len(data['queries'][1]['neighbours']) == 6
  out = data_utils.run_cli('alexnet_jax.figures', 'kernels', f'--workdir={cifar_workdir}',
                           f'--out={tmp_path / "k.png"}', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'tower 0: mean colour saturation' in out.stdout and '(32 kernels)' in out.stdout


def test_running_top_k_merge_keeps_the_nearest_across_batches():
  """merge_top_k alone, in plain arrays: batches in any split give the global top-k, padded
  rows never enter, a distance tie keeps the earlier image."""
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(23, 4)).astype(np.float32)
  feats[7] = feats[3]                              # a tie: image 3 must win over 7
  queries = np.stack([feats[3] + 0.01, rng.normal(size=4).astype(np.float32)])
  images = np.arange(23, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  labels = np.arange(23, dtype=np.int32) % 5
  d = ((queries[:, None] - feats[None]) ** 2).sum(-1)
  want = np.lexsort((np.broadcast_to(np.arange(23), d.shape), d), axis=1)[:, :4]
  merge = jax.jit(figures_lib.merge_top_k)
  for batch in (5, 8, 23):
    best = figures_lib.init_top_k(2, 4, (2, 2, 3))
    for start in range(0, 23, batch):
      rows = np.arange(start, start + batch)
      mask = rows < 23
      take = np.minimum(rows, 22)
      best = merge(best, queries, feats[take], images[take], labels[take], mask,
                   np.int32(start))
    np.testing.assert_array_equal(np.asarray(best['index']), want, err_msg=str(batch))
    np.testing.assert_array_equal(np.asarray(best['label']), labels[want])
    np.testing.assert_array_equal(np.asarray(best['image'])[..., 0, 0, 0], want)
  assert list(want[0][:2]) == [3, 7]


# ------------------------------------------------------------------------------ curves


def test_first_epoch_reaching_the_target():
  epochs = [0.5, 1.0, 1.5, 2.0, 2.5]
  errors = [0.9, 0.5, 0.3, 0.25, 0.1]
  assert figures_lib.first_reaching(epochs, errors, 0.25) == 2.0     # at or below
  assert figures_lib.first_reaching(epochs, errors, 0.3) == 1.5
  assert figures_lib.first_reaching(epochs, errors, 0.05) is None


def test_labels_name_the_fields_the_runs_differ_in():
  a = {'model': {'activation': 'relu', 'lrn': 'paper'}, 'seed': 0, 'num_epochs': 3.0}
  b = {'model': {'activation': 'tanh', 'lrn': 'paper'}, 'seed': 0, 'num_epochs': 3.0}
  assert figures_lib.differing_fields([a, b]) == ['model.activation']
  labels, fields = figures_lib.run_labels([a, b], ['x', 'y'])
  assert labels == ['model.activation=relu', 'model.activation=tanh']
  c = dict(b, seed=1, model={'activation': 'tanh', 'lrn': 'paper', 'widths': [1, 2]})
  labels, fields = figures_lib.run_labels([a, c], ['x', 'y'])
  assert fields == ['model.activation', 'model.widths', 'seed']
  assert labels[1] == 'model.activation=tanh, model.widths=(1,2), seed=1'
  assert labels[0].endswith('model.widths=<unset>, seed=0')
  assert figures_lib.run_labels([a, a], ['x', 'y']) == (['x', 'y'], [])


def test_curves_from_workdirs_and_a_sweep_root(tmp_path):
  import data_utils

  from configs import default
  root = tmp_path / 'sweep' / 'runs'
  for name, activation, top1 in (('baseline', 'relu', 0.9), ('activation', 'tanh', 0.6)):
    w = root / name / 'seed0'
    data_utils.write_metrics(str(w), top1, evals=3)
    config = default.get_config()
    config.model.activation = activation
    workdir_lib.write_config(str(w), config)
  runs = figures_lib.find_runs([str(tmp_path / 'sweep')])
  assert [os.path.basename(os.path.dirname(r)) for r in runs] == ['activation', 'baseline']
  data = figures_lib.curves_data(runs, target_error=0.5)
  assert data['differing_fields'] == ['model.activation']
  assert [r['label'] for r in data['runs']] == ['model.activation=tanh',
                                                'model.activation=relu']
  # write_metrics logs train top1 = min(0.9, step / 300) at steps 20, 40, 60, 98, 118,
  # 138, 176, ... (every 20 within each 78-step epoch): error <= 0.5 first at step 176.
  first = data['runs'][0]['first_epoch_at_target']
  assert first == pytest.approx(176 / 78)
  assert figures_lib.curves_data(runs, target_error=0.05)['runs'][0][
      'first_epoch_at_target'] is None
  out = figures_lib.plot_curves(data, str(tmp_path / 'curves.png'))
  assert os.path.getsize(out) > 1000
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no metrics.jsonl'):
    figures_lib.find_runs([str(tmp_path / 'empty')])
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    figures_lib.find_runs([str(tmp_path / 'nothing')])


def test_curves_command_panels_labels_and_json(tmp_path):
  """`figures curves --panels` (what the `plots` command drew): the four panels of loss and
  top-1 for train and eval, labels, --x=epoch; its numbers to --json=PATH or to stdout."""
  import data_utils
  from PIL import Image
  data_utils.write_metrics(str(tmp_path / 'a'), 0.6)
  data_utils.write_metrics(str(tmp_path / 'b'), 0.5)
  runs = [f'--workdir={tmp_path / "a"}', f'--workdir={tmp_path / "b"}']
  out = data_utils.run_cli('alexnet_jax.figures', 'curves', '--panels', *runs,
                           '--labels=mine,theirs', '--x=epoch', f'--json={tmp_path / "p.json"}')
  assert out.returncode == 0, out.stderr[-3000:]
  png = tmp_path / 'a' / 'curves.png'                      # default: in the first workdir
  with Image.open(png) as im:
    assert im.size == (880, 600) and len(im.getcolors(1 << 16)) > 10
  data = json.loads((tmp_path / 'p.json').read_text())
  assert [r['label'] for r in data['runs']] == ['mine', 'theirs'] and data['x'] == 'epoch'
  assert [r['best_eval_top1'] for r in data['runs']] == [pytest.approx(0.6),
                                                          pytest.approx(0.5)]
  assert 'mine: best eval top-1 0.6000' in out.stdout
  # --json=-: the JSON alone on stdout, the text on stderr.
  out = data_utils.run_cli('alexnet_jax.figures', 'curves', *runs, '--json=-',
                           '--target_error=0.5', f'--out={tmp_path / "c.png"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert len(json.loads(out.stdout)['runs']) == 2 and 'first at training error' in out.stderr
  assert not (tmp_path / 'c.json').exists() and (tmp_path / 'c.png').exists()
  bad = data_utils.run_cli('alexnet_jax.figures', 'curves', '--panels', runs[0],
                           '--labels=p,q')
  assert bad.returncode == 2 and 'error: 2 labels for 1 workdirs' in bad.stderr
  assert 'Traceback' not in bad.stderr


@pytest.mark.slow
def test_cli_writes_each_figure(run, tmp_path):
  import data_utils
  out = data_utils.run_cli('alexnet_jax.figures', 'kernels', f'--workdir={run.workdir}',
                           f'--out={tmp_path / "k.png"}', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'tower 0: mean colour saturation' in out.stdout and (tmp_path / 'k.png').exists()
  assert f'latest checkpoint (step 2) of {run.workdir}' in out.stdout        # the default
  data = json.loads((tmp_path / 'k.json').read_text())
  assert len(data['saturation']) == 2 and (data['checkpoint'], data['step']) == ('latest', 2)
  out = data_utils.run_cli('alexnet_jax.figures', 'neighbours', f'--workdir={run.workdir}',
                           f'--out={tmp_path / "n.png"}', '--queries=2', '--max_train=40',
                           '--batch_size=16', '--checkpoint=best', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  data = json.loads((tmp_path / 'n.json').read_text())
  assert (data['checkpoint'], data['step']) == ('best', 1)
  assert data['train_images_searched'] == 40 and len(data['queries']) == 2
  assert len(data['queries'][0]['neighbours']) == 6
  for name in ('a', 'b'):
    data_utils.write_metrics(str(tmp_path / name), 0.5)
  out = data_utils.run_cli('alexnet_jax.figures', 'curves', f'--workdirs={tmp_path / "a"},'
                           f'{tmp_path / "b"}', f'--out={tmp_path / "c.png"}',
                           '--target_error=0.5', timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'a: first at training error <= 0.5 at epoch 2.26' in out.stdout
  assert len(json.loads((tmp_path / 'c.json').read_text())['runs']) == 2
  bad = data_utils.run_cli('alexnet_jax.figures', 'kernels', f'--workdir={tmp_path / "no"}',
                           f'--out={tmp_path / "x.png"}', timeout=300)
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr
