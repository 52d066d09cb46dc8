# torchvision's one-tower AlexNet ("one weird trick" widths, no LRN) with the paper's recipe:
#   python -m alexnet_jax.main --config=configs/one_tower.py --workdir=/tmp/alexnet_one_tower
"""One tower, widths 64-192-384-256-256, no LRN: 61,100,840 parameters."""

from alexnet_jax.common import config_lib


def get_config(arg: str | None = None):
  del arg
  return config_lib.one_tower()
