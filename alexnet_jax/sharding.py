"""The paper's two-GPU split as a ('data', 'model') device mesh.

Parameters carry logical axis names (models.py puts 'tower' on the leading axis
of every per-tower kernel); LOGICAL_RULES maps those names to mesh axes. With
mesh.model=2 tower A lives on the devices with model index 0 and tower B on
model index 1, as on the paper's two GTX 580s; 'data' replicates the pair.
"""

from __future__ import annotations

import collections
import functools
import re
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import models

MESH_AXES = ('data', 'model')
# Logical axis name -> mesh axis. Everything not named here is replicated.
LOGICAL_RULES = (('tower', 'model'), ('batch', 'data'))


def logical_to_spec(logical_axes: tuple[str | None, ...] | None) -> P:
  """PartitionSpec for a tuple of logical axis names, through LOGICAL_RULES."""
  rules = dict(LOGICAL_RULES)
  axes = [rules.get(a) if a is not None else None for a in (logical_axes or ())]
  while axes and axes[-1] is None:     # P('model') rather than P('model', None, ...)
    axes.pop()
  return P(*axes)


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
  device_array = np.asarray(devices).reshape(data, model)
  return Mesh(device_array, MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_mesh_fits_model(mesh: Mesh, spec: models.ModelSpec) -> None:
  """The tower axis must split evenly over 'model'."""
  if spec.towers % mesh.shape['model']:
    raise ValueError(
        f'model.towers={spec.towers} cannot be split over mesh.model={mesh.shape["model"]}; '
        'set --config.mesh.model=1 (or use towers=2)')


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """NamedShardings for an nnx.State, from each Variable's `logical_axes` metadata."""
  def one(var):
    axes = var.get_metadata().get('logical_axes')
    return var.replace(NamedSharding(mesh, logical_to_spec(axes)))
  return jax.tree.map(one, abstract_state, is_leaf=_is_var)


def create_sharded_model(model_config: Any, mesh: Mesh, seed: int = 0) -> models.AlexNet:
  """Initialises AlexNet directly into its sharding: each device computes only its part.

  jit with out_shardings makes XLA generate each tower's random weights on its
  own devices; no full copy is ever materialised on one device.
  """
  spec = model_config if isinstance(model_config, models.ModelSpec) else \
      models.ModelSpec.from_config(model_config)
  check_mesh_fits_model(mesh, spec)
  make = lambda: models.create_model(spec, rngs=nnx.Rngs(params=seed))
  graphdef, abstract_state = nnx.split(nnx.eval_shape(make))
  shardings = state_shardings(abstract_state, mesh)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init():
    return nnx.state(make())

  return nnx.merge(graphdef, init())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over 'data' and replicated over 'model'."""
  return NamedSharding(mesh, P('data'))


# --- where the devices talk --------------------------------------------------

_COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'collective-permute',
                'all-to-all', 'collective-broadcast')
_DTYPE_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 'f64': 8,
                's8': 1, 'u8': 1, 's64': 8, 'u64': 8}
_OP_RE = re.compile(
    r'=\s*(?P<shape>\(.*?\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+'
    r'(?P<op>' + '|'.join(_COLLECTIVES) + r')(?:-start)?\(')
_ARRAY_RE = re.compile(r'([a-z0-9]+)\[([0-9,]*)\]')


def _shape_bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _ARRAY_RE.findall(shape_text):
    size = 1
    for d in filter(None, dims.split(',')):
      size *= int(d)
    total += size * _DTYPE_BYTES.get(dtype, 4)
  return total


def _replica_groups(line: str) -> list[list[int]] | None:
  m = re.search(r'replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?', line)
  if m:
    shape = [int(v) for v in m.group(1).split(',')]
    dims = [int(v) for v in m.group(2).split(',')]
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    if m.group(3):
      ids = ids.transpose([int(v) for v in m.group(3).split(',')])
    return ids.reshape(shape).tolist()
  m = re.search(r'replica_groups=\{((?:\{[0-9,]*\},?)*)\}', line)
  if m:
    return [[int(v) for v in g.split(',') if v] for g in re.findall(r'\{([0-9,]*)\}',
                                                                     m.group(1))]
  m = re.search(r'source_target_pairs=\{((?:\{[0-9,]*\},?)*)\}', line)
  if m:
    return [[int(v) for v in g.split(',')] for g in re.findall(r'\{([0-9,]*)\}', m.group(1))]
  return None


def _axes_of_groups(groups: list[list[int]] | None, mesh: Mesh) -> str:
  """Which mesh axes vary inside the device groups of a collective."""
  if not groups:
    return '?'
  shape = tuple(mesh.devices.shape)
  varying = set()
  for group in groups:
    coords = np.array([np.unravel_index(g, shape) for g in group])
    for i, name in enumerate(mesh.axis_names):
      if len(set(coords[:, i])) > 1:
        varying.add(name)
  return '+'.join(n for n in mesh.axis_names if n in varying) or 'none'


_SCOPES = tuple(sorted(models.LAYERS, key=len, reverse=True))


def _layer_of(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  if not m:
    return 'other'
  parts = m.group(1).split('/')
  for part in parts:
    base = re.sub(r'_(lrn|pool|dropout)$', '', part)
    if base in _SCOPES:
      return base
  return 'other'


def communication_report(hlo_text: str, mesh: Mesh) -> list[dict]:
  """Collectives of a compiled program: layer, op, mesh axes and bytes, one row each.

  Bytes are the per-device result size of the collective (what each device
  receives into), a lower bound on what crosses the interconnect.
  """
  rows = []
  for line in hlo_text.splitlines():
    m = _OP_RE.search(line)
    if not m or line.lstrip().startswith('ROOT') and 'fusion' in line:
      continue
    axes = _axes_of_groups(_replica_groups(line), mesh)
    if axes == 'none':
      continue     # every group is one device (e.g. a 1x1 mesh): nothing is sent
    # XLA combines the per-parameter gradient reductions over 'data' into one
    # all-reduce that carries the metadata of whichever came first: name it for
    # what it is rather than for that layer.
    layer = 'gradients' if axes == 'data' else _layer_of(line)
    rows.append({'layer': layer, 'op': m.group('op'), 'axes': axes,
                 'bytes': _shape_bytes(m.group('shape'))})
  return rows


def summarize_communication(rows: list[dict]) -> list[dict]:
  """Rows grouped by (layer, op, axes): count and total bytes, in layer order."""
  grouped: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
  for r in rows:
    g = grouped[(r['layer'], r['op'], r['axes'])]
    g[0] += 1
    g[1] += r['bytes']
  order = {name: i for i, name in enumerate(models.LAYERS + ('gradients', 'other'))}
  return [{'layer': k[0], 'op': k[1], 'axes': k[2], 'count': v[0], 'bytes': v[1]}
          for k, v in sorted(grouped.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0]))]
