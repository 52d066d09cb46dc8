# cuda-convnet's "18% in 20 minutes" CIFAR-10 net (on a GTX 580):
#   python -m alexnet_jax.main --config=configs/cifar10_18pct.py --workdir=/tmp/c10_18pct \
#       --config.dataset.folder=../shared/data/cifar10/train
"""cuda-convnet's 18pct net (layers-18pct.cfg / layer-params-18pct.cfg).

Model (model.arch='cifar10_18pct'): conv1 32 5x5 -> max-pool 3/2 -> ReLU -> response norm
within each map (3x3 neighbourhood, scale 5e-5, pow 0.75, constant 1) -> conv2 32 5x5 ->
ReLU -> avg-pool 3/2 -> norm -> conv3 64 5x5 -> ReLU -> avg-pool 3/2 -> fc10; 89,578
parameters on whole 32x32 images, as cuda-convnet trained it (no crops or flips).
Recipe: rates 0.001 / 0.002 (biases), momentum 0.9, weight decay 0.004 (fc10: 1), none on
biases; rates /10 after 120 epochs and again 10 later.
"""

from configs import cifar10_conv_local


def get_config(arg: str | None = None):
  c = cifar10_conv_local.cifar10('cifar10_18pct', arg)
  c.model.input_size = 32
  c.input.flip = False
  c.num_epochs = 140.0
  c.schedule.step_epochs = (120.0, 130.0)
  return c
