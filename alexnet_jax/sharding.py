"""The paper's two-GPU split as a ('data', 'model') device mesh.

With mesh.model=2 tower A lives on the devices with model index 0 and tower B on
model index 1, as on the paper's two GTX 580s; 'data' replicates the pair. Which
arrays are split over 'model' is said once, by `models.param_specs`; batches are
split over 'data' (`batch_sharding`); everything else is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'model')


def make_mesh(mesh_config: Any, devices: list | None = None) -> Mesh:
  """A ('data', 'model') mesh from the config's `mesh` section.

  mesh.model larger than the devices allow falls back to model=1 (logged), so a
  laptop runs the paper config; sizes that cannot tile the devices are an error.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  data, model = int(mesh_config.data), int(mesh_config.model)
  if model < 1:
    raise ValueError(f'mesh.model={model} is invalid; allowed: a positive divisor of the '
                     f'{n} devices (2 is the paper\'s split, 1 puts both towers on each device)')
  if data == 0 or data < -1:
    raise ValueError(f'mesh.data={data} is invalid; allowed: -1 (all remaining devices) or a '
                     'positive int')
  if n % model:
    if model > n:
      logging.warning('mesh.model=%d does not fit %d device(s): falling back to mesh.model=1 '
                      '(both towers on every device; results are identical).', model, n)
      model = 1
    else:
      raise ValueError(f'mesh.model={model} does not divide the {n} devices')
  if data == -1:
    data = n // model
  if data * model != n:
    raise ValueError(f'mesh.data={data} x mesh.model={model} = {data * model} devices, but '
                     f'{n} are present; set --config.mesh.data=-1 to use them all')
  return jax.make_mesh((data, model), MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """The same whole array on every device (step counter, metrics, the mean image)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: rows split over 'data', replicated over 'model' (both towers see them)."""
  return NamedSharding(mesh, P('data'))
