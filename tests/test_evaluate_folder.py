"""`evaluate --folder`: a labelled folder scored by a run, its classes matched by name.

The fast tests check the listing (labels in the run's order, the refusals) and the eval
stream it feeds, and the command's usage errors on a workdir holding only its config.json
(the folder is checked before any checkpoint is read). The slow ones take the session's tiny
CIFAR-10 run on tests/data/cifar10 (conftest.cifar_fast_run) and compare `--folder` with
its validation split's evaluation and with `predict` on the same checkpoint."""

import json
import os
import shutil

import numpy as np
import pytest
from data_utils import CIFAR_DIR, run_cli

from alexnet_jax.data import classes, pipeline, sources
from alexnet_jax.run import workdir as workdir_lib
from configs import cifar10_fast

CIFAR_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                 'ship', 'truck')


def _cifar_config():
  config = cifar10_fast.get_config()
  config.dataset.folder = CIFAR_DIR
  return config


def _class_folder(root, name: str, sources_: list[str]) -> list[str]:
  """Copies `sources_` into root/name/; returns the copies' paths, sorted."""
  os.makedirs(root / name, exist_ok=True)
  for f in sources_:
    shutil.copy(f, root / name / os.path.basename(f))
  return sorted(str(root / name / os.path.basename(f)) for f in sources_)


def _broken_jpeg(path) -> str:
  """A JPEG cut off after its first 300 bytes: it cannot be decoded."""
  with open(os.path.join(CIFAR_DIR, 'bird', '0003.jpg'), 'rb') as f:
    data = f.read()
  path.write_bytes(data[:300])
  return str(path)


def _images(name: str, n: int) -> list[str]:
  return [os.path.join(CIFAR_DIR, name, f'{i:04d}.jpg') for i in range(n)]


# ------------------------------------------------------------------------------ the listing


def test_labels_are_the_runs_indices_of_the_folder_names(tmp_path):
  # Two of the ten classes; sorted, the folder alone would call bird 0 and truck 1.
  trucks = _class_folder(tmp_path, 'truck', _images('truck', 3))
  birds = _class_folder(tmp_path, 'bird', _images('bird', 2))
  run_classes = [c.label for c in classes.class_info(_cifar_config())]
  assert tuple(run_classes) == CIFAR_CLASSES
  listing = sources.labelled_folder(tmp_path, run_classes)
  assert listing.paths == tuple(birds + trucks)
  assert listing.labels == (2, 2, 9, 9, 9)
  assert listing.classes == CIFAR_CLASSES
  # The same images as the run's own folder listing gives them, with the same labels.
  own = sources.folder_listing(CIFAR_DIR, 'train')
  by_name = {os.path.relpath(p, CIFAR_DIR): y for p, y in zip(own.paths, own.labels,
                                                                strict=True)}
  assert [by_name[os.path.relpath(p, tmp_path)] for p in listing.paths] == list(listing.labels)


def test_an_imagenet_run_takes_synset_folders(tmp_path):
  config = _cifar_config()
  config.dataset.name, config.model.num_classes = 'imagenet2012', 1000
  synsets = [c.label for c in classes.class_info(config)]      # the shipped table, no TFDS
  photo = _images('bird', 1)
  _class_folder(tmp_path, 'n15075141', photo)
  _class_folder(tmp_path, 'n01440764', photo)
  assert sources.labelled_folder(tmp_path, synsets).labels == (0, 999)
  _class_folder(tmp_path, 'tench', photo)
  with pytest.raises(sources.UnlabelledFolderError, match=r"'tench'.*n01440764"):
    sources.labelled_folder(tmp_path, synsets)


def test_folders_that_carry_no_labels_are_refused(tmp_path):
  run_classes = list(CIFAR_CLASSES)
  flat = tmp_path / 'flat'
  _class_folder(tmp_path, 'flat', _images('cat', 2))
  with pytest.raises(sources.UnlabelledFolderError,
                     match=r'holds 2 image\(s\) directly \(0000.jpg, 0001.jpg\).*'
                           r'alexnet_jax.predict'):
    sources.labelled_folder(flat, run_classes)
  _class_folder(flat, 'cat', _images('cat', 1))           # loose images beside classes too
  with pytest.raises(sources.UnlabelledFolderError, match='directly'):
    sources.labelled_folder(flat, run_classes)

  unknown = tmp_path / 'unknown'
  _class_folder(unknown, 'cat', _images('cat', 1))
  _class_folder(unknown, 'kitten', _images('cat', 1))
  with pytest.raises(sources.UnlabelledFolderError,
                     match=r"'kitten' of .* are not classes of the run; its classes are "
                           r'airplane, automobile, bird'):
    sources.labelled_folder(unknown, run_classes)

  splits = tmp_path / 'splits'
  for split in ('train', 'validation'):
    _class_folder(splits / split, 'cat', _images('cat', 1))
  with pytest.raises(sources.UnlabelledFolderError,
                     match=f'--folder={splits / "validation"}'):
    sources.labelled_folder(splits, run_classes)

  (tmp_path / 'empty').mkdir()
  with pytest.raises(sources.UnlabelledFolderError, match='no images in .* no class sub'):
    sources.labelled_folder(tmp_path / 'empty', run_classes)
  (tmp_path / 'empty' / 'cat').mkdir()
  with pytest.raises(sources.UnlabelledFolderError, match='no images in .* 1 class sub'):
    sources.labelled_folder(tmp_path / 'empty', run_classes)
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    sources.labelled_folder(tmp_path / 'nowhere', run_classes)


def test_the_eval_stream_of_a_listing_counts_each_image_once_and_skips_a_broken_one(tmp_path):
  files = _class_folder(tmp_path, 'truck', _images('truck', 3))
  files += _class_folder(tmp_path, 'bird', _images('bird', 2))
  broken = _broken_jpeg(tmp_path / 'bird' / 'broken.jpg')
  listing = sources.labelled_folder(tmp_path, CIFAR_CLASSES)
  assert len(listing.paths) == 6 and broken in listing.paths
  config, skips = _cifar_config(), pipeline.SkipReport()
  batches = list(pipeline.create_eval_iterator(config, 'mine', local_batch_size=4,
                                               skips=skips, listing=listing))
  assert len(batches) == pipeline.eval_steps(config, 'mine', 4, listing) == 2
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])[mask]
  assert mask.sum() == 5 and sorted(labels.tolist()) == [2, 2, 9, 9, 9]
  assert batches[0]['image'].shape == (4, 32, 32, 3)               # the run's resize_size
  assert skips.total('mine') == 1 and skips.names[('mine', None)] == [broken]


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope='module')
def config_only_workdir(tmp_path_factory) -> str:
  """A workdir with only the config.json of a CIFAR-10 run: enough for the usage errors."""
  workdir = str(tmp_path_factory.mktemp('config_only'))
  workdir_lib.write_config(workdir, _cifar_config())
  return workdir


@pytest.mark.parametrize('case', ['unknown', 'flat', 'with_split'])
def test_usage_errors_of_the_command(case, config_only_workdir, tmp_path):
  folder = tmp_path / 'photos'
  if case == 'flat':
    _class_folder(tmp_path, 'photos', _images('cat', 1))
  else:
    _class_folder(folder, 'cat', _images('cat', 1))
  extra = ['--split=validation'] if case == 'with_split' else []
  if case == 'unknown':
    _class_folder(folder, 'kitten', _images('cat', 1))
  r = run_cli('alexnet_jax.evaluate', f'--workdir={config_only_workdir}', f'--folder={folder}',
              *extra)
  assert r.returncode == 2, r.stderr[-2000:]
  error = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert len(error) == 1 and 'Traceback' not in r.stderr
  want = {'unknown': "sub-folder(s) 'kitten' of", 'flat': 'python -m alexnet_jax.predict',
          'with_split': 'give one of them'}[case]
  assert want in error[0]


# ------------------------------------------------------------------------------ a trained run


@pytest.fixture(scope='module')
def cifar_run(cifar_fast_run, tmp_path_factory) -> str:
  """A copy of the session's three steps of configs/cifar10_fast.py on tests/data/cifar10
  (conftest.cifar_fast_run, 8 devices), evaluated on its validation split by
  `evaluate --checkpoint=latest` (eval_validation_latest.json): this module's evaluations
  write into it."""
  workdir = tmp_path_factory.mktemp('cifar_run') / 'run'
  shutil.copytree(cifar_fast_run['workdir'], workdir)
  return str(workdir)


def _evaluate(workdir: str, *args: str) -> tuple[dict, str]:
  r = run_cli('alexnet_jax.evaluate', f'--workdir={workdir}', '--json=-', *args, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout), r.stderr


@pytest.mark.slow
def test_the_holdout_as_a_folder_scores_as_the_validation_split(cifar_run, tmp_path):
  holdout = tmp_path / 'holdout'
  val = sources.folder_listing(CIFAR_DIR, 'validation')
  for path in val.paths:
    name = os.path.basename(os.path.dirname(path))
    os.makedirs(holdout / name, exist_ok=True)
    os.symlink(path, holdout / name / os.path.basename(path))
  # The validation split's scores as `evaluate --checkpoint=latest` (crops 1 and 10) wrote
  # them when the session's run was made (conftest.cifar_fast_run).
  with open(os.path.join(cifar_run, 'eval_validation_latest.json')) as f:
    split = json.load(f)
  assert split['split'] == 'validation'
  r = run_cli('alexnet_jax.evaluate', f'--workdir={cifar_run}', f'--folder={holdout}/',
              '--crops=1,10', timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  out = os.path.join(cifar_run, 'eval_folder_holdout_latest.json')       # the default path
  assert f'written: {out}' in r.stdout
  assert f'split folder:{holdout}:' in r.stdout
  folder = json.load(open(out))
  assert folder['split'] == f'folder:{holdout}'
  assert (folder['skipped'], folder['skipped_files']) == (0, [])
  assert (folder['checkpoint'], folder['step']) == (split['checkpoint'], split['step']) == (
      'latest', 3)
  for n in (1, 10):
    assert folder[f'crops_{n}']['count'] == split[f'crops_{n}']['count'] == 33
    for key in ('top1', 'top5', 'loss'):
      assert folder[f'crops_{n}'][key] == pytest.approx(split[f'crops_{n}'][key], abs=1e-6)


@pytest.mark.slow
def test_a_subset_of_classes_is_labelled_by_name_and_a_broken_image_skipped(cifar_run,
                                                                            tmp_path):
  folder = tmp_path / 'two'
  files = _class_folder(folder, 'truck', _images('truck', 5))
  files = _class_folder(folder, 'bird', _images('bird', 3)) + files   # sorted: birds first
  broken = _broken_jpeg(folder / 'bird' / 'broken.jpg')
  result, text = _evaluate(cifar_run, f'--folder={folder}', '--crops=1')
  m = result['crops_1']
  assert m['count'] == 8
  assert (result['skipped'], result['skipped_files']) == (1, [broken])
  assert f'skipped 1 image(s) that could not be decoded: {broken}' in text
  # The same checkpoint through `predict` (every class's probability) on the good files.
  r = run_cli('alexnet_jax.predict', f'--workdir={cifar_run}', '--top=10', '--json=-', *files,
              timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  records = json.loads(r.stdout)
  assert [x['file'] for x in records] == files
  probs = np.zeros((len(files), 10))
  for i, x in enumerate(records):
    for t in x['top']:
      probs[i, t['index']] = t['prob']
  labels = np.array([2] * 3 + [9] * 5)                 # bird and truck in the run's order
  rank = (probs > probs[np.arange(8), labels][:, None]).sum(1)
  assert m['loss'] == pytest.approx(-np.log(probs[np.arange(8), labels]).mean(), rel=1e-5)
  assert m['top1'] == pytest.approx(np.mean(rank < 1))
  assert m['top5'] == pytest.approx(np.mean(rank < 5))
  # The folder's own order (bird 0, truck 1) would give another loss: the check can fail.
  wrong = np.array([0] * 3 + [1] * 5)
  assert abs(m['loss'] + np.log(probs[np.arange(8), wrong]).mean()) > 1e-4
