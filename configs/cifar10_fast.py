# The quick CIFAR-10 recipe: cuda-convnet's "26% in 80 seconds" net, minutes on a CPU:
#   python -m alexnet_jax.main --config=configs/cifar10_fast.py --workdir=/tmp/c10_fast \
#       --config.dataset.folder=../shared/data/cifar10/train
#   python -m alexnet_jax.evaluate --workdir=/tmp/c10_fast
#   ... --config=configs/cifar10_fast.py:recipe=cuda_convnet     # the net's published recipe
# Against PyTorch, time to 26% validation error: python -m benchmarks.time_to_accuracy
# The 18pct net (within-map response norms): configs/cifar10_18pct.py.
"""cuda-convnet's 80sec net (layers-80sec.cfg) with the fastest recipe found for it.

Model (model.arch='cifar10_80sec', model/cifar.py): conv1 32 5x5 -> max-pool 3/2 -> ReLU
-> conv2 32 5x5 -> ReLU -> avg-pool 3/2 -> conv3 64 5x5 -> ReLU -> avg-pool 3/2 -> fc64
ReLU -> fc10 (pooling as cuda-convnet: ceil-rounded outputs, windows clipped at the edge),
on whole 32x32 images: 145,578 parameters, 12.4 M multiply-adds per image.

recipe=tuned (the default; the fastest to 26% validation error measured on a 2-core CPU,
see docs/datasets.md and benchmarks/logs/time_to_accuracy.md): whole 32x32 images with
random horizontal flips, minus the mean image and divided by CIFAR-10's per-channel pixel
std; He init; SGD momentum 0.9, batch 128, rate 0.02 (biases 0.04) falling linearly to 0
over 8 epochs; weight decay 5e-4 on every weight, none on biases. Evaluated with
input.eval_crops=10, cuda-convnet's multiview test, which on whole images is the softmax of
the image and of its mirror averaged (--config.input.eval_crops=1: the image alone). Chosen
on the held-out part of the training images only.

recipe=cuda_convnet (layer-params-80sec.cfg, as published; not the fastest here): whole
32x32 images without augmentation, cuda-convnet's init std (1e-4 conv1, 0.01 conv2/conv3,
0.1 fc64/fc10), rates 0.001 (weights) / 0.002 (biases), momentum 0.9, batch 128, weight
decay 0.004 on the convolutions and 0.03 on fc64/fc10; the rate /10 after 8 epochs, 10 in
all (cuda-convnet: 26% test error after 8 epochs). With random 24x24 crops instead, a run
here was at 55.6%, 48.4% and 45.0% validation error after epochs 1-3.
"""

from alexnet_jax.common import config_lib
from configs import cifar10_conv_local

RECIPES = ('tuned', 'cuda_convnet')
# CIFAR-10's per-channel pixel standard deviation over the training images (0-255).
CIFAR10_STD_RGB = (62.99, 62.09, 66.70)


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, source='folder', recipe='tuned')
  if args['recipe'] not in RECIPES:
    raise ValueError(f"recipe={args['recipe']!r}; allowed: {', '.join(RECIPES)}")
  c = cifar10_conv_local.cifar10('cifar10_80sec', f"source={args['source']}")
  c.model.lrn = 'none'                       # the 80sec net has no response norm
  c.model.input_size = 32                    # whole images
  if args['recipe'] == 'cuda_convnet':
    c.input.flip = False
    c.num_epochs = 10.0
    c.schedule.step_epochs = (8.0,)
    return c
  c.model.init = 'he'
  c.input.std_rgb = CIFAR10_STD_RGB
  c.optimizer.learning_rate = 0.02
  c.optimizer.weight_decay = 5e-4
  c.optimizer.layer_weight_decay = {}
  c.schedule.name = 'linear'
  c.num_epochs = 8.0
  # cuda-convnet's multiview test: on whole images the ten crops are the image and its
  # mirror (steps.eval_logits runs just those two): about a point below the centre view.
  c.input.eval_crops = 10
  return c
