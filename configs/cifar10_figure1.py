# The paper's Figure 1 (section 3.1): ReLU against tanh, training error per epoch:
#   python -m experiments.cifar10_claims figure1 --folder=../shared/data/cifar10/train \
#       --out=experiments/results/cifar10
#   python -m alexnet_jax.main --config=configs/cifar10_figure1.py --workdir=/tmp/fig1 \
#       --config.dataset.folder=../shared/data/cifar10/train --config.model.activation=tanh
"""A four-layer convolutional net on CIFAR-10 with nothing but the activation to compare.

The paper's Figure 1: "A four-layer convolutional neural network with ReLUs reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network with tanh
neurons. The learning rates for each network were chosen independently to make training
as fast as possible. No regularization of any kind was employed."

Model: cuda-convnet's 18pct net without its two response norms (model.lrn='none'):
conv1 32 5x5 -> max-pool 3/2 -> conv2 32 5x5 -> avg-pool 3/2 -> conv3 64 5x5 -> avg-pool
3/2 -> fc10, four weight layers, ReLU (model.activation='relu') or tanh after each hidden
one. No regularization: no weight decay (the 18pct recipe's per-layer decay, fc10's 1.0
included, is cleared), no dropout, no augmentation (whole 32x32 images: input.random_crop=
'none', no flips, no PCA lighting); the training mean image is still subtracted.

Recipe: SGD momentum 0.9, batch 128, a constant rate (optimizer.learning_rate: the
experiment sweeps it per activation; biases x2 as cuda-convnet), an evaluation per epoch.
The training error of an epoch is the step-weighted mean of the running top-1 the loop logs
every log_every_steps=50 steps: 50 divides the 350 steps of an epoch of the folder's 44,877
training images, so each epoch is covered exactly (experiments/cifar10_claims_lib.py).
"""

import ml_collections

from configs import cifar10_conv_local


def unregularized(arch: str, arg: str | None) -> ml_collections.ConfigDict:
  """A CIFAR-10 net with nothing that regularizes it (configs/cifar10_dropout.py too): no
  response norm, whole 32x32 images without crops or flips, no weight decay, a constant
  rate, the running training error logged over whole epochs."""
  c = cifar10_conv_local.cifar10(arch, arg)
  c.model.lrn = 'none'
  c.model.input_size = 32
  c.input.random_crop = 'none'
  c.input.flip = False
  c.optimizer.weight_decay = 0.0
  c.optimizer.layer_weight_decay = ml_collections.ConfigDict()
  c.schedule.name = 'constant'
  c.log_every_steps = 50                    # divides the 350 steps of an epoch
  c.checkpoint_every_steps = 350            # an epoch of the folder's 44,877 images
  return c


def get_config(arg: str | None = None):
  c = unregularized('cifar10_18pct', arg)
  c.model.activation = 'relu'
  c.num_epochs = 80.0     # tanh at 0.032 stood at 27-28% training error after 50 epochs here
  return c
