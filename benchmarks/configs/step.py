# The training-step benchmark (run from the repository root):
#   python -m benchmarks.step --config=benchmarks/configs/step.py \
#       --config.models=paper,one_tower --config.dtypes=float32 --config.batch_sizes=32 \
#       --config.runs=5 --config.loop=True --config.json=/tmp/bench_step.json
"""Cases of `python -m benchmarks.step`: every model x dtype x batch size is one case."""

import ml_collections
from ml_collections import config_dict


def get_config():
  c = ml_collections.ConfigDict()
  # Comma lists. models: names of modules in configs/ (configs/paper.py, configs/one_tower.py).
  c.models = 'paper,one_tower'
  c.dtypes = 'float32,bfloat16'            # model.dtype (compute); parameters stay float32
  c.batch_sizes = ''                       # '' = 32 on CPU, 128,512 on GPU/TPU
  c.runs = 5                               # timed rounds, after one warm-up round
  c.forward = True                         # also time the forward pass (inference)
  c.torch = config_dict.placeholder(bool)  # PyTorch twin; unset = when torch is installed
  c.loop = False                           # also time train.train_and_evaluate (synthetic data)
  c.loop_windows = 2                       # loop: timed log windows of `runs` steps each
  c.peak_sizes = '2048,4096'               # square jnp.dot sizes for the matmul peak
  # How the layers are computed, one case each: 'auto' (the backend's default) or
  # CONV:POOL_GRAD:LRN[:WEIGHT_GRAD], e.g.
  # 'auto,split:custom:rsqrt:matmul,grouped:autodiff:pow:native' to compare the CPU-tuned
  # forms with the native ones (model.conv_impl / pool_grad / lrn_impl / conv_weight_grad).
  c.kernels = 'auto'
  # Applied to every model config, ';'-separated KEY=VALUE (VALUE a Python literal), e.g.
  # 'model.conv_widths=(8,16,16,16,16);model.fc_widths=(32,32)'.
  c.overrides = ''
  c.json = ''                              # write the report here ('' = print only)
  return c
