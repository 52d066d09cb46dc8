"""configs/imagenette.py: the TFDS builder's classes, the model's shapes and the message a user
without the dataset gets. Nothing is downloaded: TFDS's builder is only asked for its info."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_utils import run_cli

from alexnet_jax.common import config_lib
from alexnet_jax.data import sources
from alexnet_jax.model import nets
from configs import imagenette


def test_config_is_the_paper_on_imagenette_and_valid():
  c = imagenette.get_config()
  assert c.dataset.name == 'imagenette/320px-v2' == imagenette.TFDS_NAME
  assert c.model.num_classes == len(imagenette.CLASSES) == 10
  # The paper's model and input (only fc8 is narrower).
  assert c.model.towers == 2 and c.mesh.model == 2 and c.model.lrn == 'paper'
  assert tuple(c.model.conv_widths) == (96, 256, 384, 384, 256)
  assert tuple(c.model.fc_widths) == (4096, 4096) and c.model.dropout_rate == 0.5
  assert c.input.resize_size == 256 and c.model.input_size == 224
  assert c.input.random_crop == 'paper' and c.input.flip
  # Mean image and lighting PCA from Imagenette's own training split (not ImageNet's).
  assert c.input.mean == 'image' and c.input.pca_source == 'dataset'
  assert c.input.pca_lighting == 0.1 and c.input.eval_crops == 1
  assert c.dataset.train_split == 'train' and c.dataset.eval_split == 'validation'
  assert c.input.shuffle_buffer >= imagenette.TRAIN_EXAMPLES
  assert not c.input.use_preresized
  for mesh_shape in ({'data': 1, 'model': 1}, {'data': 4, 'model': 2}, {'data': 8, 'model': 1}):
    config_lib.validate(c, mesh_shape=mesh_shape)
  # Steps per epoch as the loop counts them; checkpoints every 2 epochs.
  assert imagenette.TRAIN_EXAMPLES // c.batch_size == 73
  assert c.checkpoint_every_steps == 2 * 73 and c.schedule.step_epochs[-1] < c.num_epochs


def test_classes_and_label_count_are_the_tfds_builders(tmp_path):
  """TFDS's builder knows its labels without the data (features are declared in code)."""
  builder = tfds.builder(imagenette.TFDS_NAME, data_dir=os.fspath(tmp_path))
  assert '320px-v2' in [c.name for c in builder.BUILDER_CONFIGS]
  assert builder.builder_config.name == '320px-v2' and not builder.is_prepared()
  label = builder.info.features['label']
  assert label.num_classes == imagenette.get_config().model.num_classes
  assert tuple(label.names) == tuple(wnid for wnid, _ in imagenette.CLASSES)
  assert list(label.names) == sorted(label.names)
  assert not (tmp_path / 'downloads').exists()     # asking downloaded nothing


def test_model_shapes_without_computing_anything():
  spec = config_lib.validate(imagenette.get_config())
  params = jax.eval_shape(lambda: nets.init_params(spec, seed=0))
  assert nets.count_params(params) == 56_909_194   # the paper's 60,965,224 with fc8 4096 x 10
  assert params['fc8']['kernel'].shape == (2, 2048, 10)
  images = jax.ShapeDtypeStruct((4, 224, 224, 3), np.float32)
  logits = jax.eval_shape(lambda p, x: nets.apply(spec, p, x), params, images)
  assert logits.shape == (4, 10)


def test_missing_dataset_says_how_to_build_it(tmp_path):
  c = imagenette.get_config()
  c.dataset.data_dir = os.fspath(tmp_path)
  assert not sources.is_prepared(c)
  message = sources.missing_message(c)
  assert f'tfds build imagenette/320px-v2 --data_dir={tmp_path}' in message
  with pytest.raises(FileNotFoundError) as raised:
    sources.builder(c)
  assert str(raised.value) == message


@pytest.mark.slow
def test_main_without_the_dataset_exits_2_with_the_build_command(tmp_path):
  out = run_cli('alexnet_jax.main', '--config=configs/imagenette.py',
                f'--workdir={tmp_path / "run"}', f'--config.dataset.data_dir={tmp_path}')
  assert out.returncode == 2, out.stderr[-2000:]
  assert 'tfds build imagenette/320px-v2' in out.stderr and 'Traceback' not in out.stderr
  assert not (tmp_path / 'downloads').exists()
