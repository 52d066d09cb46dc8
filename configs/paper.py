# The paper, on ImageNet (ILSVRC-2012, prepared with `python -m alexnet_jax.prepare`):
#   python -m alexnet_jax.main --config=configs/paper.py --workdir=/tmp/alexnet_paper
# The paper's one-tower ablation (one tower, half the kernels in conv1-4):
#   python -m alexnet_jax.main --config=configs/paper.py:towers=1 --workdir=/tmp/alexnet_1tower
"""Krizhevsky, Sutskever & Hinton (2012): model, recipe and preprocessing."""

from alexnet_jax.common import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base()
  args = config_lib.parse_arg(arg, towers=2)
  if args['towers'] == 1:
    # Section 3.2 and its footnote 2: "a net with half as many kernels in each
    # convolutional layer trained on one GPU", except the final convolutional layer and
    # the fully-connected layers, kept at full size so that both nets have about the
    # same number of parameters.
    c.model.towers = 1
    c.model.conv_widths = (48, 128, 192, 192, 256)
    c.mesh.model = 1
  elif args['towers'] != 2:
    raise ValueError(f"configs/paper.py: towers={args['towers']!r}; allowed: 1 or 2")
  return c
