"""A run's workdir without training: config.json, preprocessing.npz, and checkpoints/ and
best/ of freshly initialised parameters (tests of predict, evaluate and the figures).

Importable from any test as `import workdir_utils`.
"""

from __future__ import annotations

import os

import data_utils

# On top of data_utils.TINY_RUN: host images of 72 for 64 crops, so the 10 crops differ.
OVERRIDES = {'input.resize_size': 72}


def make_workdir(workdir, data_dir, *, seed: int = 0, best_seed: int | None = None,
                 preprocessing: bool = True, **overrides):
  """Writes `workdir`/config.json (data_utils.tiny_config + OVERRIDES + `overrides`), its
  preprocessing.npz as training does (unless `preprocessing` is False: a workdir of an
  older version), checkpoints/2 holding nets.init_params(seed) and best/1 holding
  nets.init_params(best_seed) (default: the same parameters); returns (config, params)."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.data import statistics
  from alexnet_jax.model import nets, sharding
  from alexnet_jax.run import checkpoints
  from alexnet_jax.run import workdir as workdir_lib
  config = data_utils.tiny_config(data_dir, **{**OVERRIDES, **overrides})
  mesh = sharding.make_mesh(config.mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  params = nets.init_params(spec, seed=seed, mesh=mesh)
  best = params if best_seed is None else nets.init_params(spec, seed=best_seed, mesh=mesh)
  ckpt = checkpoints.Checkpointer(os.fspath(workdir))
  ckpt.save(2, {'params': params}, {'step': 2})
  ckpt.save_best(1, best, {'top1': 0.0})
  ckpt.wait()
  ckpt.close()
  workdir_lib.write_config(os.fspath(workdir), config)
  if preprocessing:
    stats = statistics.load_or_compute_statistics(config)
    workdir_lib.write_preprocessing(os.fspath(workdir), stats.mean, stats.pca)
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
