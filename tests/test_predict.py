"""`predict`: the run's evaluation path on image files, class names, bad files, batching."""

import collections
import dataclasses
import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
import workdir_utils
from PIL import Image

from alexnet_jax.data import classes as class_names
from alexnet_jax.data import pipeline
from alexnet_jax.model import nets, steps
from alexnet_jax.run import evaluate as evaluation
from alexnet_jax.run import workdir as workdir_lib
from alexnet_jax.tools import predict as inference

BATCH = 8          # a multiple of the 4 'data' devices of the (data=4, model=2) test mesh


@pytest.fixture(scope='module')
def run_dir(fresh_workdir):
  return fresh_workdir


@pytest.fixture(scope='module')
def run(run_dir):
  return inference.load_run(run_dir, batch_size=BATCH)


@pytest.fixture(scope='module')
def val_files(run, tmp_path_factory):
  return workdir_utils.export_split(run.config, 'validation',
                                    tmp_path_factory.mktemp('val_files'))


# ------------------------------------------------------------------------------ classes


def test_imagenet_class_table():
  import tensorflow_datasets as tfds
  classes = class_names.imagenet_classes()
  assert len(classes) == 1000
  synsets = [c.label for c in classes]
  assert len(set(synsets)) == 1000 and synsets == sorted(synsets)
  tfds_synsets = tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split()
  assert synsets == tfds_synsets
  assert (classes[0].label, classes[0].name) == ('n01440764', 'tench')
  assert classes[1].name == 'goldfish' and classes[999].name == 'toilet tissue'
  assert all(c.name and '\t' not in c.name for c in classes)


@pytest.mark.slow
def test_the_class_table_ships_in_the_wheel(repo_root, tmp_path):
  import subprocess
  import sys
  import zipfile
  # setuptools builds in the source tree: leave it as it was (both names are git-ignored).
  made = [os.path.join(repo_root, d) for d in ('build', 'alexnet_jax.egg-info')
          if not os.path.exists(os.path.join(repo_root, d))]
  try:
    out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                          '--no-build-isolation', '-q', '-w', str(tmp_path), repo_root],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
  finally:
    for d in made:
      shutil.rmtree(d, ignore_errors=True)
  assert out.returncode == 0, out.stderr[-2000:]
  wheel, = tmp_path.glob('alexnet_jax-*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  assert 'alexnet_jax/data/imagenet_classes.tsv' in names
  assert 'alexnet_jax/tools/predict.py' in names and 'alexnet_jax/predict.py' in names
  assert 'alexnet_jax/data/classes.py' in names


def test_imagenet_names_match_the_sample_photos(sample_photos):
  """The sample photos are named <synset>_<class name>.JPEG by an independent source."""
  by_synset = {c.label: c.name for c in class_names.imagenet_classes()}
  checked = 0
  for path in sample_photos:
    synset, name = os.path.basename(path)[:-len('.JPEG')].split('_', 1)
    assert by_synset[synset].replace(' ', '_').lower() == name.lower(), path
    checked += 1
  assert checked >= 100


def test_class_names_of_a_tfds_dataset_need_no_data(tmp_path):
  from alexnet_jax.common import config_lib
  config = config_lib.base()
  config.dataset.name, config.dataset.data_dir = 'imagenette', str(tmp_path)   # empty
  config.model.num_classes = 10
  classes = class_names.class_info(config)
  assert (classes[0].label, classes[0].name) == ('n01440764', 'tench')   # synset -> name
  assert len(classes) == 10 and len({c.name for c in classes}) == 10
  assert not os.listdir(tmp_path)                                          # nothing built


def test_class_names_of_the_builtin_dataset_and_a_folder(run, tmp_path):
  from alexnet_jax.data import sources
  names = sources.builder(run.config).info.features['label'].names
  classes = class_names.class_info(run.config)
  assert [c.label for c in classes] == list(names) and len(classes) == 10
  for d in ('n01440764', 'my_cats'):
    (tmp_path / d).mkdir()
  config = run.config.copy_and_resolve_references()
  config.dataset.name, config.dataset.folder = 'folder', str(tmp_path)
  config.model.num_classes = 2
  assert [(c.label, c.name) for c in class_names.class_info(config)] == [
      ('my_cats', 'my cats'), ('n01440764', 'tench')]
  config.model.num_classes = 3       # does not match: indices, with a warning
  assert [c.name for c in class_names.class_info(config)] == ['class 0', 'class 1', 'class 2']


# ------------------------------------------------------------------------------ equality


def _eval_path_probabilities(run, crops: int = 1) -> np.ndarray:
  """Softmax of the evaluation's own forward pass over the validation split, in order."""
  config = run.config.copy_and_resolve_references()
  config.input.eval_crops = crops
  fn = jax.jit(lambda p, x, m: steps.eval_logits(config, run.spec, p, x, m))
  out = []
  with jax.set_mesh(run.mesh):
    for batch in pipeline.create_eval_iterator(config, 'validation',
                                                     local_batch_size=BATCH):
      logits = np.asarray(fn(run.params, run.put(batch['image']), run.mean), np.float64)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      out.append((p.mean(axis=1) if crops == 10 else p)[batch['mask']])
  return np.concatenate(out)


@pytest.mark.slow
def test_predictions_equal_the_evaluation_path(run, run_dir, val_files):
  paths, labels = val_files
  results = inference.predict_files(run, paths, progress=False)
  assert [r.file for r in results] == paths and all(r.error is None for r in results)
  probs = np.stack([r.probabilities for r in results])
  np.testing.assert_allclose(probs, _eval_path_probabilities(run), atol=2e-6)
  # ... and the `evaluate` command's numbers from them.
  metrics = evaluation.evaluate_checkpoint(run_dir, crops=(1,), batch_size=BATCH)['crops_1']
  p_true = probs[np.arange(len(labels)), labels]
  assert metrics['count'] == len(labels) == 101
  np.testing.assert_allclose(metrics['loss'], -np.log(p_true).mean(), rtol=1e-5)
  assert metrics['top1'] == pytest.approx(np.mean(probs.argmax(1) == np.asarray(labels)))


@pytest.mark.slow
def test_ten_crops_are_the_mean_of_the_ten_softmaxes(run_dir, val_files, run):
  paths = val_files[0][:5]
  ten = inference.load_run(run_dir, batch_size=BATCH, crops=10)
  got = np.stack([r.probabilities for r in inference.predict_files(ten, paths, progress=False)])
  # Independently: each crop cut out with NumPy from the host image, minus the mean's same
  # window, times input.scale, through the model, then softmax, averaged over the 10.
  host = np.stack(list(inference.host_batches(run.config, paths, BATCH))[0].images[:5])
  mean = np.asarray(run.mean)
  size, crop = host.shape[1], run.spec.input_size
  c, far = (size - crop) // 2, size - crop
  views = []
  for y, x in ((c, c), (0, 0), (0, far), (far, 0), (far, far)):
    views.append((host[:, y:y + crop, x:x + crop].astype(np.float32)
                  - mean[y:y + crop, x:x + crop]) * run.config.input.scale)
  views += [v[:, :, ::-1] for v in views]
  softmaxes = []
  for v in views:
    logits = np.asarray(nets.apply(run.spec, run.params, v), np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    softmaxes.append(e / e.sum(-1, keepdims=True))
  np.testing.assert_allclose(got, np.mean(softmaxes, axis=0), atol=2e-6)
  assert not np.allclose(softmaxes[0], softmaxes[1], atol=1e-4)   # the crops do differ


@pytest.mark.slow
def test_batches_with_a_padded_last_one_equal_one_by_one_and_compile_once(run, val_files):
  paths = val_files[0][:2 * BATCH + 3]          # 2 full batches and a padded third
  fn = inference.make_probabilities_fn(run)
  batched = inference.predict_files(run, paths, fn=fn, progress=False)
  assert fn._cache_size() == 1
  single = dataclasses.replace(run, batch_size=workdir_lib.batch_size_for(1, run.mesh))
  assert single.batch_size == 4                               # the 4 data devices
  fn1 = inference.make_probabilities_fn(single)
  alone = [inference.predict_files(single, [p], fn=fn1, progress=False)[0] for p in paths]
  assert fn1._cache_size() == 1
  np.testing.assert_allclose(np.stack([r.probabilities for r in batched]),
                             np.stack([r.probabilities for r in alone]), atol=2e-6)


# ------------------------------------------------------------------------------ bad files


def _bad_folder(root, good: str) -> dict[str, str]:
  """A folder of one good JPEG, a grayscale and a CMYK JPEG, a PNG named .JPEG (in a
  sub-folder), a text file named .jpg and a truncated JPEG; returns kind -> path."""
  os.makedirs(os.path.join(root, 'sub'), exist_ok=True)
  data = open(good, 'rb').read()
  rgb = Image.open(io.BytesIO(data)).convert('RGB')
  paths = {k: os.path.join(root, name) for k, name in (
      ('good', 'good.jpg'), ('gray', 'gray.JPG'), ('cmyk', 'cmyk.jpeg'),
      ('png', 'sub/png_named.JPEG'), ('text', 'notes.jpg'), ('truncated', 'cut.jpg'))}
  shutil.copy(good, paths['good'])
  rgb.convert('L').save(paths['gray'], format='JPEG', quality=95)
  rgb.convert('CMYK').save(paths['cmyk'], format='JPEG', quality=95)
  rgb.save(paths['png'], format='PNG')
  with open(paths['text'], 'w') as f:
    f.write('not an image\n')
  with open(paths['truncated'], 'wb') as f:
    f.write(data[:len(data) // 3])
  with open(os.path.join(root, 'README.txt'), 'w') as f:     # not an image extension
    f.write('skipped\n')
  return paths


def test_bad_files_are_reported_and_the_others_classified(run, val_files, tmp_path):
  paths = _bad_folder(str(tmp_path), val_files[0][0])
  files, missing = inference.list_images([str(tmp_path), str(tmp_path / 'nope.jpg')])
  assert sorted(files) == sorted(paths.values()) and missing == [str(tmp_path / 'nope.jpg')]
  seen = []
  results = {r.file: r for r in inference.predict_files(run, files, progress=False,
                                                        on_result=seen.append)}
  assert [r.file for r in seen] == files            # reported in the order given
  assert inference.predict_files(run, files[:2], progress=False, keep=False) == []
  for kind in ('good', 'gray', 'cmyk', 'png'):
    p = results[paths[kind]].probabilities
    assert results[paths[kind]].error is None and p.sum() == pytest.approx(1, abs=1e-5), kind
  for kind in ('text', 'truncated'):
    assert 'cannot be decoded as an image' in results[paths[kind]].error, kind
    assert results[paths[kind]].probabilities is None
  # A grayscale image is classified as its RGB replica (R = G = B), losslessly stored.
  gray = np.asarray(Image.open(paths['good']).convert('L'))
  Image.fromarray(gray).save(tmp_path / 'gray.png')
  Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / 'replica.png')
  one, three = inference.predict_files(run, [str(tmp_path / 'gray.png'),
                                             str(tmp_path / 'replica.png')], progress=False)
  np.testing.assert_allclose(one.probabilities, three.probabilities, atol=1e-7)


def test_top_k_and_output_formats(run):
  classes = class_names.class_info(run.config)
  p = inference.Prediction('a.jpg', probabilities=np.array(
      [0.05, 0.4, 0.1, 0.4, 0.05] + [0.0] * 5, np.float32))
  assert [i for i, _ in p.top(3)] == [1, 3, 2]            # a tie: the lower index first
  record = inference.to_json(p, classes, 2)
  assert record['file'] == 'a.jpg' and [t['index'] for t in record['top']] == [1, 3]
  assert record['top'][0]['name'] == classes[1].name
  assert record['top'][0]['prob'] == pytest.approx(0.4)
  text = inference.format_text(p, classes, 2).splitlines()
  assert text[0] == 'a.jpg' and classes[1].name in text[1] and '40.00%' in text[1]
  assert inference.to_json(inference.Prediction('b', error='x'), classes, 2) == {
      'file': 'b', 'error': 'x'}


def test_progress_line_when_not_a_terminal():
  out = io.StringIO()
  meter = inference.Progress(100, stream=out, every_s=0.0)
  meter.update(50, 1)
  meter.update(100, 1)
  lines = out.getvalue().splitlines()
  assert len(lines) == 2 and '50/100 images, 1 failed' in lines[0] and '100/100' in lines[1]


# ------------------------------------------------------------------------------ the command


@pytest.mark.slow
def test_cli_json_exit_status_and_messages(run_dir, val_files, tmp_path):
  import data_utils
  paths = _bad_folder(str(tmp_path / 'photos'), val_files[0][0])
  out = data_utils.run_cli('alexnet_jax.predict', f'--workdir={run_dir}', '--json=-',
                           '--top=3', f'--batch_size={BATCH}', str(tmp_path / 'photos'),
                           timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  assert f'latest checkpoint (step 2) of {run_dir}' in out.stderr      # the default
  records = json.loads(out.stdout)
  assert [r['file'] for r in records] == sorted(r['file'] for r in records)   # folder order
  by_file = {r['file']: r for r in records}
  assert set(by_file) == set(paths.values())
  errors = collections.Counter('error' in r for r in records)
  assert errors == {False: 4, True: 2}
  for kind in ('text', 'truncated'):
    assert f'error: {paths[kind]}: cannot be decoded as an image' in out.stderr
  top = by_file[paths['good']]['top']
  assert len(top) == 3 and {'index', 'label', 'name', 'prob'} <= set(top[0])
  assert '2 of 6 file(s) failed' in out.stderr and 'Traceback' not in out.stderr
  # Text output, all good: exit 0.
  ok = data_utils.run_cli('alexnet_jax.predict', f'--workdir={run_dir}', paths['good'],
                          timeout=300)
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert ok.stdout.splitlines()[0] == paths['good'] and '%' in ok.stdout.splitlines()[1]
  # Usage errors: exit 2.
  for args in ([f'--workdir={tmp_path / "nothing"}', paths['good']],
               [f'--workdir={run_dir}', str(tmp_path / 'empty_dir_missing')],
               [f'--workdir={run_dir}']):
    bad = data_utils.run_cli('alexnet_jax.predict', *args, timeout=300)
    assert bad.returncode == 2, (args, bad.stderr[-2000:])
    assert 'Traceback' not in bad.stderr
