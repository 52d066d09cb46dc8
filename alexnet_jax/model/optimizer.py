"""The paper's SGD update and its learning-rate schedules.

Section 5 writes the update as
    v <- 0.9 v - 0.0005 lr w - lr grad ;  w <- w + v
so the learning rate multiplies the gradient *before* it enters the momentum.
optax.sgd(momentum=...) instead keeps the momentum of raw gradients and scales
the whole sum by the current rate, which differs from the paper after a
learning-rate drop. `paper_sgd` chains decay -> scale(-lr) -> trace, which is
the paper's formula exactly; the rate is an injected hyperparameter so the
host can lower it (plateau schedule) without recompiling the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _paper_chain(learning_rate, momentum, weight_decay, decay_mask, nesterov,
                 layer_decay=(), bias_lr_multiplier=1.0):
  if layer_decay:
    decay = _per_layer_decay(weight_decay, dict(layer_decay), decay_mask)
  else:
    decay = optax.add_decayed_weights(weight_decay, mask=decay_mask)
  # Without per-layer settings the chain (and so the optimizer state) is the one that
  # runs saved before these options existed, so their checkpoints still restore.
  biases = () if bias_lr_multiplier == 1.0 else (_scale_biases(bias_lr_multiplier),)
  return optax.chain(
      decay,
      *biases,
      optax.scale(-learning_rate),
      optax.trace(decay=momentum, nesterov=nesterov),
  )


def _key(entry) -> Any:
  return getattr(entry, 'key', None)


def _per_layer_decay(default, per_layer: dict, mask) -> optax.GradientTransformation:
  """grad + decay * w with the decay of each parameter's layer (its first path key),
  `default` for layers not named; parameters the mask leaves out are not decayed."""

  def update(updates, state, params):
    included = mask(params) if mask is not None else jax.tree.map(lambda _: True, params)

    def one(path, g, p, inc):
      if not inc:
        return g
      decay = per_layer.get(_key(path[0]), default)
      return g + jnp.asarray(decay, g.dtype) * p

    return jax.tree_util.tree_map_with_path(one, updates, params, included), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _scale_biases(factor: float) -> optax.GradientTransformation:
  """Biases' updates times `factor` before the rate: cuda-convnet's epsB = 2 epsW."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, g: g * factor if _key(path[-1]) == 'bias' else g, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def paper_sgd(learning_rate: float, momentum: float = 0.9, weight_decay: float = 5e-4,
              decay_biases: bool = True, nesterov: bool = False, *,
              layer_weight_decay: dict | None = None, bias_lr_multiplier: float = 1.0
              ) -> optax.GradientTransformation:
  """The paper's update; `decay_biases=False` is Caffe's no-decay-on-biases deviation.

  layer_weight_decay {layer: decay} replaces `weight_decay` for the layers it names and
  bias_lr_multiplier scales the biases' rate: cuda-convnet's per-layer `wc` and epsB/epsW,
  which its CIFAR-10 nets use (decay 0 on the convolutions of conv-local-11pct, biases at
  twice the rate). Both act inside the momentum, as the paper's decay does.
  """
  mask = None
  if not decay_biases:
    mask = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], 'key', None) != 'bias', params)
  return optax.inject_hyperparams(
      _paper_chain,
      static_args=('decay_mask', 'nesterov', 'layer_decay', 'bias_lr_multiplier'))(
      learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
      decay_mask=mask, nesterov=nesterov,
      layer_decay=tuple(sorted((layer_weight_decay or {}).items())),
      bias_lr_multiplier=float(bias_lr_multiplier))


def get_learning_rate(opt_state: Any) -> jax.Array:
  return opt_state.hyperparams['learning_rate']


def set_learning_rate(opt_state: Any, value: float) -> Any:
  """Same shape, dtype and sharding as before, so the jitted step does not recompile."""
  old = opt_state.hyperparams['learning_rate']
  new = jax.device_put(np.asarray(value, dtype=old.dtype), old.sharding)
  return opt_state._replace(hyperparams={**opt_state.hyperparams, 'learning_rate': new})


def total_steps(config: Any, steps_per_epoch: int) -> int:
  """The run's length in steps: num_train_steps, or num_epochs of steps_per_epoch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(round(float(config.num_epochs) * steps_per_epoch))


@dataclasses.dataclass
class LearningRateController:
  """Host-side schedule: 'plateau' (the paper), 'step', 'linear' or 'constant', after an
  optional linear warm-up over `warmup_steps` (0 = none, the paper).

  plateau: divide by 1/factor after `patience` evaluations without an
  improvement of validation top-1 larger than `min_delta`, at most
  `max_reductions` times. step: divide at the given steps. Its state is a
  small dict saved with each checkpoint.
  """

  base_lr: float
  name: str = 'plateau'
  factor: float = 0.1
  patience: int = 2
  max_reductions: int = 3
  min_delta: float = 1e-4
  boundaries: tuple[int, ...] = ()
  warmup_steps: int = 0
  total_steps: int = 0
  best: float = -np.inf
  bad_evals: int = 0
  reductions: int = 0

  @classmethod
  def from_config(cls, config: Any, steps_per_epoch: int) -> LearningRateController:
    s = config.schedule
    boundaries = tuple(int(round(e * steps_per_epoch)) for e in s.step_epochs)
    return cls(base_lr=float(config.optimizer.learning_rate), name=s.name,
               factor=float(s.factor), patience=int(s.patience),
               max_reductions=int(s.max_reductions), min_delta=float(s.min_delta),
               boundaries=boundaries,
               warmup_steps=int(round(float(s.warmup_epochs) * steps_per_epoch)),
               total_steps=total_steps(config, steps_per_epoch))

  def lr_for_step(self, step: int) -> float:
    """The rate to use for `step` (the step schedule and the warm-up depend on it)."""
    if self.name == 'step':
      lr = self.base_lr * self.factor ** sum(step >= b for b in self.boundaries)
    elif self.name == 'linear':
      lr = self.base_lr * max(0.0, 1.0 - step / max(1, self.total_steps))
    else:
      lr = self.base_lr * self.factor ** self.reductions
    if step < self.warmup_steps:   # linear from base/warmup_steps to base (not the paper's)
      lr *= (step + 1) / self.warmup_steps
    return lr

  def warming_up(self, step: int) -> bool:
    return 0 < step < self.warmup_steps

  def observe(self, top1: float) -> bool:
    """Feeds one validation top-1; returns True if the rate was just lowered."""
    if self.name != 'plateau':
      return False
    if top1 > self.best + self.min_delta:
      self.best, self.bad_evals = top1, 0
      return False
    self.bad_evals += 1
    if self.bad_evals >= self.patience and self.reductions < self.max_reductions:
      self.reductions += 1
      self.bad_evals = 0
      return True
    return False

  def state_dict(self) -> dict:
    return {'best': None if np.isinf(self.best) else float(self.best),
            'bad_evals': self.bad_evals, 'reductions': self.reductions}

  def load_state_dict(self, d: dict) -> None:
    self.best = -np.inf if d.get('best') is None else float(d['best'])
    self.bad_evals = int(d.get('bad_evals', 0))
    self.reductions = int(d.get('reductions', 0))
