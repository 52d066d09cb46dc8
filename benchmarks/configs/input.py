# The input-pipeline benchmark (run from the repository root):
#   python -m benchmarks.input --config=benchmarks/configs/input.py \
#       --config.seconds=20 --config.resize_method=fast --config.json=/tmp/bench_input.json
"""Settings of `python -m benchmarks.input`: three host pipelines on the same photos."""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  # A folder of JPEG photos; '' = ../shared/data/imagenet-sample next to the repository root.
  c.images_dir = ''
  c.seconds = 20.0              # timed seconds per pipeline
  c.warmup_seconds = 5.0
  c.batch_size = 64
  c.resize_size = 256
  c.crop_size = 224             # (b) PyTorch-style random crop
  c.resize_method = 'fast'      # (a)'s host shrink filter (input.resize_method): fast|area|bilinear
  c.work_dir = ''               # keep the TFDS copies here ('' = a temporary folder)
  c.json = ''                   # write the report here ('' = print only)
  return c
