r"""The CIFAR-10 nets and their training recipe in PyTorch: the other half of
`benchmarks.time_to_accuracy`.

  python -m benchmarks.torch_cifar --config=configs/cifar10_fast.py \
      --config.dataset.folder=../shared/data/cifar10/train [--target_error=0.26]

Trains the config's net (model.arch cifar10_80sec, cifar10_18pct or cifar10_conv_local) the
way `alexnet_jax.main` does, so that the two frameworks can be timed on the same work:

- the same images in the same order: the batches come from this project's own tf.data
  pipeline (`pipeline.create_train_iterator` with the config's seed), decoded from the same
  files, so data loading costs both sides the same and the epochs are permuted identically;
- the same device-side preprocessing: minus the training set's mean image (computed here
  by the same `statistics` pass the JAX run makes), a random crop of model.input_size with a
  random horizontal flip in training, the centre crop at validation (with
  input.eval_crops=10 on whole images, as configs/cifar10_fast.py, the softmax of the image
  and of its mirror averaged: what the JAX evaluation's ten views come to there);
- the same net, layer for layer from `common/cifar_spec.ops` (cuda-convnet's pooling with
  ceil-rounded outputs and edge-clipped windows, the response norms' formulas), with
  cuda-convnet's init N(0, initW^2) and zero biases - drawn from PyTorch's generator, so
  the same distribution, not the same numbers;
- the same update, the paper's SGD written out: v <- momentum v - lr_layer (g + wd_layer w),
  w <- w + v, with the config's per-layer weight decay, the bias rate multiplier, no decay
  on biases, and the step schedule's drops of the rate.

One JSON line per validation pass goes to stdout ({"epoch", "step", "val_error",
"train_error", "elapsed_s"}, elapsed from the start of the process), the same points at
which `alexnet_jax.main` evaluates. Needs torch (the `torch` extra); nothing in the
library imports this.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

_START = time.time()

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a command: tests import this module beside other commands."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'A CIFAR-10 config file.')
  flags.DEFINE_float('target_error', None, 'Stop at the first validation pass at or below '
                     'this error (default: train the whole schedule).')
  flags.DEFINE_integer('threads', None, 'torch.set_num_threads (default: the cores this '
                       'process may use).')


def _torch():
  from alexnet_jax.common import lazy_tf
  return lazy_tf.import_torch()


def build(spec):
  """The net of `spec` (a ModelSpec of a CIFAR arch) as a torch.nn.Module taking NCHW."""
  torch = _torch()
  nn = torch.nn
  from alexnet_jax.common import cifar_spec
  f = torch.nn.functional

  class WithinMapNorm(nn.Module):
    """cuda-convnet's rnorm: x (1 + scale/size^2 sum_{size x size} x^2)^-power."""

    def __init__(self, size, scale, power):
      super().__init__()
      self.size, self.scale, self.power = size, scale, power

    def forward(self, x):
      lo = self.size // 2
      hi = self.size - 1 - lo
      sq = f.pad(x * x, (lo, hi, lo, hi))
      sums = f.avg_pool2d(sq, self.size, 1) * (self.size * self.size)
      return x * (1.0 + self.scale / (self.size * self.size) * sums) ** -self.power

  class Local(nn.Module):
    """A locally connected layer: unshared (Ho, Wo) filter banks, kernel (Ho, Wo, kh, kw,
    Cin, Cout) as the JAX net keeps it."""

    def __init__(self, shape, pad, std):
      super().__init__()
      ho, wo, kh, kw, cin, cout = shape
      self.pad, self.k = pad, kh
      self.weight = nn.Parameter(torch.randn(shape) * std)
      self.bias = nn.Parameter(torch.zeros(ho, wo, cout))

    def forward(self, x):
      ho, wo, kh, kw, cin, cout = self.weight.shape
      patches = f.unfold(x, kh, padding=self.pad)          # (N, Cin*kh*kw, Ho*Wo)
      k = self.weight.permute(0, 1, 4, 2, 3, 5).reshape(ho * wo, cin * kh * kw, cout)
      y = torch.einsum('nkp,pkc->npc', patches, k).reshape(x.shape[0], ho, wo, cout)
      return (y + self.bias).permute(0, 3, 1, 2)

  act = nn.ReLU if spec.activation == 'relu' else nn.Tanh
  shapes = cifar_spec.shapes(spec)
  layers, c, s = [], 3, spec.input_size
  flat = False
  for op in cifar_spec.ops(spec):
    if op.name:   # the JAX net's init (model/cifar.init_params): initW, or He's
      kernel = shapes[op.name]['kernel']
      fan_in = math.prod(kernel[2 if op.kind == 'local' else 0:-1])
      std = op.std if spec.init == 'paper' else math.sqrt((2.0 if op.act else 1.0) / fan_in)
    if op.kind == 'conv':
      m = nn.Conv2d(c, op.width, op.size, padding=op.pad)
      layers.append(m)
      c, s = op.width, s + 2 * op.pad - op.size + 1
    elif op.kind == 'local':
      m = Local(kernel, op.pad, std)
      layers.append(m)
      c = op.width
    elif op.kind == 'fc':
      if not flat:
        layers.append(_NHWCFlatten())
        flat = True
      m = nn.Linear(shapes[op.name]['kernel'][0], op.width)
      layers.append(m)
    elif op.kind == 'max':
      layers.append(nn.MaxPool2d(op.size, op.stride, ceil_mode=True))
    elif op.kind == 'avg':
      layers.append(nn.AvgPool2d(op.size, op.stride, ceil_mode=True, count_include_pad=False))
    elif op.kind == 'cmrnorm':
      layers.append(nn.LocalResponseNorm(op.size, alpha=op.scale, beta=op.power, k=1.0))
    else:
      layers.append(WithinMapNorm(op.size, op.scale, op.power))
    if op.name:
      m.layer_name = op.name
      if op.kind != 'local':
        with torch.no_grad():
          m.weight.normal_(0.0, std)
          m.bias.zero_()
      if op.act:
        layers.append(act())
      if op.kind == 'fc' and op.act and spec.dropout_rate > 0:
        layers.append(nn.Dropout(spec.dropout_rate))
  return nn.Sequential(*layers)


class _NHWCFlatten:
  """Flattens NCHW in (H, W, C) order, as the JAX net's reshape of NHWC does, so that fc
  weights carry over between the two unchanged."""

  def __new__(cls):
    torch = _torch()

    class Flatten(torch.nn.Module):
      def forward(self, x):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    return Flatten()


def load_jax_params(net, params: dict) -> None:
  """Copies the JAX net's {layer: {'kernel', 'bias'}} into `net` (tests compare outputs)."""
  torch = _torch()
  import numpy as np
  with torch.no_grad():
    for m in net.modules():
      name = getattr(m, 'layer_name', None)
      if not name:
        continue
      k, b = (np.asarray(params[name][p]) for p in ('kernel', 'bias'))
      if isinstance(m, torch.nn.Conv2d):
        k = k.transpose(3, 2, 0, 1)                          # HWIO -> OIHW
      elif isinstance(m, torch.nn.Linear):
        k = k.T
      m.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
      m.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))


class PaperSGD:
  """v <- momentum v - lr_p (g + wd_p w); w <- w + v (the paper's update, as
  model/optimizer.paper_sgd): wd_p the layer's decay (0 for biases unless the config decays
  them), lr_p the rate (times optimizer.bias_lr_multiplier for biases)."""

  def __init__(self, net, config):
    torch = _torch()
    o = config.optimizer
    layer_decay = dict(o.layer_weight_decay or {})
    self.momentum, self.rate = float(o.momentum), float(o.learning_rate)
    self.groups = []   # (params, lr multiplier, decay)
    for m in net.modules():
      name = getattr(m, 'layer_name', None)
      if not name:
        continue
      wd = float(layer_decay.get(name, o.weight_decay))
      self.groups.append(([m.weight], 1.0, wd))
      self.groups.append(([m.bias], float(o.bias_lr_multiplier),
                          wd if o.decay_biases else 0.0))
    self.velocity = {id(p): torch.zeros_like(p) for ps, _, _ in self.groups for p in ps}

  def step(self):
    torch = _torch()
    with torch.no_grad():
      for ps, mult, wd in self.groups:
        for p in ps:
          g = p.grad if not wd else p.grad.add(p, alpha=wd)
          v = self.velocity[id(p)]
          v.mul_(self.momentum).add_(g, alpha=-self.rate * mult)
          p.add_(v)
          p.grad = None


def _crop_flip(x, size: int, generator):
  """Per-image random size x size windows of NHWC float x, each flipped with p=1/2."""
  torch = _torch()
  n, h, w, _ = x.shape
  oy = torch.randint(0, h - size + 1, (n,), generator=generator)
  ox = torch.randint(0, w - size + 1, (n,), generator=generator)
  r = torch.arange(size)
  rows = (oy[:, None] + r)[:, :, None]
  flip = torch.rand(n, generator=generator) < 0.5
  cols = torch.where(flip[:, None], ox[:, None] + size - 1 - r, ox[:, None] + r)[:, None, :]
  return x[torch.arange(n)[:, None, None], rows, cols]


def schedule_rate(config, step: int, steps_per_epoch: int, total: int) -> float:
  """The rate of `step` under the config's 'step' or 'linear' schedule and warm-up, as
  model/optimizer.LearningRateController computes it (tests compare the two)."""
  s, base = config.schedule, float(config.optimizer.learning_rate)
  if s.name == 'step':
    lr = base * float(s.factor) ** sum(step >= int(round(e * steps_per_epoch))
                                       for e in s.step_epochs)
  else:
    lr = base * max(0.0, 1.0 - step / max(1, total))
  warmup = int(round(float(s.warmup_epochs) * steps_per_epoch))
  if step < warmup:
    lr *= (step + 1) / warmup
  return lr


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  if config is None:
    raise app.UsageError('--config is required (a CIFAR-10 config, e.g. '
                         'configs/cifar10_fast.py)')
  torch = _torch()
  import signal

  import numpy as np

  from alexnet_jax.common.model_spec import ModelSpec
  # time_to_accuracy stops a side with SIGTERM once it has its time: end quietly, as main.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  from alexnet_jax.data import pipeline, sources, statistics

  spec = ModelSpec.from_config(config.model)
  if spec.arch == 'alexnet':
    raise app.UsageError('model.arch=alexnet: this twin trains the CIFAR-10 nets only '
                         '(benchmarks.torch_alexnet is the AlexNet twin)')
  if config.schedule.name not in ('step', 'linear'):
    raise app.UsageError(f'schedule.name={config.schedule.name!r}: the twin implements the '
                         "'step' and 'linear' schedules only")
  torch.set_num_threads(FLAGS.threads or len(os.sched_getaffinity(0)))
  torch.manual_seed(config.seed)
  generator = torch.Generator().manual_seed(config.seed + 1)
  net = build(spec).to(memory_format=torch.channels_last)
  sgd = PaperSGD(net, config)
  mean = torch.from_numpy(np.asarray(statistics.load_or_compute_mean_image(config),
                                     np.float32))
  size = spec.input_size
  std = torch.tensor([float(v) for v in config.input.std_rgb]) / float(config.input.scale)
  n_train = sources.num_examples(config, config.dataset.train_split)
  steps_per_epoch = n_train // config.batch_size
  total = (config.num_train_steps if config.num_train_steps > 0
           else int(round(config.num_epochs * steps_per_epoch)))
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch)
  batches = pipeline.create_train_iterator(config, local_batch_size=config.batch_size)
  centre = (mean.shape[0] - size) // 2
  crop_mean = mean[centre:centre + size, centre:centre + size]
  ten_views = int(config.input.eval_crops) == 10
  if ten_views and mean.shape[0] != size:
    raise app.UsageError('input.eval_crops=10: the twin evaluates ten crops of whole images '
                         f'only (the image and its mirror); this config crops {size} of '
                         f'{mean.shape[0]}. Use --config.input.eval_crops=1')

  def evaluate():
    net.eval()
    wrong = count = 0
    with torch.no_grad():
      for b in pipeline.create_eval_iterator(config, config.dataset.eval_split,
                                             local_batch_size=config.eval_batch_size):
        x = torch.from_numpy(b['image'])[:, centre:centre + size, centre:centre + size]
        x = ((x.float() - crop_mean) / std).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)
        keep = torch.from_numpy(np.asarray(b.get('mask', np.ones(len(x), bool)), bool))
        if ten_views:    # the image and its mirror, softmax averaged (steps.eval_logits)
          pred = (net(x).softmax(1) + net(x.flip(3)).softmax(1)).argmax(1)
        else:
          pred = net(x).argmax(1)
        right = pred == torch.from_numpy(np.asarray(b['label'], np.int64))
        wrong += int((~right & keep).sum())
        count += int(keep.sum())
    net.train()
    return wrong / count, count

  loss_fn = torch.nn.CrossEntropyLoss()
  train_wrong = train_seen = 0
  net.train()
  for step in range(total):
    batch = next(batches)
    sgd.rate = schedule_rate(config, step, steps_per_epoch, total)
    x = (torch.from_numpy(batch['image']).float() - mean) / std
    x = _crop_flip(x, size, generator).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(np.asarray(batch['label'], np.int64))
    logits = net(x)
    loss = loss_fn(logits, y)
    if not math.isfinite(float(loss)):
      print(json.dumps({'step': step + 1, 'diverged': True}), flush=True)
      return 3
    loss.backward()
    sgd.step()
    train_wrong += int((logits.argmax(1) != y).sum())
    train_seen += len(y)
    if (step + 1) % eval_every == 0 or step + 1 == total:
      val_error, count = evaluate()
      line = {'epoch': (step + 1) / steps_per_epoch, 'step': step + 1,
              'val_error': val_error, 'val_count': count,
              'train_error': train_wrong / max(train_seen, 1),
              'elapsed_s': time.time() - _START}
      train_wrong = train_seen = 0
      print(json.dumps(line), flush=True)
      if FLAGS.target_error is not None and val_error <= FLAGS.target_error:
        break
  return 0


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main))
