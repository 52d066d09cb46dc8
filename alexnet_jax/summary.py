r"""Prints the model: parameters and their sharding, cost, mesh, and where devices talk.

  python -m alexnet_jax.summary --config=configs/paper.py
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m alexnet_jax.summary --config=configs/paper.py --json

The communication table comes from the compiled HLO of one real training step
(the same jitted function the training loop runs): every collective, the mesh
axis it runs over, and the bytes each device receives. Nothing is executed;
only shapes are built and the step is compiled.
"""

from __future__ import annotations

import json
import math
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from alexnet_jax import input_pipeline, models, sharding, train


def _define_flags() -> None:
  """Command-line flags, defined only when this module is the program (so that
  importing it next to the other entry points never defines a flag twice)."""
  global _CONFIG, _JSON, _BATCH
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (see configs/).',
                                            lock_config=True)
  _JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of tables.')
  _BATCH = flags.DEFINE_integer('batch_size', None, 'Global batch for the compiled step '
                                '(default: the config\'s).')


def compile_train_step(config: ml_collections.ConfigDict, mesh, batch_size: int | None = None):
  """The loop's jitted train step, compiled for abstract inputs."""
  spec = models.ModelSpec.from_config(config.model)
  tx = train.make_optimizer(config)
  state = train.abstract_train_state(config, spec, mesh, tx)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  data, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  b = batch_size or config.batch_size
  r = input_pipeline.host_image_size(config, train=True)
  batch = {'image': jax.ShapeDtypeStruct((b, r, r, 3), np.uint8, sharding=data),
           'label': jax.ShapeDtypeStruct((b,), np.int32, sharding=data)}
  mean_shape = (r, r, 3) if config.input.mean == 'image' else (3,)
  mean = jax.ShapeDtypeStruct(mean_shape, np.float32, sharding=replicated)
  with jax.set_mesh(mesh):
    step = jax.jit(train.make_train_step(config, spec, tx), donate_argnums=0,
                   in_shardings=(shardings, data, replicated),
                   out_shardings=(shardings, replicated))
    return step.lower(state, batch, mean).compile(), state


def summarize(config: ml_collections.ConfigDict, batch_size: int | None = None) -> dict:
  spec = models.ModelSpec.from_config(config.model)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_mesh_fits_model(mesh, spec)
  compiled, state = compile_train_step(config, mesh, batch_size)
  params = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    params.append({'name': '/'.join(str(getattr(k, 'key', k)) for k in path),
                   'shape': list(leaf.shape), 'count': math.prod(leaf.shape),
                   'sharding': str(leaf.sharding.spec)})
  macs = spec.macs_per_image()
  comm = sharding.summarize_communication(
      sharding.communication_report(compiled.as_text(), mesh))
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
    lines.append(f'  {"layer":<10}{"collective":<20}{"axis":<12}{"count":>6}{"bytes":>14}')
    for r in s['communication']:
      lines.append(f'  {r["layer"]:<10}{r["op"]:<20}{r["axes"]:<12}{r["count"]:>6}'
                   f'{r["bytes"]:>14,}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/paper.py')
  s = summarize(_CONFIG.value, _BATCH.value)
  sys.stdout.write((json.dumps(s, indent=1) if _JSON.value else format_tables(s)) + '\n')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
