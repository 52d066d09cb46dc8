"""configs/ablation_base.py, the hard variant of `alexnet_shapes` and the base check."""

import numpy as np
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.data.datasets import shapes
from alexnet_jax.model import nets
from configs import ablation_base
from experiments import ablation_base_check as check


def test_base_config_has_every_ablated_component_active():
  c = ablation_base.get_config()
  config_lib.validate(c)
  assert c.dataset.name == 'alexnet_shapes' and c.dataset.shapes_variant == 'hard'
  assert c.model.lrn == 'paper' and c.model.pooling == 'overlapping'
  assert c.model.towers == 2 and c.model.activation == 'relu'
  assert c.model.dropout_rate == 0.5 and c.model.dropout_scaling == 'test'
  assert c.input.pca_lighting == 0.1
  # 0-255 minus the mean x 1/32, and the LRN sees activations x 16: the scale of x 0.5.
  assert c.input.scale == 1 / 32 and c.model.lrn_gain == 16.0
  assert c.schedule.warmup_epochs > 0 and c.schedule.name == 'constant'


def test_hard_variant_is_deterministic_and_differs_from_easy():
  hard = shapes.ShapesConfig(name='h', image_size=64, variant='hard')
  easy = shapes.ShapesConfig(name='e', image_size=64)
  for index in (0, 7, 13):
    a, label = shapes.render_example(hard, 'train', index)
    b, label_b = shapes.render_example(hard, 'train', index)
    np.testing.assert_array_equal(a, b)
    c, label_c = shapes.render_example(easy, 'train', index)
    assert label == label_b == label_c == index % 10
    assert a.shape == c.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - c).mean() > 10
  assert shapes.config_name(64, 10, 5, 10, 0) == 's64_tr10_va5_c10_seed0'   # easy: unchanged
  # The hard variant's cache tag names its rendering revision (a stale build is never read).
  assert shapes.config_name(64, 10, 5, 10, 0, 'hard') == 's64_tr10_va5_c10_seed0_hard3'
  assert shapes.builder('/nonexistent', variant='hard').builder_config.name.endswith('_hard3')
  assert shapes.builder('/nonexistent').builder_config.name == 's64'
  with pytest.raises(ValueError, match='variant'):
    shapes.ShapesConfig(name='x', variant='medium')


def test_easy_variant_is_unchanged():
  """The easy examples are bit-identical to those before the hard variant existed."""
  import hashlib
  c = shapes.ShapesConfig(name='x', image_size=64)
  h = hashlib.sha256()
  for i in range(30):
    h.update(shapes.render_example(c, 'train', i)[0].tobytes())
  assert h.hexdigest() == '2378c167db9cbd4007f7842fe2de0cc9caf2b77faffab3ae2058a2807adeedd5'


def _tiny_spec(**kw):
  c = ablation_base.get_config().model
  c.conv_widths, c.fc_widths = (8, 16, 16, 16, 16), (32, 32)
  for k, v in kw.items():
    c[k] = v
  return nets.ModelSpec.from_config(c)


@pytest.mark.slow   # ~40 s: compiles three small forward passes
def test_check_functions_on_a_tiny_model():
  spec = _tiny_spec(lrn_gain=1.0)
  params = nets.init_params(spec, seed=0)
  rng = np.random.default_rng(0)
  raw = rng.uniform(-128, 128, size=(4, 64, 64, 3)).astype(np.float32)
  q = check.lrn_multiplier_quantiles(spec, params, raw)
  assert set(q) == {'conv1', 'conv2'}
  assert q['conv1']['max'] <= 2 ** -0.75 + 1e-6
  assert q['conv1']['min'] < 0.5              # raw-scale inputs: the LRN varies
  small = check.lrn_multiplier_quantiles(spec, params, raw / 128)
  assert small['conv1']['min'] > 0.59         # unit-scale inputs: a constant 2^-0.75
  # The base's gain brings the LRN back to its range at the base's input scale (x 1/32).
  based = check.lrn_multiplier_quantiles(_tiny_spec(), params, raw / 32)
  assert based['conv1']['min'] < 0.5
  drop = check.dropout_fractions(spec, params, raw)
  assert 0.3 < drop['fc6'] < 0.7 and 0.3 < drop['fc7'] < 0.7
  assert check.dropout_fractions(_tiny_spec(dropout_rate=0.0), params, raw) == {
      'fc6': 0.0, 'fc7': 0.0}
  light = check.lighting_vs_input_std(ablation_base.get_config(), raw)
  # 0.1 * eigval * 255 along unit eigenvectors: per-channel std ~ 3.2 on the 0-255 scale, x1/32.
  assert light['lighting_std'] == pytest.approx(3.2 / 32, rel=0.05)
  assert light['ratio'] == pytest.approx(light['lighting_std'] / raw.std())
