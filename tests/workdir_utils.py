"""A run's workdir without training: config.json and a best/ checkpoint of freshly
initialised parameters (tests of predict and the figures).

Importable from any test as `import workdir_utils`.
"""

from __future__ import annotations

import os

import data_utils

# On top of data_utils.TINY_RUN: host images of 72 for 64 crops, so the 10 crops differ.
OVERRIDES = {'input.resize_size': 72}


def make_workdir(workdir, data_dir, *, seed: int = 0, **overrides):
  """Writes `workdir`/config.json (data_utils.tiny_config + OVERRIDES + `overrides`) and
  best/1 holding nets.init_params(seed); returns (config, params)."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.model import nets, sharding
  from alexnet_jax.run import checkpoints
  config = data_utils.tiny_config(data_dir, **{**OVERRIDES, **overrides})
  mesh = sharding.make_mesh(config.mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  params = nets.init_params(spec, seed=seed, mesh=mesh)
  ckpt = checkpoints.Checkpointer(os.fspath(workdir))
  ckpt.save_best(1, params, {'top1': 0.0})
  ckpt.wait()
  ckpt.close()
  checkpoints.write_config(os.fspath(workdir), config)
  return config, params


def export_split(config, split: str, folder) -> tuple[list[str], list[int]]:
  """The encoded images of `split`, in the evaluation's order, as files folder/NNNN.jpg;
  returns (paths, labels)."""
  from alexnet_jax.data import pipeline
  os.makedirs(folder, exist_ok=True)
  paths, labels = [], []
  for i, (data, label) in enumerate(pipeline.shard(config, split).records
                                    .as_numpy_iterator()):
    path = os.path.join(folder, f'{i:04d}.jpg')
    with open(path, 'wb') as f:
      f.write(data)
    paths.append(path)
    labels.append(int(label))
  return paths, labels
