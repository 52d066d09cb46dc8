"""configs/paper.py holds the paper's values (sections 3-5); changing one breaks this test."""

import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.model import layers
from configs import default, one_tower, paper


def test_every_paper_value_of_the_paper_config():
  c = paper.get_config()
  # Section 5: the recipe.
  assert c.batch_size == 128
  assert c.optimizer.learning_rate == 0.01
  assert c.optimizer.momentum == 0.9 and not c.optimizer.nesterov
  assert c.optimizer.weight_decay == 0.0005
  assert c.num_epochs == 90.0 and c.num_train_steps == -1
  # "divide the learning rate by 10 when the validation error rate stopped improving
  # ... reduced three times prior to termination"
  assert c.schedule.name == 'plateau'
  assert c.schedule.factor == 0.1 and c.schedule.max_reductions == 3
  assert c.schedule.patience == 2 and c.schedule.min_delta == 1e-4
  # Init: N(0, 0.01), biases 1 in conv2/4/5, fc6/7 (models' 'paper' init).
  assert c.model.init == 'paper'
  # Section 3: architecture.
  assert c.model.towers == 2 and c.mesh.model == 2
  assert tuple(c.model.conv_widths) == (96, 256, 384, 384, 256)
  assert tuple(c.model.fc_widths) == (4096, 4096) and c.model.num_classes == 1000
  assert c.model.activation == 'relu' and c.model.pooling == 'overlapping'
  assert c.model.lrn == 'paper' and not c.model.lrn_across_towers and c.model.lrn_gain == 1.0
  assert layers.LRN_FORMULAS['paper'] == (2.0, 5, 1e-4, 0.75, False)   # k, n, alpha, beta
  # Section 4.2: dropout 0.5, outputs x0.5 at test time.
  assert c.model.dropout_rate == 0.5 and c.model.dropout_scaling == 'test'
  assert c.model.dtype == 'float32'
  # Sections 2 and 4.1: data.
  assert c.input.resize_size == 256 and c.model.input_size == 224
  assert c.input.mean == 'image' and c.input.scale == 1.0
  assert c.input.random_crop == 'paper' and c.input.flip
  assert c.input.pca_lighting == 0.1
  # PCA of the training pixels, added as alpha * eigval (not cuda-convnet2's sqrt), all images.
  assert c.input.pca_source == 'dataset' and c.input.pca_reading == 'unit_pixel_eigenvalues'
  assert c.input.pca_max_images == -1
  # Validation during training on the centre crop; the 10-crop test of section 4.1 is
  # `python -m alexnet_jax.evaluate --crops=1,10` on the finished run.
  assert c.input.eval_crops == 1
  assert c.dataset.name == 'imagenet2012'
  config_lib.validate(c)


def test_one_tower_config_is_torchvisions_architecture_with_the_papers_recipe():
  c = one_tower.get_config()
  assert c.model.towers == 1 and c.model.lrn == 'none'
  assert tuple(c.model.conv_widths) == (64, 192, 384, 256, 256)
  assert c.optimizer.learning_rate == 0.01 and c.batch_size == 128
  config_lib.validate(c)


def test_default_config_is_valid_and_offline():
  c = default.get_config()
  assert c.dataset.name == 'alexnet_shapes'
  config_lib.validate(c, mesh_shape={'data': 8, 'model': 1})


@pytest.mark.parametrize('field, value', [
    ('model.lrn', 'lcn'), ('model.dropout_scaling', 'scaled'), ('input.resize_method', 'cubic'),
    ('input.eval_crops', 5), ('schedule.name', 'cosine'), ('model.towers', True),
    ('input.resize_mode', 'stretch'),
])
def test_every_choice_field_is_checked_against_the_one_table(field, value):
  c = paper.get_config()
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(ValueError, match=f'{field}={value!r} is invalid.*--config.{field}='):
    config_lib.validate(c)
  assert field in config_lib.ALLOWED


def test_squash_is_refused_with_the_centre_square_preresized_copy():
  c = paper.get_config()
  c.input.resize_mode = 'squash'
  config_lib.validate(c)                     # trains on the original images
  c.input.use_preresized = True
  with pytest.raises(ValueError, match="input.resize_mode='squash' is invalid.*centre squares"):
    config_lib.validate(c)


def test_a_run_config_from_before_a_field_existed_still_loads(tmp_path):
  """evaluate reads the run's config.json: fields added since take base()'s defaults."""
  import json

  from alexnet_jax.run import workdir as workdir_lib
  c = default.get_config()
  saved = json.loads(c.to_json_best_effort())
  for field in ('pca_source', 'pca_reading', 'pca_max_images'):
    del saved['input'][field]
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loaded = workdir_lib.load_config(str(tmp_path))
  assert loaded.input.pca_source == 'dataset' and loaded.input.pca_max_images == -1
  assert tuple(loaded.model.conv_widths) == tuple(c.model.conv_widths)
  assert loaded.dataset.name == 'alexnet_shapes' and loaded.dataset.data_dir is None
  config_lib.validate(loaded, mesh_shape={'data': 8, 'model': 1})
