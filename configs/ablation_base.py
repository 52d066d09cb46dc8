# The ablation base: the built-in dataset's hard variant, every ablated component active.
#   python -m alexnet_jax.main --config=configs/ablation_base.py --workdir=/tmp/ablation_base
#   python -m experiments.ablations --base=configs/ablation_base.py --seeds=3 \
#       --sweep=lrn,pooling,towers,lighting,activation,dropout \
#       --out=experiments/results/ablations_hard
"""configs/default.py's narrow model and recipe, on a base in which every ablation ablates.

* LRN at its working range. The paper's LRN (k = 2, alpha = 1e-4 not divided by n) varies
  only once sum a^2 ~ k / alpha = 2e4, i.e. for activations of the paper's scale (0-255
  inputs). Here the inputs are the 0-255 pixels minus the mean image x 1/32 and the init
  is He's, so `model.lrn_gain=16` lets the LRN see the activations x 16, i.e. at the scale
  of 0-255 inputs x 0.5: b = a (k + alpha (16 a)^2 ...)^-beta, the paper's formula on
  activations 16x larger (layers.lrn_scale). The multiplier then spreads from ~0.15 to
  k^-0.75 = 0.595 on real batches (experiments/ablation_base_check.py); with
  configs/default.py's inputs x 1/128 and no gain it is a constant 0.595 everywhere.
* Dropout 0.5 in fc6/fc7 with the paper's test-time x0.5, PCA lighting at sigma 0.1 on the
  0-255 scale (then x 1/32 like the pixels), overlapping pooling, two towers, ReLU.
* Data: `alexnet_shapes` variant 'hard' (smaller, lower-contrast objects, clutter, some
  occluded), which does not saturate: the default dataset ends at 98.5% top-1, where no
  ablation can show.
* Recipe: configs/default.py's (He init, Nesterov momentum 0.9, rate 0.01, batch 128),
  with a linear warm-up over the first half epoch (not the paper's), a constant rate after
  it (so a sweep resumed with --epochs=N continues where it stopped), 6 epochs.
"""

from configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.dataset.shapes_variant = 'hard'
  c.input.scale = 1 / 32          # 4x configs/default.py's: dropout's and LRN's damping
  c.input.pca_lighting = 0.1      # the paper's sigma, on the same 0-255 scale as the pixels
  c.model.lrn = 'paper'
  c.model.lrn_gain = 16.0         # the LRN sees the activations at the 0-255 x 0.5 scale
  c.model.pooling = 'overlapping'
  c.model.towers = 2
  c.model.activation = 'relu'
  c.model.dropout_rate = 0.5
  c.model.dropout_scaling = 'test'
  c.model.init = 'he'
  c.num_epochs = 6.0
  c.schedule.name = 'constant'
  c.schedule.warmup_epochs = 0.5
  c.eval_every_steps = 78         # once per epoch
  c.checkpoint_every_steps = 156  # every second epoch; resumable
  return c
