# torchvision's one-tower AlexNet ("one weird trick" widths, no LRN) with the paper's recipe:
#   python -m alexnet_jax.main --config=configs/one_tower.py --workdir=/tmp/alexnet_one_tower
"""One tower, widths 64-192-384-256-256, no LRN: 61,100,840 parameters."""

from alexnet_jax.common import config_lib


def get_config(arg: str | None = None):
  del arg
  c = config_lib.base()
  c.model.towers = 1
  c.model.conv_widths = (64, 192, 384, 256, 256)
  c.model.lrn = 'none'
  c.mesh.model = 1
  return c
