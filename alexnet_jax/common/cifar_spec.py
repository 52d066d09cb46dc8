"""The CIFAR-10 nets of cuda-convnet as data: their layer tables, the rules a config must keep
for them, their shapes and multiply-adds. No jax here, so `ModelSpec` (common/model_spec)
checks a CIFAR config before anything heavy is imported; `model/cifar` computes with it.
The tables are cuda-convnet's layers-*.cfg; see model/cifar.py for the nets and sources.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def pooled_size(size: int, window: int, stride: int) -> int:
  """Outputs of a cuda-convnet pooling layer: ceil((size - window) / stride) + 1, so the
  last window may hang over the far edge (24 -> 12 for 3/2, where 'VALID' gives 11)."""
  return -(-(size - window) // stride) + 1


ARCHS = ('cifar10_conv_local', 'cifar10_18pct', 'cifar10_80sec')


@dataclasses.dataclass(frozen=True)
class Op:
  """One step of a net: a weight layer ('conv', 'local', 'fc'), a pooling ('max', 'avg')
  or a response norm ('cmrnorm', 'rnorm'). Weight layers have a ReLU after them unless
  `act` is False (the output layer)."""

  kind: str
  name: str = ''
  width: int = 0          # filters / outputs
  size: int = 0           # kernel or norm window
  pad: int = 0
  std: float = 0.0        # cuda-convnet's initW
  act: bool = True
  scale: float = 0.0      # norms: cuda-convnet's `scale` before its division by the window
  power: float = 0.75
  stride: int = 1         # poolings: 2 (3x3 or 2x2 windows)


_CMRNORM = Op('cmrnorm', size=5, scale=1e-3)        # conv-local-11pct's rnorm1/2 (crossMap)
_RNORM = Op('rnorm', size=3, scale=5e-5)            # 18pct's rnorm1/2
_MAX, _AVG = Op('max'), Op('avg')

NETS: dict[str, tuple[Op, ...]] = {
    'cifar10_conv_local': (
        Op('conv', 'conv1', 64, 5, 2, 1e-4), _CMRNORM, _MAX,
        Op('conv', 'conv2', 64, 5, 2, 1e-2), _CMRNORM, _MAX,
        Op('local', 'local3', 32, 3, 1, 0.04),
        Op('local', 'local4', 32, 3, 1, 0.04),
        Op('fc', 'fc10', 10, std=0.01, act=False)),
    'cifar10_18pct': (
        Op('conv', 'conv1', 32, 5, 2, 1e-4), _MAX, _RNORM,
        Op('conv', 'conv2', 32, 5, 2, 1e-2), _AVG, _RNORM,
        Op('conv', 'conv3', 64, 5, 2, 1e-2), _AVG,
        Op('fc', 'fc10', 10, std=0.01, act=False)),
    'cifar10_80sec': (
        Op('conv', 'conv1', 32, 5, 2, 1e-4), _MAX,
        Op('conv', 'conv2', 32, 5, 2, 1e-2), _AVG,
        Op('conv', 'conv3', 64, 5, 2, 1e-2), _AVG,
        Op('fc', 'fc64', 64, std=0.1),
        Op('fc', 'fc10', 10, std=0.1, act=False)),
}


def _refuse(field: str, value: Any, allowed: str, arch: str) -> ValueError:
  return ValueError(f'model.{field}={value!r} is invalid for model.arch={arch!r}; allowed: '
                    f'{allowed}. Override it with --config.model.{field}=...')


def ops(spec: Any) -> tuple[Op, ...]:
  """The net's steps with the spec's switches applied: model.lrn='none'/'constant' drops the
  norms (their constant factor 1^-power is 1), model.pooling='non_overlapping' makes every
  pooling 2/2, model.conv_widths / fc_widths (when not empty) replace the widths of the
  conv/local layers and of the hidden fc layers."""
  out, convs, fcs = [], iter(spec.conv_widths), iter(spec.fc_widths)
  for op in NETS[spec.arch]:
    if op.kind in ('cmrnorm', 'rnorm') and spec.lrn != 'cuda_convnet':
      continue
    if op.kind in ('max', 'avg'):
      op = dataclasses.replace(op, size=3 if spec.pooling == 'overlapping' else 2, stride=2)
    if op.kind in ('conv', 'local') and spec.conv_widths:
      op = dataclasses.replace(op, width=next(convs))
    if op.kind == 'fc' and op.act and spec.fc_widths:
      op = dataclasses.replace(op, width=next(fcs))
    if op.kind == 'fc' and not op.act:
      op = dataclasses.replace(op, width=spec.num_classes)
    out.append(op)
  return tuple(out)


def layer_names(spec: Any) -> tuple[str, ...]:
  return tuple(op.name for op in NETS[spec.arch] if op.name)


def validate(spec: Any) -> None:
  """Refuses the AlexNet-only settings for a CIFAR net, naming the field."""
  arch, net = spec.arch, NETS[spec.arch]
  has_norm = any(op.kind in ('cmrnorm', 'rnorm') for op in net)
  lrn_allowed = ('cuda_convnet', 'none', 'constant') if has_norm else ('none', 'constant')
  if spec.lrn not in lrn_allowed:
    raise _refuse('lrn', spec.lrn, ', '.join(map(repr, lrn_allowed)) +
                  (" ('cuda_convnet': the net's own response norm)" if has_norm else
                   ' (this net has no response norm)'), arch)
  if not isinstance(spec.num_classes, int) or spec.num_classes < 1:
    raise _refuse('num_classes', spec.num_classes, 'a positive int', arch)
  if not 0.0 <= spec.dropout_rate < 1.0:
    raise _refuse('dropout_rate', spec.dropout_rate, '0 <= rate < 1', arch)
  if not (isinstance(spec.lrn_gain, int | float) and spec.lrn_gain > 0):
    raise _refuse('lrn_gain', spec.lrn_gain, 'a number > 0 (1: as published)', arch)
  if spec.towers != 1:
    raise _refuse('towers', spec.towers, '1 (the CIFAR nets have one tower)', arch)
  if spec.lrn_across_towers:
    raise _refuse('lrn_across_towers', True, 'False', arch)
  if spec.conv1_padding != -1:
    raise _refuse('conv1_padding', spec.conv1_padding, '-1 (the net sets its padding)', arch)
  if spec.init not in ('paper', 'he'):
    raise _refuse('init', spec.init, "'paper' (cuda-convnet's initW), 'he'", arch)
  if spec.dropout_placement != 'paper':
    raise _refuse('dropout_placement', spec.dropout_placement,
                  "'paper' (after the ReLU of each hidden fc layer)", arch)
  hidden_fc = sum(op.kind == 'fc' and op.act for op in net)
  if spec.dropout_rate and not hidden_fc:
    raise _refuse('dropout_rate', spec.dropout_rate,
                  '0 (this net has no hidden fully connected layer to drop out)', arch)
  convs = sum(op.kind in ('conv', 'local') for op in net)
  for field, count, what in (('conv_widths', convs, 'conv/local'),
                             ('fc_widths', hidden_fc, 'hidden fc')):
    widths = getattr(spec, field)
    if widths and (len(widths) != count or not all(
        isinstance(w, int) and w > 0 for w in widths)):
      raise _refuse(field, widths, f"() (the net's own) or {count} positive ints, one per "
                    f'{what} layer', arch)
  if spec.input_size < 8:
    raise _refuse('input_size', spec.input_size, 'an input of at least 8x8 (24 or 32)', arch)


# --- geometry ---------------------------------------------------------------------------

def shapes(spec: Any) -> dict[str, dict[str, tuple[int, ...]]]:
  """{layer: {'kernel': shape, 'bias': shape}, and 'output': the layer's output per image}."""
  s, c = spec.input_size, 3
  out = {}
  for op in ops(spec):
    if op.kind in ('max', 'avg'):
      s = pooled_size(s, op.size, op.stride)
    elif op.kind == 'conv':
      s = s + 2 * op.pad - op.size + 1
      out[op.name] = {'kernel': (op.size, op.size, c, op.width), 'bias': (op.width,),
                      'output': (s, s, op.width), 'macs': s * s * op.size ** 2 * c * op.width}
      c = op.width
    elif op.kind == 'local':
      s = s + 2 * op.pad - op.size + 1
      out[op.name] = {'kernel': (s, s, op.size, op.size, c, op.width),
                      'bias': (s, s, op.width), 'output': (s, s, op.width),
                      'macs': s * s * op.size ** 2 * c * op.width}
      c = op.width
    elif op.kind == 'fc':
      fan_in = s * s * c if s else c
      out[op.name] = {'kernel': (fan_in, op.width), 'bias': (op.width,),
                      'output': (op.width,), 'macs': fan_in * op.width}
      s, c = 0, op.width
  return out


def macs_per_image(spec: Any) -> dict[str, int]:
  return {name: v['macs'] for name, v in shapes(spec).items()}
