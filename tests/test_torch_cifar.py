"""benchmarks/torch_cifar: the PyTorch twin the time-to-accuracy benchmark races must be the
same net, init scale, update and schedule as the JAX run, or the race compares two recipes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.common import config_lib
from alexnet_jax.common.model_spec import ModelSpec
from alexnet_jax.model import cifar, optimizer
from configs import cifar10_conv_local, cifar10_fast

torch = pytest.importorskip('torch')
from benchmarks import torch_cifar  # noqa: E402


def _spec(arch, **model):
  c = cifar10_conv_local.cifar10(arch, None)
  c.model.input_size = 24
  c.model.update(model)
  return ModelSpec.from_config(c.model)


@pytest.mark.parametrize('arch,model', [
    ('cifar10_80sec', {'lrn': 'none'}),
    ('cifar10_18pct', {}),
    ('cifar10_conv_local', {}),
    ('cifar10_80sec', {'lrn': 'none', 'activation': 'tanh', 'pooling': 'non_overlapping'}),
])
def test_twin_computes_the_jax_net(arch, model):
  """JAX parameters copied into the twin give the JAX logits (pooling edges, norms, the
  local layers' unshared kernels and the fc flatten order all included)."""
  spec = _spec(arch, **model)
  params = jax.tree.map(lambda p: p * 40.0 if p.ndim > 1 else p + 0.1,
                        cifar.init_params(spec, seed=3))   # big enough to reach the norms
  images = np.random.default_rng(0).normal(0, 60, (4, 24, 24, 3)).astype(np.float32)
  want = np.asarray(cifar.apply(spec, params, jnp.asarray(images)))
  net = torch_cifar.build(spec)
  torch_cifar.load_jax_params(net, params)
  with torch.no_grad():
    got = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  scale = np.abs(want).max()
  assert scale > 1e-3
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * scale)


@pytest.mark.parametrize('init', ['paper', 'he'])
def test_twin_init_scale(init):
  """Each layer's weights have the JAX init's std (initW or He's), biases zero."""
  spec = _spec('cifar10_conv_local', init=init)
  torch.manual_seed(0)
  net = torch_cifar.build(spec)
  jax_params = cifar.init_params(spec, seed=0)
  for m in net.modules():
    name = getattr(m, 'layer_name', None)
    if not name:
      continue
    want = float(np.std(np.asarray(jax_params[name]['kernel'])))
    got = float(m.weight.detach().std())
    assert got == pytest.approx(want, rel=0.1), name
    assert float(m.bias.detach().abs().max()) == 0.0


def test_twin_update_is_paper_sgd():
  """Two steps of the twin's SGD from the same gradients equal optimizer.paper_sgd's, with
  per-layer decay, no decay on biases and biases at twice the rate."""
  c = cifar10_fast.get_config()
  c.optimizer.learning_rate = 0.1
  spec = ModelSpec.from_config(c.model)
  params = cifar.init_params(spec, seed=1)
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(2)]
  o = c.optimizer
  tx = optimizer.paper_sgd(o.learning_rate, o.momentum, o.weight_decay, o.decay_biases,
                           layer_weight_decay=dict(o.layer_weight_decay),
                           bias_lr_multiplier=o.bias_lr_multiplier)
  state, want = tx.init(params), params
  for g in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, want)
    want = jax.tree.map(lambda p, u: p + u, want, updates)

  net = torch_cifar.build(spec)
  torch_cifar.load_jax_params(net, params)
  sgd = torch_cifar.PaperSGD(net, c)
  for g in grads:
    for m in net.modules():
      name = getattr(m, 'layer_name', None)
      if name:
        m.weight.grad = torch.from_numpy(_torch_layout(m, g[name]['kernel']))
        m.bias.grad = torch.from_numpy(np.ascontiguousarray(g[name]['bias']))
    sgd.step()
  for m in net.modules():
    name = getattr(m, 'layer_name', None)
    if name:
      np.testing.assert_allclose(m.weight.detach().numpy(),
                                 _torch_layout(m, want[name]['kernel']), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(m.bias.detach().numpy(), np.asarray(want[name]['bias']),
                                 rtol=1e-5, atol=1e-6)


def _torch_layout(m, kernel):
  k = np.asarray(kernel)
  if isinstance(m, torch.nn.Conv2d):
    k = k.transpose(3, 2, 0, 1)
  elif isinstance(m, torch.nn.Linear):
    k = k.T
  return np.ascontiguousarray(k)


@pytest.mark.parametrize('schedule', [
    dict(name='step', step_epochs=(2.0, 3.5)),
    dict(name='linear'),
    dict(name='linear', warmup_epochs=0.5),
])
def test_twin_schedule_is_the_controller(schedule):
  c = config_lib.base()
  c.optimizer.learning_rate = 0.05
  c.num_epochs = 5.0
  c.schedule.update(schedule)
  steps_per_epoch = 10
  controller = optimizer.LearningRateController.from_config(c, steps_per_epoch)
  total = optimizer.total_steps(c, steps_per_epoch)
  assert total == 50
  for step in range(total + 1):
    assert torch_cifar.schedule_rate(c, step, steps_per_epoch, total) == pytest.approx(
        controller.lr_for_step(step), abs=1e-12), step
  if schedule['name'] == 'linear':
    assert controller.lr_for_step(total) == 0.0
    assert math.isclose(controller.lr_for_step(25), 0.025)


def test_crop_flip_windows():
  """Every output is a size x size window of its own image, flipped or not, and both
  flips and several offsets occur."""
  x = torch.arange(6 * 8 * 8, dtype=torch.float32).reshape(6, 8, 8, 1).repeat(1, 1, 1, 3)
  g = torch.Generator().manual_seed(0)
  out = torch_cifar._crop_flip(x.repeat(20, 1, 1, 1), 5, g)
  seen_flip = seen_plain = 0
  offsets = set()
  for i, o in enumerate(out):
    img = x[i % 6]
    hit = None
    for oy in range(4):
      for ox in range(4):
        w = img[oy:oy + 5, ox:ox + 5]
        if torch.equal(o, w):
          hit = (oy, ox, False)
        elif torch.equal(o, w.flip(1)):
          hit = (oy, ox, True)
    assert hit is not None, i
    offsets.add(hit[:2])
    seen_flip += hit[2]
    seen_plain += not hit[2]
  assert seen_flip and seen_plain and len(offsets) > 4


def test_time_to_accuracy_reads_the_training_loops_eval_line():
  """The benchmark follows the JAX run through its log: the regex must match the line
  run/train.py writes (a changed format would silently read no validation pass)."""
  import re

  from benchmarks import time_to_accuracy as tta
  source = open('alexnet_jax/run/train.py').read()
  fmt = re.search(r"'(eval at step %d: top1 %\.4f[^']*)'", source).group(1)
  line = fmt.replace('%d', '1050', 1).replace('%.4f', '0.7412', 1)
  m = tta._EVAL_LINE.search(line)
  assert m and (int(m.group(1)), float(m.group(2))) == (1050, 0.7412)
  assert re.search(r"%d steps/epoch", source) and tta._STEPS_LINE.search('350 steps/epoch')


def test_time_to_accuracy_table_and_ratio():
  from benchmarks import time_to_accuracy as tta
  side = lambda t, e: {'seconds_to_target': t, 'epochs_to_target': e, 'best_val_error': 0.25,
                       'passes': [{}] * 3, 'exit_status': 0}
  report = {'target_error': 0.26, 'ratio_torch_over_jax': 1.5,
            'sides': {'jax': side(600.0, 5.0), 'torch': side(900.0, 5.0)}}
  table = tta.format_table(report)
  assert '| jax | 10.00 min | 5.0 |' in table and '| torch | 15.00 min | 5.0 |' in table
  assert 'torch/jax of the times to target: 1.50' in table
  report['sides']['torch'] = side(None, None)
  report['ratio_torch_over_jax'] = None
  assert '| torch | not reached | - |' in tta.format_table(report)


def test_time_to_accuracy_takes_the_exact_error_from_metrics_jsonl(tmp_path):
  """The log line rounds top-1 to 4 decimals (1 - 0.7400 = 0.26 for 1,332 errors in 5,123):
  the benchmark reads the run's metrics.jsonl for the exact value, the log line only where
  that row is missing."""
  import json

  from benchmarks import time_to_accuracy as tta
  rows = [{'step': 350, 'split': 'train', 'top1': 0.5},
          {'step': 350, 'split': 'eval', 'top1': 1 - 1332 / 5123, 'count': 5123.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  exact = tta.exact_val_error(str(tmp_path), 350, 0.26)
  assert exact == pytest.approx(1332 / 5123, abs=1e-12) and exact > 0.26
  assert tta.exact_val_error(str(tmp_path), 700, 0.3) == 0.3
  assert tta.exact_val_error(str(tmp_path / 'missing'), 350, 0.25) == 0.25
