"""The same AlexNet in PyTorch, for speed comparisons only (`python -m benchmarks.step`).

Imported only when torch is installed (the `bench` extra); nothing in the library
needs torch. Built from a `nets.ModelSpec`, so the paper and one-tower variants match
ours layer for layer: Conv2d(groups=towers) for the tower-local conv2/4/5, dense conv3 and
FCs, LocalResponseNorm with PyTorch's alpha/size convention converted to the paper's
formula (alpha * size, since PyTorch divides alpha by size), MaxPool2d, dropout after the
ReLU of fc6/fc7, and SGD(momentum, weight_decay) - the same update as optim.paper_sgd for
a constant learning rate. One difference in cost-free detail: PyTorch's LRN window spans
all channels (Caffe's choice), ours stays inside each tower by default.
"""

from __future__ import annotations

from alexnet_jax.common import lazy_tf
from alexnet_jax.model import layers, nets

torch = lazy_tf.import_torch()   # with Triton hidden if TensorFlow is loaded (see there)
nn = torch.nn


def build(spec: nets.ModelSpec) -> nn.Module:
  t = spec.towers
  c1, c2, c3, c4, c5 = spec.conv_widths
  f6, f7 = spec.fc_widths
  act = nn.ReLU if spec.activation == 'relu' else nn.Tanh
  window, stride = spec.pool

  def norm():
    if spec.lrn == 'none':
      return []
    k, n, alpha, beta, per_term = layers.LRN_FORMULAS[spec.lrn]
    return [nn.LocalResponseNorm(n, alpha=alpha if per_term else alpha * n, beta=beta, k=k)]

  pool = lambda: nn.MaxPool2d(window, stride)
  s5 = spec.spatial_sizes()['pool5']
  return nn.Sequential(
      nn.Conv2d(3, c1, 11, 4, spec.conv1_pad), act(), *norm(), pool(),
      nn.Conv2d(c1, c2, 5, 1, 2, groups=t), act(), *norm(), pool(),
      nn.Conv2d(c2, c3, 3, 1, 1), act(),
      nn.Conv2d(c3, c4, 3, 1, 1, groups=t), act(),
      nn.Conv2d(c4, c5, 3, 1, 1, groups=t), act(), pool(),
      nn.Flatten(),
      nn.Linear(s5 * s5 * c5, f6), act(), nn.Dropout(spec.dropout_rate),
      nn.Linear(f6, f7), act(), nn.Dropout(spec.dropout_rate),
      nn.Linear(f7, spec.num_classes))


class Twin:
  """A PyTorch model + SGD, with `train_step()` and `forward()` on a fixed random batch."""

  def __init__(self, spec: nets.ModelSpec, batch_size: int, *, dtype: str = 'float32',
               channels_last: bool = True, lr: float = 0.01, momentum: float = 0.9,
               weight_decay: float = 5e-4, seed: int = 0, device: str = 'cpu'):
    torch.manual_seed(seed)
    self.device = device
    if device.startswith('cuda'):
      # cuDNN picks the fastest algorithm per shape (the batch is fixed), as a tuned
      # PyTorch training script does; XLA autotunes its GPU convolutions too.
      torch.backends.cudnn.benchmark = True
    self.model = build(spec).to(device)
    x = torch.randn(batch_size, 3, spec.input_size, spec.input_size, device=device)
    if channels_last:
      self.model = self.model.to(memory_format=torch.channels_last)
      x = x.contiguous(memory_format=torch.channels_last)
    self.x = x
    self.y = torch.randint(0, spec.num_classes, (batch_size,), device=device)
    # Like ours: float32 parameters, compute in bfloat16 when asked (autocast).
    self.autocast = dtype == 'bfloat16'
    self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)
    self.loss = nn.CrossEntropyLoss()

  def _ctx(self):
    return torch.autocast(self.device.split(':')[0], dtype=torch.bfloat16,
                          enabled=self.autocast)

  def train_step(self) -> float:
    """One SGD step; returns the loss (a host sync, so the step is finished)."""
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    with self._ctx():
      loss = self.loss(self.model(self.x).float(), self.y)
    loss.backward()
    self.opt.step()
    return loss.item()

  def forward(self) -> float:
    self.model.eval()
    with torch.no_grad(), self._ctx():
      return float(self.model(self.x)[0, 0])
