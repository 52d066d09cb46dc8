"""input_pipeline's streams on a 'folder' dataset of real ImageNet photos and on TFDS."""

import glob
import hashlib
import io
import os

import data_utils
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from data_utils import make_class_folder as _make_folder
from PIL import Image

from alexnet_jax.common import config_lib
from alexnet_jax.data import decode, pipeline, sources, statistics
from configs import paper

PHOTOS = data_utils.sample_jpegs()
NUM_PHOTOS = 60  # enough for several batches; small enough to decode in well under a second


def _config(tmp, folder, **input_fields):
  return data_utils.folder_config(tmp / 'tfds', folder, **input_fields)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return _make_folder(tmp_path_factory.mktemp('photos'), PHOTOS[:NUM_PHOTOS])


@pytest.fixture(scope='module')
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp('work')


def _digest(image):
  return hashlib.md5(image.tobytes()).hexdigest()


def _take(it, k):
  return [next(it) for _ in range(k)]


def _stream(batches):
  return [_digest(im) for b in batches for im in b['image']]


def _eval_digests(config, split, **kw):
  batches = list(pipeline.create_eval_iterator(config, split, **kw))
  return batches, [_digest(im) for b in batches for im, m in zip(b['image'], b['mask'],
                                                                   strict=True) if m]


def test_folder_holdout_sizes_classes(tmp, folder):
  c = _config(tmp, folder)
  n_train = sources.num_examples(c, 'train')
  n_val = sources.num_examples(c, 'validation')
  assert n_train + n_val == NUM_PHOTOS and 1 <= n_val <= NUM_PHOTOS // 4
  assert sources.num_classes(c) == 3
  _, train = _eval_digests(c, 'train', local_batch_size=16)
  _, val = _eval_digests(c, 'validation', local_batch_size=16)
  assert len(set(train)) == n_train and len(set(val)) == n_val
  assert not set(train) & set(val)


@pytest.mark.parametrize('mode', decode.RESIZE_MODES)
def test_train_batches_are_the_host_square_with_labels(tmp, folder, mode):
  """The centre square (the paper), or with input.resize_mode='squash' the whole photo
  squashed (Caffe): training takes the same host square as evaluation."""
  c = _config(tmp, folder, resize_size=48, resize_mode=mode)
  b = next(pipeline.create_train_iterator(c, local_batch_size=8))
  assert b['image'].shape == (8, 48, 48, 3) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32 and set(b) == {'image', 'label'}
  # Every yielded image is the host op applied to one of the files, with that file's label.
  by_digest = {}
  for path in glob.glob(str(folder / '*' / '*')):
    image = decode.decode_resized(tf.constant(open(path, 'rb').read()), 48, 'area',
                                  mode).numpy()
    by_digest[_digest(image)] = int(os.path.basename(os.path.dirname(path))[-1])
  for image, label in zip(b['image'], b['label'], strict=True):
    assert by_digest[_digest(image)] == label


def test_train_deterministic_and_seed_dependent(tmp, folder):
  c = _config(tmp, folder)
  a = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=8), 3))
  b = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=8), 3))
  assert a == b
  c.seed = 1
  other = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=8), 3))
  assert other != a


def test_epochs_cover_the_split_once_and_are_reshuffled(tmp, folder):
  c = _config(tmp, folder)
  n = sources.num_examples(c, 'train')
  batch = 5
  stream = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=batch),
                         -(-3 * n // batch)))
  epochs = [stream[e * n:(e + 1) * n] for e in range(3)]
  assert all(len(set(e)) == n for e in epochs)
  assert set(epochs[0]) == set(epochs[1]) == set(epochs[2])
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


# Inside epoch 0; straddling the end of epoch 0 (55 examples); inside epoch 1.
@pytest.mark.parametrize('start_step', [3, 13, 20])
def test_resume_gives_the_same_batches(tmp, folder, start_step):
  c = _config(tmp, folder)
  full = _take(pipeline.create_train_iterator(c, local_batch_size=4), start_step + 3)
  resumed = _take(pipeline.create_train_iterator(c, local_batch_size=4,
                                                       start_step=start_step), 3)
  for x, y in zip(full[start_step:], resumed, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_eval_padding_odd_split_two_processes(tmp, folder):
  c = _config(tmp, folder)
  n = sources.num_examples(c, 'train')
  assert n % 7 and n % 6  # leaves partial batches (55 with the fixed hold-out)
  single, single_digests = _eval_digests(c, 'train', local_batch_size=7)
  assert len(single) == pipeline.eval_steps(c, 'train', 7) == -(-n // 7)
  assert sum(b['mask'].sum() for b in single) == n
  assert all(b['image'].shape[0] == 7 and b['mask'].dtype == bool for b in single)
  assert not single[-1]['image'][~single[-1]['mask']].any()  # padding is zeros

  parts = [_eval_digests(c, 'train', local_batch_size=3, process_index=p, process_count=2)
           for p in range(2)]
  steps = pipeline.eval_steps(c, 'train', 3 * 2)
  assert [len(b) for b, _ in parts] == [steps, steps]
  assert not set(parts[0][1]) & set(parts[1][1])
  assert sorted(parts[0][1] + parts[1][1]) == sorted(single_digests)


def test_eval_pads_whole_batches_when_a_shard_is_shorter(tmp, tmp_path):
  folder = _make_folder(tmp_path / 'f', PHOTOS[:5], classes=2)
  c = _config(tmp, folder)
  n = sources.num_examples(c, 'train')
  parts = [list(pipeline.create_eval_iterator(c, 'train', local_batch_size=2,
                                                    process_index=p, process_count=3))
           for p in range(3)]
  steps = pipeline.eval_steps(c, 'train', 6)
  assert all(len(p) == steps for p in parts)
  assert sum(b['mask'].sum() for p in parts for b in p) == n


def test_train_shards_of_two_processes_are_disjoint(tmp, folder):
  c = _config(tmp, folder)
  n = sources.num_examples(c, 'train')
  seen = []
  for p in range(2):
    it = pipeline.create_train_iterator(c, local_batch_size=1, process_index=p,
                                              process_count=2)
    local = pipeline.shard(c, 'train', p, 2).num_examples
    seen.append(set(_stream(_take(it, local))))
    assert len(seen[-1]) == local
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == n


def _write(path, image: Image.Image, fmt, **kw):
  buf = io.BytesIO()
  image.save(buf, format=fmt, **kw)
  path.write_bytes(buf.getvalue())


@pytest.fixture()
def messy_folder(tmp_path):
  """Real photos plus: PNG, grayscale and CMYK named .JPEG, a truncated and a garbage JPEG."""
  root = _make_folder(tmp_path / 'messy', PHOTOS[:9], classes=2)
  photo = Image.open(PHOTOS[0]).convert('RGB')
  _write(root / 'class0' / 'png_inside.JPEG', photo, 'PNG')
  _write(root / 'class0' / 'gray.JPEG', photo.convert('L'), 'JPEG')
  _write(root / 'class1' / 'cmyk.JPEG', photo.convert('CMYK'), 'JPEG')
  data = open(PHOTOS[1], 'rb').read()
  (root / 'class1' / 'truncated.JPEG').write_bytes(data[:len(data) // 5])
  (root / 'class0' / 'garbage.JPEG').write_bytes(b'\xff\xd8\xff' + os.urandom(500))
  return root


def test_corrupt_files_are_skipped_and_counted(tmp, messy_folder):
  c = _config(tmp, messy_folder)
  n = sources.num_examples(c, 'train') + sources.num_examples(c, 'validation')
  assert n == 14
  skips = pipeline.SkipReport()
  masked = 0
  for split in ('train', 'validation'):
    for b in pipeline.create_eval_iterator(c, split, local_batch_size=4, skips=skips):
      masked += int(b['mask'].sum())
  assert masked == n - 2
  assert sum(skips.counts.values()) == 2

  # Training: one epoch's worth of batches, positions of bad files refilled, resume exact.
  n_train = sources.num_examples(c, 'train')
  bad_in_train = sum(1 for p in sources.folder_listing(str(messy_folder), 'train').paths
                     if os.path.basename(p) in ('truncated.JPEG', 'garbage.JPEG'))
  assert bad_in_train == 2  # the hash hold-out keeps both in train
  skips = pipeline.SkipReport()
  full = _take(pipeline.create_train_iterator(c, local_batch_size=2, skips=skips),
               n_train // 2 + 2)
  assert 2 <= skips.total('train') <= 4  # epoch 0, maybe early epoch 1
  assert all(b['image'].shape == (2, 40, 40, 3) for b in full)
  resumed = _take(pipeline.create_train_iterator(c, local_batch_size=2, start_step=3), 3)
  for x, y in zip(full[3:6], resumed, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])


def test_random_resized_crop_on_host(tmp, folder):
  c = _config(tmp, folder, random_crop='resized')
  a = _take(pipeline.create_train_iterator(c, local_batch_size=4), 4)
  assert a[0]['image'].shape == (4, 32, 32, 3)
  resumed = _take(pipeline.create_train_iterator(c, local_batch_size=4, start_step=2), 2)
  for x, y in zip(a[2:], resumed, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
  ev = next(pipeline.create_eval_iterator(c, 'train', local_batch_size=4))
  assert ev['image'].shape == (4, 40, 40, 3)  # eval stays centre resize_size


def test_preresized_tfds_copy_is_read(tmp_path):
  """The `<name>_resized<R>` dataset `prepare` writes, read through the TFDS path."""
  ddir = str(tmp_path / 'tfds')
  photos = PHOTOS[:6]
  images = [open(p, 'rb').read() for p in photos]
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=3)})

  def split(lo, hi):
    return tf.data.Dataset.from_tensor_slices(
        {'image': tf.constant(images[lo:hi]), 'label': tf.constant([i % 3 for i in
                                                                    range(lo, hi)], tf.int64)})

  tfds.dataset_builders.store_as_tfds_dataset(
      name='toyset_resized40', version='1.0.0', features=features, data_dir=ddir,
      split_datasets={'train': split(0, 4), 'validation': split(4, 6)})
  c = config_lib.base()
  c.dataset.name = 'toyset'
  c.dataset.data_dir = ddir
  c.input.resize_size = 40
  c.model.input_size = 32
  with pytest.raises(FileNotFoundError, match='toyset'):
    sources.num_examples(c, 'train')
  c.input.use_preresized = True
  assert sources.num_examples(c, 'train') == 4
  assert sources.num_classes(c) == 3
  batches, digests = _eval_digests(c, 'validation', local_batch_size=4)
  expected = {_digest(decode.decode_centre(tf.constant(im), 40,
                                               c.input.resize_method).numpy())
              for im in images[4:6]}
  assert set(digests) == expected and len(batches) == 1
  parts = [_eval_digests(c, 'train', local_batch_size=2, process_index=p, process_count=2)[1]
           for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == 2 and not set(parts[0]) & set(parts[1])
  b = next(pipeline.create_train_iterator(c, local_batch_size=3))
  assert b['image'].shape == (3, 40, 40, 3)


def test_builtin_shapes_dataset(tmp_path):
  c = config_lib.base()
  c.dataset.name = 'alexnet_shapes'
  c.dataset.data_dir = str(tmp_path / 'tfds')
  c.dataset.shapes_image_size = 32
  c.dataset.shapes_train_size = 40
  c.dataset.shapes_validation_size = 10
  c.input.resize_size = 32
  c.model.input_size = 28
  assert sources.num_examples(c, 'train') == 40
  assert sources.num_examples(c, 'validation') == 10
  assert sources.num_classes(c) == 10
  b = next(pipeline.create_train_iterator(c, local_batch_size=8))
  assert b['image'].shape == (8, 32, 32, 3) and b['label'].max() < 10
  ev = list(pipeline.create_eval_iterator(c, 'validation', local_batch_size=4))
  assert len(ev) == 3 and sum(e['mask'].sum() for e in ev) == 10


def test_tfds_sharded_files_train_stream(tmp_path):
  """A TFDS split in 4 record files: per-epoch file order + buffer shuffle, each epoch covers
  the shard once, resume is exact, two processes read disjoint halves."""
  from alexnet_jax.data.datasets import shapes
  ddir = str(tmp_path / 'tfds')
  shapes.builder(ddir, image_size=16, train_size=48, validation_size=8).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=4))
  c = config_lib.base()
  c.dataset.name = 'alexnet_shapes'
  c.dataset.data_dir = ddir
  c.dataset.shapes_image_size = 16
  c.dataset.shapes_train_size = 48
  c.dataset.shapes_validation_size = 8
  c.input.resize_size = 16
  c.model.input_size = 16
  c.input.shuffle_buffer = 4  # small: the epoch order then comes mostly from the file order
  src = pipeline.shard(c, 'train', 0, 1)
  assert src.file_shuffled is not None
  _, all_digests = _eval_digests(c, 'train', local_batch_size=16)
  assert len(set(all_digests)) == 48
  stream = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=8), 18))
  epochs = [stream[i * 48:(i + 1) * 48] for i in range(3)]
  assert all(sorted(e) == sorted(all_digests) for e in epochs)
  assert epochs[0] != epochs[1] != epochs[2]
  # Not just a local reshuffle: with a fixed file order, every epoch would start within
  # the same first 16 records (buffer 4).
  assert len(set().union(*(e[:12] for e in epochs))) > 16
  resumed = _stream(_take(pipeline.create_train_iterator(c, local_batch_size=8,
                                                               start_step=7), 4))
  assert resumed == stream[7 * 8:11 * 8]
  halves = [set(_stream(_take(pipeline.create_train_iterator(
      c, local_batch_size=4, process_index=p, process_count=2), 6))) for p in range(2)]
  assert len(halves[0]) == len(halves[1]) == 24 and not halves[0] & halves[1]


def test_synthetic_source():
  """The data source of the benchmarks' step and loop."""
  config = paper.get_config()
  config.model.num_classes, config.input.resize_size = 7, 40
  config.dataset.name = 'synthetic'
  assert sources.num_classes(config) == 7
  assert sources.num_examples(config, 'train') == 1_281_167
  assert sources.num_examples(config, 'validation') == 50_000
  assert statistics.load_or_compute_mean_image(config) is None
  it = pipeline.create_train_iterator(config, local_batch_size=4)
  batches = [next(it) for _ in range(5)]
  b = batches[0]
  assert b['image'].shape == (4, 40, 40, 3) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32 and b['label'].min() >= 0 and b['label'].max() < 7
  # Deterministic, and a resumed iterator yields the same batch k.
  resumed = next(pipeline.create_train_iterator(config, local_batch_size=4, start_step=3))
  np.testing.assert_array_equal(resumed['image'], batches[3]['image'])
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])
  evals = list(pipeline.create_eval_iterator(config, 'validation', local_batch_size=4))
  assert len(evals) == pipeline.SYNTHETIC_EVAL_BATCHES
  assert evals[0]['mask'].all() and evals[-1]['mask'].sum() == 2
  with pytest.raises(ValueError, match='synthetic'):
    sources.num_examples(config, 'test')


def _streams(c, steps):
  """Training batches (with the skips they reported) and both evaluation passes."""
  skips = pipeline.SkipReport()
  train = _take(pipeline.create_train_iterator(c, local_batch_size=2, skips=skips), steps)
  evals = {split: _eval_digests(c, split, local_batch_size=4)[1]
           for split in ('train', 'validation')}
  return train, dict(skips.counts), evals


def test_decoded_once_gives_the_same_streams(tmp, messy_folder, monkeypatch):
  """input.memory_cache_mb: the folder decoded once and gathered from memory yields the
  batches, skips and evaluation passes that decoding every time does, resume included, and
  decodes no file again; a file changed on disk is decoded again."""
  pipeline._DECODED.clear()
  n_train = sources.num_examples(_config(tmp, messy_folder), 'train')
  steps = n_train // 2 + 3                        # into the second epoch
  plain = _streams(_config(tmp, messy_folder, memory_cache_mb=0), steps)
  calls = []
  real = pipeline._decode_fn
  monkeypatch.setattr(pipeline, '_decode_fn', lambda *a, **k: calls.append(k) or real(*a, **k))
  cached_config = _config(tmp, messy_folder)
  cached = _streams(cached_config, steps)
  assert cached_config.input.memory_cache_mb > 0
  assert len(calls) == 2          # one decode pass per split, then only gathers
  for x, y in zip(plain[0], cached[0], strict=True):
    assert set(x) == set(y) == {'image', 'label'}
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert plain[1] == cached[1] and sum(cached[1].values()) >= 2   # the two bad files
  assert plain[2] == cached[2]
  resumed = _take(pipeline.create_train_iterator(cached_config, local_batch_size=2,
                                                 start_step=4), 3)
  for x, y in zip(cached[0][4:7], resumed, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert len(calls) == 2

  # A training file rewritten (another photo, same name): decoded again, and seen.
  path = sources.folder_listing(str(messy_folder), 'train').paths[0]
  other = next(p for p in PHOTOS[9:] if p)
  Image.open(other).convert('RGB').save(path, 'JPEG')
  os.utime(path, ns=(1, 1))                       # a new mtime whatever the clock
  fresh = _eval_digests(cached_config, 'train', local_batch_size=4)[1]
  assert len(calls) == 3 and fresh != cached[2]['train']
  assert fresh == _eval_digests(_config(tmp, messy_folder, memory_cache_mb=0), 'train',
                                local_batch_size=4)[1]
  pipeline._DECODED.clear()


def test_memory_cache_mb_is_refused_when_negative():
  c = config_lib.base()
  c.input.memory_cache_mb = -1
  with pytest.raises(ValueError, match=r'input.memory_cache_mb=-1.*int >= 0'):
    config_lib.validate(c)
