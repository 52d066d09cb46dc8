"""imagenet.prepare and the prepare CLI on a tiny ILSVRC-2012-layout archive of real photos,
with the real TFDS builder."""

import io
import os
import subprocess
import sys

import data_utils
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from alexnet_jax.data import decode, sources, statistics
from alexnet_jax.data import prepare as imagenet
from configs import paper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp, *, manual=None):
  c = paper.get_config()
  c.dataset.data_dir = os.path.join(tmp, 'data')
  c.dataset.manual_dir = manual or os.path.join(tmp, 'manual')
  return c


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('imagenet'))
  tiny = data_utils.make_ilsvrc2012_manual_dir(os.path.join(tmp, 'manual'))
  config = _config(tmp)
  imagenet.prepare(config, preresized=True, log=lambda m: None)
  return config, tiny


def _jpeg_roundtrip(image, quality):
  buf = io.BytesIO()
  Image.fromarray(image.astype(np.uint8)).save(buf, format='JPEG', quality=quality)
  return np.asarray(Image.open(buf), dtype=np.float32)


def _read(name, data_dir, split):
  b = tfds.builder(name, data_dir=data_dir)
  raw = b.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  out = {}
  for ex in tfds.as_numpy(raw):
    ex['image_bytes'] = ex['image']
    ex['image'] = np.asarray(Image.open(io.BytesIO(ex['image'])).convert('RGB'))
    out[ex['file_name'].decode()] = ex
  return out


def test_missing_files_named(tmp_path):
  config = _config(str(tmp_path))
  mdir = config.dataset.manual_dir
  assert sources.check_manual_files(mdir) == [
      epath.Path(mdir, 'ILSVRC2012_img_train.tar'),
      epath.Path(mdir, 'ILSVRC2012_img_val.tar')]
  data_utils.make_ilsvrc2012_manual_dir(mdir, write_val=False)
  missing = epath.Path(mdir, 'ILSVRC2012_img_val.tar')
  assert sources.check_manual_files(mdir) == [missing]
  # prepare refuses before writing anything, with the one message (tests/test_sources.py).
  with pytest.raises(FileNotFoundError) as raised:
    imagenet.prepare(config, log=lambda m: None)
  message = str(raised.value)
  assert message == sources.missing_message(config)
  assert f'missing: {missing}' in message
  assert 'ILSVRC2012_img_train.tar' not in message
  assert 'python -m alexnet_jax.prepare --config=configs/paper.py' in message
  assert not os.path.exists(config.dataset.data_dir + '/imagenet2012')


@pytest.mark.slow
def test_cli_refuses_without_archives(tmp_path):
  config = _config(str(tmp_path))
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.prepare', '--config=configs/paper.py',
       f'--config.dataset.data_dir={config.dataset.data_dir}',
       f'--config.dataset.manual_dir={config.dataset.manual_dir}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr
  for f in sources.MANUAL_FILES:
    assert f'missing: {os.path.join(config.dataset.manual_dir, f)}' in proc.stderr


def test_cli_refuses_a_preresized_copy_for_squashed_inputs(tmp_path):
  """The copy holds centre squares: input.resize_mode='squash' could never read it."""
  r = data_utils.run_cli('alexnet_jax.prepare', '--config=configs/paper.py',
                         f'--config.dataset.data_dir={tmp_path}',
                         '--config.input.resize_mode=squash', '--preresized')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert "error: --preresized writes centre squares (input.resize_mode='shorter_side')" in (
      r.stderr)
  assert not os.listdir(tmp_path)                  # refused before anything is written


def test_tfds_imagenet2012_splits_and_labels(prepared):
  config, tiny = prepared
  b = tfds.builder('imagenet2012', data_dir=config.dataset.data_dir)
  assert b.info.splits['train'].num_examples == len(tiny.train) == 8
  assert b.info.splits['validation'].num_examples == len(tiny.validation) == 3
  names = b.info.features['label'].names
  for split, wnids in (('train', tiny.train_wnids), ('validation', tiny.validation_wnids)):
    examples = _read('imagenet2012', config.dataset.data_dir, split)
    assert sorted(examples) == sorted(wnids)
    for fname, ex in examples.items():
      assert names[ex['label']] == wnids[fname], fname
  assert names.index('n01440764') == 0  # tench is label 0 in TFDS's labels.txt
  # Validation labels come from TFDS's own file: val images 1..3 are these classes.
  assert [tiny.validation_wnids[f'ILSVRC2012_val_{i:08d}.JPEG'] for i in (1, 2, 3)] == [
      'n01751748', 'n09193705', 'n02105855']
  assert sources.missing_message(config) == ''  # prepared: training may start


def test_preresized_copy_matches_pil(prepared):
  config, tiny = prepared
  name = sources.preresized_name(config)
  assert name == 'imagenet2012_resized256'
  b = tfds.builder(name, data_dir=config.dataset.data_dir)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {'train': 8, 'validation': 3}
  assert set(b.info.features) == {'image', 'label', 'file_name'}
  original = tfds.builder('imagenet2012', data_dir=config.dataset.data_dir)
  assert b.info.features['label'].names == original.info.features['label'].names
  for split, photos in (('train', tiny.train), ('validation', tiny.validation)):
    resized = _read(name, config.dataset.data_dir, split)
    source = _read('imagenet2012', config.dataset.data_dir, split)
    for fname, ex in resized.items():
      assert ex['image'].shape == (256, 256, 3)
      assert ex['label'] == source[fname]['label']
      expected = data_utils.resize_center_crop_pil(photos[fname]).astype(np.float32)
      # "Within JPEG tolerance": the error PIL itself makes re-encoding the reference at
      # the same quality, plus ~1 level for the decoders (libjpeg-turbo in TF vs PIL's) and
      # <1 for the filters (input.resize_method='area' box / DCT scaling vs PIL triangle).
      jpeg_error = np.abs(_jpeg_roundtrip(expected, imagenet.JPEG_QUALITY) - expected).mean()
      diff = np.abs(ex['image'].astype(np.float32) - expected).mean()
      assert diff < jpeg_error + 2.0, (fname, diff, jpeg_error)
      # And it is what the training pipeline makes of the original, up to the JPEG alone.
      host = decode.decode_centre(tf.constant(source[fname]['image_bytes']), 256,
                                  imagenet.preresize_method(config)).numpy().astype(np.float32)
      host_jpeg_error = np.abs(_jpeg_roundtrip(host, imagenet.JPEG_QUALITY) - host).mean()
      assert np.abs(ex['image'] - host).mean() < host_jpeg_error + 0.5, fname


def test_mean_image(prepared):
  config, tiny = prepared
  path = statistics.mean_image_path(config)
  assert path.exists()  # written by prepare
  mean = np.load(path)
  expected = np.mean([data_utils.resize_center_crop_pil(p) for p in tiny.train.values()],
                     axis=0)
  assert mean.shape == (256, 256, 3)
  assert np.abs(mean - expected).mean() < 1.5



def test_rgb_pca_beside_the_mean(prepared):
  config, tiny = prepared
  path = statistics.rgb_pca_path(config)
  assert path.exists() and path.parent == statistics.mean_image_path(config).parent
  pca = statistics.load_or_compute_rgb_pca(config)      # read back, not recomputed
  assert pca.source == 'dataset' and pca.images == len(tiny.train) == 8
  pixels = np.stack([data_utils.resize_center_crop_pil(p) for p in tiny.train.values()])
  eigval = np.sort(np.linalg.eigvalsh(np.cov(pixels.reshape(-1, 3) / 255.0, rowvar=False)))
  np.testing.assert_allclose(pca.eigval, eigval[::-1], rtol=0.05)
