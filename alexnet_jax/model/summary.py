"""Where the devices talk: the collectives of a compiled program, by layer and mesh axis.

`communication_report` reads the HLO text of a compiled step (e.g.
`steps.build(...).train.lower(...).compile().as_text()`), finds every
collective, the mesh axes its replica groups span, the bytes each device
receives, and the layer it belongs to (from the named scopes the forward pass
puts on its ops, `nets.layer_of_scope`). `summarize` adds the parameter table
and the cost; the `summary` command prints it, and the tests use it to check
that the towers meet only where the paper says.
"""

from __future__ import annotations

import collections
import math
import re

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from alexnet_jax.common import config_lib
from alexnet_jax.model import nets, sharding, steps

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


def _iota(dims_text: str, transpose_text: str | None) -> np.ndarray:
  dims = [int(v) for v in dims_text.split(',')]
  ids = np.arange(int(np.prod(dims))).reshape(dims)
  if transpose_text:
    ids = ids.transpose([int(v) for v in transpose_text.split(',')])
  return ids


def replica_groups(line: str) -> list[list[int]] | None:
  """The device groups of a collective, from any of the HLO spellings XLA uses."""
  # Mesh form: replica_groups=mesh['axis_0'=2,'axis_1'=4], device_ids=([4,2]T(1,0))
  # {'axis_0'}: the devices laid out on those axes; a group varies the named ones.
  m = re.search(r"replica_groups=mesh\[([^\]]*)\], device_ids=\(\[([0-9,]+)\]"
                r"(?:T\(([0-9,]+)\))?\) \{([^}]*)\}", line)
  if m:
    axes = re.findall(r"'([^']+)'=([0-9]+)", m.group(1))
    names, sizes = [a for a, _ in axes], [int(n) for _, n in axes]
    ids = _iota(m.group(2), m.group(3)).reshape(-1).reshape(sizes)
    varying = [names.index(a) for a in re.findall(r"'([^']+)'", m.group(4))]
    fixed = [i for i in range(len(names)) if i not in varying]
    ids = ids.transpose(fixed + varying)
    return ids.reshape(-1, int(np.prod([sizes[i] for i in varying]))).tolist()
  m = re.search(r'replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?', line)
  if m:
    shape = [int(v) for v in m.group(1).split(',')]
    return _iota(m.group(2), m.group(3)).reshape(shape).tolist()
  m = re.search(r'replica_groups=\{((?:\{[0-9,]*\},?)*)\}', line)
  if m:
    return [[int(v) for v in g.split(',') if v] for g in re.findall(r'\{([0-9,]*)\}',
                                                                     m.group(1))]
  m = re.search(r'source_target_pairs=\{((?:\{[0-9,]*\},?)*)\}', line)
  if m:
    return [[int(v) for v in g.split(',')] for g in re.findall(r'\{([0-9,]*)\}', m.group(1))]
  return None


def axes_of_groups(groups: list[list[int]] | None, mesh: Mesh) -> str:
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


def _layer_of(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  if not m:
    return 'other'
  for part in m.group(1).split('/'):
    if part == steps.GUARD_SCOPE:
      return part
    layer = nets.layer_of_scope(part)
    if layer is not None:
      return layer
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
    axes = axes_of_groups(replica_groups(line), mesh)
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
  order = {name: i for i, name in enumerate(nets.LAYERS + ('gradients', steps.GUARD_SCOPE,
                                                                     'other'))}
  return [{'layer': k[0], 'op': k[1], 'axes': k[2], 'count': v[0], 'bytes': v[1]}
          for k, v in sorted(grouped.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0]))]


def summarize(config: ml_collections.ConfigDict, batch_size: int | None = None) -> dict:
  """Parameters with their shardings, multiply-adds, the mesh, and the communication
  of the real training step compiled for `batch_size` (default: the config's)."""
  mesh = sharding.make_mesh(config.mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  built = steps.build(config, spec, mesh)
  state = built.abstract_state()
  batch, mean, lighting = built.abstract_inputs(config, batch_size or config.batch_size)
  with jax.set_mesh(mesh):
    compiled = built.train.lower(state, batch, mean, lighting).compile()
  params = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    params.append({'name': '/'.join(str(getattr(k, 'key', k)) for k in path),
                   'shape': list(leaf.shape), 'count': math.prod(leaf.shape),
                   'sharding': str(leaf.sharding.spec)})
  macs = spec.macs_per_image()
  comm = summarize_communication(communication_report(compiled.as_text(), mesh))
  return {
      'parameters': params,
      'total_parameters': sum(p['count'] for p in params),
      'macs_per_image': macs,
      'total_macs_per_image': sum(macs.values()),
      'gflops_per_image': {'forward': 2 * sum(macs.values()) / 1e9,
                           'train_step': 6 * sum(macs.values()) / 1e9},
      'mesh': {name: int(size) for name, size in mesh.shape.items()},
      'devices': f'{len(mesh.devices.flat)} x {mesh.devices.flat[0].platform}',
      'batch_size': batch_size or config.batch_size,
      'communication': comm,
  }


def format_tables(s: dict) -> str:
  lines = ['Parameters', f'  {"name":<14}{"shape":<24}{"count":>14}  sharding']
  for p in s['parameters']:
    lines.append(f'  {p["name"]:<14}{str(tuple(p["shape"])):<24}{p["count"]:>14,}  '
                 f'{p["sharding"]}')
  lines.append(f'  {"total":<38}{s["total_parameters"]:>14,}')
  lines += ['', 'Multiply-adds per image']
  for name, v in s['macs_per_image'].items():
    lines.append(f'  {name:<10}{v:>16,}')
  g = s['gflops_per_image']
  lines.append(f'  {"total":<10}{s["total_macs_per_image"]:>16,}   ({g["forward"]:.2f} GFLOP '
               f'forward, {g["train_step"]:.2f} GFLOP per training image)')
  mesh = ', '.join(f'{k}={v}' for k, v in s['mesh'].items())
  lines += ['', f'Mesh: {mesh}  ({s["devices"]})', '',
            f'Communication of one training step (global batch {s["batch_size"]})']
  if not s['communication']:
    lines.append('  none: every collective is trivial on this mesh')
  else:
    lines.append(f'  {"layer":<18}{"collective":<20}{"axis":<12}{"count":>6}{"bytes":>14}')
    for r in s['communication']:
      lines.append(f'  {r["layer"]:<18}{r["op"]:<20}{r["axes"]:<12}{r["count"]:>6}'
                   f'{r["bytes"]:>14,}')
  return '\n'.join(lines)
