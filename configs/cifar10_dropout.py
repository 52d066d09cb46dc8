# Dropout against overfitting (the paper's section 4.2) on CIFAR-10:
#   python -m experiments.cifar10_claims dropout --folder=../shared/data/cifar10/train \
#       --out=experiments/results/cifar10
#   python -m alexnet_jax.main --config=configs/cifar10_dropout.py --workdir=/tmp/c10_drop \
#       --config.dataset.folder=../shared/data/cifar10/train --config.model.dropout_rate=0.5
"""cuda-convnet's 80sec net with a wide hidden fully connected layer, made to overfit.

The paper (section 4.2): "Without dropout, our network exhibits substantial overfitting.
Dropout roughly doubles the number of iterations required to converge." Its nets overfit
through their large fully connected layers; the 80sec net (model.arch='cifar10_80sec') has
one hidden fc layer, fc64, widened here to 1,024 units (model.fc_widths=(1024,): 1,024 x
1,024 weights from conv3's 4x4x64 outputs, 1.05 M of the net's 1,139,178 parameters). Nothing
else holds it back: no weight decay (the recipe's per-layer decay is cleared), no
augmentation (whole 32x32 images: no random crops, no flips, no PCA lighting), a constant
rate (0.001 for weights, 0.002 for biases, momentum 0.9, batch 128). model.dropout_rate is
the switch: 0.0 here, 0.5 (the paper's) for the comparison, applied after fc64's ReLU.
"""

from configs import cifar10_figure1


def get_config(arg: str | None = None):
  c = cifar10_figure1.unregularized('cifar10_80sec', arg)
  c.model.fc_widths = (1024,)
  c.model.dropout_rate = 0.0
  c.num_epochs = 100.0
  return c
