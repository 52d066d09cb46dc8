"""A run's workdir without training: config.json, preprocessing.npz, and checkpoints/ and
best/ of freshly initialised parameters (tests of predict, evaluate and the figures).

Importable from any test as `import workdir_utils`.
"""

from __future__ import annotations

import os

import data_utils

# On top of data_utils.TINY_RUN: host images of 72 for 64 crops, so the 10 crops differ.
OVERRIDES = {'input.resize_size': 72}


CIFAR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'cifar10')
CIFAR_CONFIGS = {'cifar10_80sec': 'cifar10_fast', 'cifar10_18pct': 'cifar10_18pct',
                 'cifar10_conv_local': 'cifar10_conv_local'}


def cifar_config(arch: str, data_dir):
  """configs/<arch's file>.py on tests/data/cifar10 (167 training, 33 validation images),
  batches of 16, its statistics cached in `data_dir`."""
  import importlib
  config = importlib.import_module(f'configs.{CIFAR_CONFIGS[arch]}').get_config()
  return data_utils.set_fields(config, {
      'dataset.folder': CIFAR_DIR, 'dataset.data_dir': os.fspath(data_dir),
      'batch_size': 16, 'eval_batch_size': 16})


def make_workdir(workdir, data_dir, *, seed: int = 0, best_seed: int | None = None,
                 preprocessing: bool = True, config=None, **overrides):
  """Writes `workdir`/config.json (data_utils.tiny_config + OVERRIDES + `overrides`, or
  `config` as given, e.g. `cifar_config`), its preprocessing.npz as training does (unless
  `preprocessing` is False: a workdir of an older version), checkpoints/2 holding
  nets.init_params(seed) and best/1 holding nets.init_params(best_seed) (default: the same
  parameters); returns (config, params)."""
  from alexnet_jax.common import config_lib
  from alexnet_jax.data import statistics
  from alexnet_jax.model import nets, sharding
  from alexnet_jax.run import checkpoints
  from alexnet_jax.run import workdir as workdir_lib
  if config is None:
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
