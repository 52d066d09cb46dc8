# The quick CIFAR-10 recipe: cuda-convnet's "26% in 80 seconds" net, minutes on a CPU:
#   python -m alexnet_jax.main --config=configs/cifar10_fast.py --workdir=/tmp/c10_fast \
#       --config.dataset.folder=../shared/data/cifar10/train
#   python -m alexnet_jax.evaluate --workdir=/tmp/c10_fast
# The 18pct net (within-map response norms): configs/cifar10_18pct.py.
"""cuda-convnet's 80sec net (layers-80sec.cfg / layer-params-80sec.cfg) on 24x24 crops.

Model (model.arch='cifar10_80sec', model/cifar.py): conv1 32 5x5 -> max-pool 3/2 -> ReLU
-> conv2 32 5x5 -> ReLU -> avg-pool 3/2 -> conv3 64 5x5 -> ReLU -> avg-pool 3/2 -> fc64
ReLU -> fc10 (pooling as cuda-convnet: ceil-rounded outputs, windows clipped at the edge);
init std 1e-4 (conv1), 0.01 (conv2, conv3), 0.1 (fc64, fc10).

Recipe: rates 0.001 (weights) / 0.002 (biases), momentum 0.9, batch 128, weight decay
0.004 on the convolutions and 0.03 on fc64/fc10, none on biases; the rate /10 after 8
epochs, 10 epochs in all (cuda-convnet: "reduce the learning rate after 8 epochs").

Data: cuda-convnet trained this net on whole 32x32 images without augmentation. Here it
sees random 24x24 crops with flips (the centre crop at validation), as conv-local does: 0.56x
the arithmetic of 32x32 per image, which is what a CPU run is limited by
(--config.model.input_size=32 trains on whole images; with input.random_crop='paper' a 32
crop of a 32 image is the image itself, flips still on).
"""

from configs import cifar10_conv_local


def get_config(arg: str | None = None):
  c = cifar10_conv_local.cifar10('cifar10_80sec', arg)
  c.model.lrn = 'none'                       # the 80sec net has no response norm
  c.model.input_size = 24
  c.num_epochs = 10.0
  c.schedule.step_epochs = (8.0,)
  return c
