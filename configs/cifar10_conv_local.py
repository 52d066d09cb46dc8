# The paper's CIFAR-10 net (section 3.3: 11% test error with response normalization, 13%
# without): cuda-convnet's conv-local-11pct, trained from a folder of class sub-folders:
#   python -m alexnet_jax.main --config=configs/cifar10_conv_local.py --workdir=/tmp/c10_11pct \
#       --config.dataset.folder=../shared/data/cifar10/train
#   ... --config.model.lrn=none                  # conv-local-13pct (no response norms)
#   python -m alexnet_jax.evaluate --workdir=/tmp/c10_11pct    # centre crop and 10 views
# From TFDS `cifar10` where it is prepared (Colab downloads it), the same with
#   --config=configs/cifar10_conv_local.py:source=tfds (no --config.dataset.folder)
"""cuda-convnet's conv-local-11pct (layers-conv-local-11pct.cfg, layer-params-*.cfg).

Model (model.arch='cifar10_conv_local', model/cifar.py): conv1 64 5x5 -> ReLU -> cross-map
response norm (5 maps, scale 0.001, pow 0.75, constant 1) -> max-pool 3/2 -> conv2 64
5x5 -> ReLU -> norm -> max-pool 3/2 -> local3 32 3x3 -> local4 32 3x3 (locally connected,
unshared weights) -> fc10: 1,116,490 parameters on 24x24 crops. Init N(0, std) with std
1e-4 (conv1), 0.01 (conv2, fc10), 0.04 (local3/4), biases 0.

Recipe (layer-params-conv-local-11pct.cfg): SGD momentum 0.9, batch 128, rate 0.001 for
weights and 0.002 for biases (optimizer.bias_lr_multiplier=2), weight decay 0.004 on
local3, local4 and fc10 and none on the convolutions or biases. Inputs: 0-255 pixels minus
the mean image of the training split, random 24x24 crops of the 32x32 images with
horizontal flips in training; the centre crop at validation (input.eval_crops=10: the four
corners and the centre, each also flipped, cuda-convnet's multiview test).

Schedule: cuda-convnet trained ~300 epochs on 40k images with 10k for validation, then ~150
epochs on all 50k, then 10 + 10 epochs at rates /10 and /100. One run here: 300 epochs on
the training part, then 10 at /10 and 10 at /100; the validation part stays held out
(dataset.folder without split sub-folders: 10% of each class by a hash of the file name,
about 5,000 of CIFAR-10's 50,000; TFDS: the last 10% of `train`). The official test split
is not used for any choice.
"""

import ml_collections

from alexnet_jax.common import config_lib

# What each net's cuda-convnet layer-params file sets per layer: wc, the weight decay
# (every layer has epsW 0.001, epsB 0.002, momentum 0.9, and no decay on biases).
LAYER_WEIGHT_DECAY = {
    'cifar10_conv_local': {'conv1': 0.0, 'conv2': 0.0, 'local3': 0.004, 'local4': 0.004,
                           'fc10': 0.004},
    'cifar10_18pct': {'conv1': 0.004, 'conv2': 0.004, 'conv3': 0.004, 'fc10': 1.0},
    'cifar10_80sec': {'conv1': 0.004, 'conv2': 0.004, 'conv3': 0.004, 'fc64': 0.03,
                      'fc10': 0.03},
}
# The training and held-out parts of TFDS `cifar10`'s 50,000 training images.
TFDS_SPLITS = ('train[:90%]', 'train[90%:]')


def cifar10(arch: str, arg: str | None) -> ml_collections.ConfigDict:
  """What every CIFAR-10 config shares: the data, cuda-convnet's preprocessing and SGD,
  one tower (mesh.model=1), the per-layer decay of the net's layer-params file."""
  args = config_lib.parse_arg(arg, source='folder')
  c = config_lib.base()
  c.model.arch = arch
  c.model.towers = 1
  c.model.conv_widths = ()                  # the net's own widths
  c.model.fc_widths = ()
  c.model.num_classes = 10
  c.model.lrn = 'cuda_convnet'
  c.model.dropout_rate = 0.0                # cuda-convnet's CIFAR nets have no dropout
  c.model.init = 'paper'                    # cuda-convnet's initW per layer
  c.mesh.model = 1
  if args['source'] == 'folder':
    c.dataset.name = 'folder'               # --config.dataset.folder=DIR (class sub-folders)
  elif args['source'] == 'tfds':
    c.dataset.name = 'cifar10'
    c.dataset.train_split, c.dataset.eval_split = TFDS_SPLITS
  else:
    raise ValueError(f"source={args['source']!r}; allowed: folder, tfds")
  c.input.resize_size = 32                  # CIFAR's own size: the host never resizes
  c.input.mean = 'image'
  c.input.pca_lighting = 0.0
  c.input.shuffle_buffer = 50000
  c.batch_size = 128
  c.eval_batch_size = 200
  c.optimizer.learning_rate = 0.001
  c.optimizer.momentum = 0.9
  c.optimizer.decay_biases = False
  c.optimizer.bias_lr_multiplier = 2.0
  c.optimizer.weight_decay = 0.0
  c.optimizer.layer_weight_decay = dict(LAYER_WEIGHT_DECAY[arch])
  c.schedule.name = 'step'
  c.log_every_steps = 50
  c.checkpoint_every_steps = 352            # about an epoch of 45,000 images
  return c


def get_config(arg: str | None = None):
  c = cifar10('cifar10_conv_local', arg)
  c.model.input_size = 24                   # random 24x24 crops of the 32x32 images
  c.num_epochs = 320.0
  c.schedule.step_epochs = (300.0, 310.0)
  return c
