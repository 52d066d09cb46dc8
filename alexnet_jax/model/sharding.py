"""The paper's two-GPU split as a ('data', 'model') device mesh.

With mesh.model=2 tower A lives on the devices with model index 0 and tower B on
model index 1, as on the paper's two GTX 580s; 'data' replicates the pair. Which
arrays are split over 'model' is said once, by `models.param_specs`; batches are
split over 'data' (`batch_sharding`); everything else is replicated.
"""

from __future__ import annotations

import glob
import os
import shutil
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


def accelerator_hint() -> str | None:
  """An accelerator this machine appears to have ('GPU' / 'TPU'), from device files and
  tools, without asking JAX (which may have fallen back to the CPU)."""
  if shutil.which('nvidia-smi') or glob.glob('/dev/nvidia[0-9]*'):
    return 'GPU'
  if glob.glob('/dev/accel[0-9]*') or os.environ.get('TPU_NAME') or os.environ.get(
      'COLAB_TPU_ADDR'):
    return 'TPU'
  return None


def log_devices(mesh: Mesh) -> None:
  """The start-up lines: backend, device kind and count, processes, the mesh; and a
  warning when an accelerator is present but JAX runs on the CPU."""
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  logging.info('JAX %s on %s: %d device(s) (%s), %d local, %d process(es); mesh %s.',
               jax.__version__, jax.default_backend(), len(devices), ', '.join(kinds),
               jax.local_device_count(), jax.process_count(),
               ', '.join(f'{k}={v}' for k, v in mesh.shape.items()))
  hint = accelerator_hint()
  if jax.default_backend() == 'cpu' and hint:
    logging.warning('This machine seems to have a %s, but JAX is running on the CPU: install '
                    'the JAX build for it (docs/install.md), e.g. pip install -U "jax[%s]".',
                    hint, 'cuda12' if hint == 'GPU' else 'tpu')
