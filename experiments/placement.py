"""Where the parallel runs of `experiments.ablations --parallel=N` go: one per accelerator.

Without this, N training processes started side by side on one machine each take every
accelerator JAX finds: on a GPU each preallocates 75% of its memory, so the second runs
out of memory or both crawl. So each run gets its own devices through the environment of
its subprocess: on GPUs an equal share of them (CUDA_VISIBLE_DEVICES), on a TPU VM one
chip (TPU_VISIBLE_CHIPS and the bounds that make a chip a whole machine to JAX; runs
given several chips would need bounds that depend on the chips' layout). More runs than
accelerators are refused, with the reason: runs sharing a GPU compete for its memory and
its compute, which makes a sweep no faster. On CPU there is nothing to place: the runs
share the cores, as before.

The accelerators are counted by a short subprocess that asks JAX itself (so
CUDA_VISIBLE_DEVICES, JAX_PLATFORMS and whether the installed jaxlib has GPU support all
count), with preallocation off, and that exits before any run starts: the parent never
holds accelerator memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

_PROBE = '''
import json, jax
devices = jax.devices()
print(json.dumps({
    'platform': devices[0].platform,
    'devices': len(devices),
    # TPU v2/v3 show each chip as 2 devices (cores 0 and 1); later ones as 1.
    'chips': sum(1 for d in devices if getattr(d, 'core_on_chip', 0) == 0)}))
'''
TPU_BASE_PORT = 8476     # the TPU runtime's default port; run i uses TPU_BASE_PORT + i


class PlacementError(ValueError):
  """--parallel asks for more runs than there are accelerators (the message says what to
  do instead)."""


@dataclasses.dataclass(frozen=True)
class Accelerators:
  """What JAX would see in a run: platform 'cpu', 'gpu' or 'tpu' and the ids a run's
  environment selects them by (GPU indices or UUIDs; TPU chip indices)."""

  platform: str
  ids: tuple[str, ...] = ()


def _visible(variable: str, count: int) -> tuple[str, ...]:
  """The ids of `count` devices, as the parent's own visibility variable lists them (so a
  run never sees a device the sweep was not given), else 0 .. count-1."""
  listed = [x.strip() for x in os.environ.get(variable, '').split(',') if x.strip()]
  return tuple(listed[:count]) if len(listed) >= count else tuple(map(str, range(count)))


def probe(timeout: float = 300) -> Accelerators:
  """The accelerators a run would get, from a JAX subprocess that holds no memory."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false', TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True,
                       text=True, timeout=timeout)
  if out.returncode != 0:
    tail = ' '.join(out.stderr.split()[-40:])
    raise PlacementError(f'could not count the accelerators (python -c "import jax; '
                         f'jax.devices()" failed: {tail})')
  found = json.loads(out.stdout.strip().splitlines()[-1])
  if found['platform'] in ('gpu', 'cuda', 'rocm'):
    return Accelerators('gpu', _visible('CUDA_VISIBLE_DEVICES', found['devices']))
  if found['platform'] == 'tpu':
    return Accelerators('tpu', _visible('TPU_VISIBLE_CHIPS', found['chips']))
  return Accelerators('cpu')


def slots(parallel: int, accelerators: Accelerators) -> list[dict[str, str]]:
  """The extra environment of each of `parallel` concurrent runs (one dict per slot; a
  run takes a free slot and gives it back when it ends). Raises PlacementError when there
  are fewer accelerators than runs."""
  if parallel <= 1 or accelerators.platform == 'cpu':
    return [{} for _ in range(max(parallel, 1))]
  ids, kind = accelerators.ids, accelerators.platform.upper()
  if parallel > len(ids):
    raise PlacementError(
        f'--parallel={parallel} but JAX sees {len(ids)} {kind}(s): one run per {kind} at '
        f'most (runs sharing one would each preallocate 75% of its memory and take turns on '
        f'it, no faster than one after the other); use --parallel={len(ids)}')
  if accelerators.platform == 'gpu':
    share = len(ids) // parallel
    return [{'CUDA_VISIBLE_DEVICES': ','.join(ids[i * share:(i + 1) * share])}
            for i in range(parallel)]
  # Each run its own chip and port; older TPU runtimes read the *_DEVICES / MESH_* names.
  return [{'TPU_VISIBLE_CHIPS': ids[i], 'TPU_VISIBLE_DEVICES': ids[i],
           'TPU_CHIPS_PER_PROCESS_BOUNDS': '1,1,1', 'TPU_PROCESS_BOUNDS': '1,1,1',
           'TPU_PROCESS_PORT': str(TPU_BASE_PORT + i),
           'TPU_PROCESS_ADDRESSES': f'localhost:{TPU_BASE_PORT + i}',
           'TPU_MESH_CONTROLLER_PORT': str(TPU_BASE_PORT + i),
           'TPU_MESH_CONTROLLER_ADDRESS': f'localhost:{TPU_BASE_PORT + i}'}
          for i in range(parallel)]


def describe(slot_envs: list[dict[str, str]], accelerators: Accelerators) -> str:
  """One line saying where the runs go (printed before the sweep starts)."""
  if accelerators.platform == 'cpu':
    return f'{len(slot_envs)} runs at a time on the CPU (sharing its cores)'
  key = 'CUDA_VISIBLE_DEVICES' if accelerators.platform == 'gpu' else 'TPU_VISIBLE_CHIPS'
  given = [env[key] for env in slot_envs]
  idle = len(accelerators.ids) - sum(len(g.split(',')) for g in given)
  return (f'{len(slot_envs)} runs at a time, each on its own {key}: {" / ".join(given)}'
          + (f' ({idle} {accelerators.platform.upper()}(s) left idle)' if idle else ''))
