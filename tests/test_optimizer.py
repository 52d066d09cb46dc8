"""The paper's update rule and the learning-rate schedules."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.model import optimizer


def _grad(w):
  return {'kernel': 2.0 * w['kernel'] + 1.0, 'bias': w['bias'] - 3.0}


def _run(tx, w, steps, drop_at, new_lr):
  state = tx.init(w)
  for i in range(steps):
    if i == drop_at:
      state = optimizer.set_learning_rate(state, new_lr)
    updates, state = tx.update(_grad(w), state, w)
    w = optax.apply_updates(w, updates)
  return w


def _paper_formula(w, steps, drop_at, lr, new_lr, wd=5e-4, momentum=0.9, decay_bias=True):
  """Section 5: v <- 0.9 v - 0.0005 lr w - lr grad ; w <- w + v (NumPy, float64)."""
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  for i in range(steps):
    if i == drop_at:
      lr = new_lr
    g = {k: np.asarray(x) for k, x in _grad(w).items()}
    for k in w:
      decay = wd if (k == 'kernel' or decay_bias) else 0.0
      v[k] = momentum * v[k] - decay * lr * w[k] - lr * g[k]
      w[k] = w[k] + v[k]
  return w


W0 = {'kernel': jnp.array([0.5, -1.0, 2.0]), 'bias': jnp.array([1.0, 0.0])}


def test_paper_update_across_a_learning_rate_drop():
  tx = optimizer.paper_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  got = _run(tx, W0, steps=12, drop_at=6, new_lr=0.01)
  want = _paper_formula(W0, 12, 6, 0.1, 0.01)
  for k in W0:
    np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-5)


def test_optax_sgd_would_differ_after_the_drop():
  """The reason for paper_sgd: optax.sgd rescales the old momentum by the new rate."""
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  tx = optax.chain(optax.add_decayed_weights(5e-4), tx)
  state = tx.init(W0)
  w = W0
  for i in range(12):
    if i == 6:
      state[1].hyperparams['learning_rate'] = jnp.asarray(0.01)
    updates, state = tx.update(_grad(w), state, w)
    w = optax.apply_updates(w, updates)
  want = _paper_formula(W0, 12, 6, 0.1, 0.01)
  assert np.abs(np.asarray(w['kernel']) - want['kernel']).max() > 1e-3


def test_caffe_no_decay_on_biases():
  tx = optimizer.paper_sgd(0.1, weight_decay=0.05, decay_biases=False)
  got = _run(tx, W0, steps=5, drop_at=-1, new_lr=0.1)
  want = _paper_formula(W0, 5, -1, 0.1, 0.1, wd=0.05, decay_bias=False)
  for k in W0:
    np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-5)
  decayed = _paper_formula(W0, 5, -1, 0.1, 0.1, wd=0.05, decay_bias=True)
  assert np.abs(decayed['bias'] - want['bias']).max() > 1e-4


def test_plateau_divides_by_ten_after_patience_at_most_k_times():
  c = optimizer.LearningRateController(base_lr=0.01, name='plateau', patience=2, max_reductions=3)
  lowered = [c.observe(t) for t in [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3,
                                    0.3, 0.3]]
  assert lowered == [False, False, False, True, False, False, True, False, True, False,
                     False, False, False]
  assert c.reductions == 3
  assert np.isclose(c.lr_for_step(0), 1e-5)
  restored = optimizer.LearningRateController(base_lr=0.01)
  restored.load_state_dict(c.state_dict())
  assert (restored.best, restored.reductions, restored.bad_evals) == (0.3, 3, c.bad_evals)


def test_step_schedule():
  c = optimizer.LearningRateController(base_lr=0.01, name='step', boundaries=(10, 20))
  assert [c.lr_for_step(s) for s in (0, 9, 10, 19, 20, 99)] == pytest.approx(
      [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rel=1e-9)
  assert not c.observe(0.5)


def test_linear_warmup_then_the_schedule():
  c = optimizer.LearningRateController(base_lr=0.01, name='step', boundaries=(10,), warmup_steps=4)
  np.testing.assert_allclose([c.lr_for_step(s) for s in range(6)],
                             [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
  assert c.lr_for_step(10) == pytest.approx(0.001)
  assert [c.warming_up(s) for s in (0, 1, 3, 4)] == [False, True, True, False]
  none = optimizer.LearningRateController(base_lr=0.01)
  assert none.lr_for_step(0) == 0.01 and not none.warming_up(1)


def test_warmup_epochs_from_the_config_and_refused_when_negative():
  from alexnet_jax.common import config_lib
  from configs import paper
  cfg = paper.get_config()
  assert cfg.schedule.warmup_epochs == 0.0   # the paper has no warm-up
  cfg.schedule.warmup_epochs = 0.5
  assert optimizer.LearningRateController.from_config(cfg, steps_per_epoch=100).warmup_steps == 50
  cfg.schedule.warmup_epochs = -1.0
  with pytest.raises(ValueError, match='schedule.warmup_epochs=-1.0'):
    config_lib.validate(cfg)
