"""Is what a checkpoint reads what was saved? Array fingerprints and file manifests.

Damage after a save (a bit-flipped file, a partial copy, a truncated upload) can
otherwise load silently as garbage, so `checkpoints` checks every step twice:
- before Orbax reads it, `check_files` compares the step's files with the sizes
  `write_manifest` recorded in <step>/alexnet_jax_files.json once the step was complete
  (a failing read leaves TensorStore callbacks that print tracebacks);
- after, `verify` compares the arrays read with the `fingerprints` saved in the step's JSON
  meta: two position-weighted sums of each array's bits, the same whatever the sharding
  and whether summed on the host or on the devices.
Both raise `Damaged` saying what differs; deciding what to do about it is `checkpoints`'s.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

FINGERPRINT_VERSION = 1
MANIFEST = 'alexnet_jax_files.json'      # in each complete step folder: {file: size}


class Damaged(Exception):
  """What was read is not what was saved (the message says how it differs)."""


def _key_name(path) -> str:
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


_CHUNK = 1 << 22                  # elements per host pass (bounds the temporaries)


def _as_uint32(x: np.ndarray) -> np.ndarray:
  if x.dtype == np.bool_:
    return x.astype(np.uint32)
  size = x.dtype.itemsize
  if size in (1, 2, 4):
    return x.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[size]).astype(np.uint32, copy=False)
  return x.view(np.uint32)      # 8-byte items: two words each (the index below then repeats)


def _block_sums(block: np.ndarray, starts: tuple[int, ...],
                strides: tuple[int, ...]) -> tuple[int, int]:
  """The two sums over one block of an array whose element (i, j, ...) has the global
  index sum(start_k + i_k) * stride_k."""
  u = _as_uint32(np.ascontiguousarray(block))
  index = np.zeros((), np.uint64)
  for k, (start, stride) in enumerate(zip(starts, strides, strict=True)):
    shape = [1] * u.ndim
    shape[k] = u.shape[k]
    index = index + (np.arange(start, start + u.shape[k], dtype=np.uint64)
                     * np.uint64(stride)).reshape(shape)
  index = np.broadcast_to(index, u.shape).astype(np.uint32)
  with np.errstate(over='ignore'):
    a = np.sum(u * (index * np.uint32(2) + np.uint32(1)), dtype=np.uint32)
    mixed = (u ^ (u >> np.uint32(15))) * np.uint32(0x9E3779B1) + index
    b = np.sum(mixed ^ (mixed >> np.uint32(13)), dtype=np.uint32)
  return int(a), int(b)


def _leaf_sums(x) -> tuple[int, int]:
  """Two uint32 sums over the array's bits, weighted by each element's global index.

  Computed on the host from this process's shards (one replica of each), so nothing is
  compiled and a sharded array is never gathered; the result does not depend on the
  sharding, since uint32 sums wrap exactly in any order (`_device_leaf_sums` is the same
  function on the devices). Any single changed element
  changes the first sum (odd weights are invertible mod 2^32); the second mixes high and
  low bits."""
  if isinstance(x, jax.Array):
    parts = [(np.asarray(s.data), s.index) for s in x.addressable_shards if s.replica_id == 0]
  else:
    x = np.asarray(x)
    parts = [(x, ())]
  shape = tuple(np.shape(x))
  strides = [1] * len(shape)
  for k in range(len(shape) - 2, -1, -1):
    strides[k] = strides[k + 1] * shape[k + 1]
  a = b = 0
  for data, index in parts:
    starts = [(sl.start or 0) if isinstance(sl, slice) else 0 for sl in index]
    starts += [0] * (data.ndim - len(starts))
    if data.ndim == 0:
      pa, pb = _block_sums(data, (), ())
      a, b = a + pa, b + pb
      continue
    rows = max(1, _CHUNK // max(1, data[0].size))
    for r in range(0, data.shape[0], rows):
      pa, pb = _block_sums(data[r:r + rows], (starts[0] + r, *starts[1:]), tuple(strides))
      a, b = a + pa, b + pb
  return a % (1 << 32), b % (1 << 32)


def _device_leaf_sums(x: jax.Array) -> jax.Array:
  """`_leaf_sums` on the devices (uint32[2]): the same function, with elementwise ops and
  a full reduction only (no reshape), so a sharded array is never gathered."""
  if x.dtype == jnp.bool_:
    u = x.astype(jnp.uint32)
  else:
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(x.dtype).itemsize]
    u = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  index = jnp.zeros(u.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(u.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, u.shape, axis) * jnp.uint32(stride)
    stride = (stride * u.shape[axis]) % (1 << 32)
  a = jnp.sum(u * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
  mixed = (u ^ (u >> jnp.uint32(15))) * jnp.uint32(0x9E3779B1) + index
  b = jnp.sum(mixed ^ (mixed >> jnp.uint32(13)), dtype=jnp.uint32)
  return jnp.stack([a, b])


@jax.jit
def _device_sums(leaves: list) -> list:
  return [_device_leaf_sums(x) for x in leaves]


def _on_accelerator(leaves: list) -> bool:
  """Whether to fingerprint on the devices: arrays on a GPU/TPU, where one compile (once
  per run) beats copying and summing the state on the host at every save. On CPU the host
  sums need no compile and no copy."""
  return bool(leaves) and all(
      isinstance(x, jax.Array) and x.dtype.itemsize in (1, 2, 4)
      and all(d.platform != 'cpu' for d in x.devices()) for x in leaves)


def fingerprints(tree: Any, *, on_device: bool | None = None) -> dict[str, str]:
  """{'params/conv1/kernel': '<16 hex digits>', ...} for every array of `tree` (summed
  over the processes in a multi-process run: every process calls this together). The
  same values whether computed on the host or on the devices (`on_device`, default: on
  an accelerator), and whatever the arrays' sharding."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  leaves = [x for _, x in flat]
  if on_device if on_device is not None else _on_accelerator(leaves):
    sums = np.asarray(jax.device_get(_device_sums(leaves)), np.uint64).reshape(-1, 2)
  else:
    sums = np.array([_leaf_sums(x) for x in leaves], np.uint64).reshape(-1, 2)
    if jax.process_count() > 1:      # each process summed its own shards (< 2^32 each)
      gathered = multihost_utils.process_allgather(sums.astype(np.uint32))
      sums = np.asarray(gathered, np.uint64).sum(axis=0)
  sums = sums % (1 << 32)
  return {_key_name(path): f'{int(v[0]):08x}{int(v[1]):08x}'
          for (path, _), v in zip(flat, sums, strict=True)}


def verify(tree: Any, meta: dict | None, where: str) -> None:
  """Raises Damaged when an array of `tree` differs from the fingerprint in `meta`
  (restored checkpoints; one written before fingerprints existed is not checked)."""
  saved = (meta or {}).get('fingerprints')
  if saved is None:
    logging.info('%s has no fingerprints (written by an older version): not verified.', where)
    return
  got = fingerprints(tree)
  bad = sorted(k for k, v in got.items() if saved.get(k) != v)
  if bad:
    raise Damaged(f'{len(bad)} of {len(got)} arrays read differ from what was saved '
                   f'({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}): the files '
                   'changed after the save (damaged disk, partial copy?)')


def write_manifest(step_dir: epath.Path) -> None:
  """Records the size of every file of a complete step (process 0; best effort)."""
  try:
    files = {}
    for root, _, names in step_dir.walk():
      for name in names:
        path = root / name
        rel = os.path.relpath(os.fspath(path), os.fspath(step_dir))
        if os.sep in rel:       # the items' files; Orbax may touch the step's own later
          files[rel] = path.stat().length
    tmp = step_dir / f'{MANIFEST}.tmp'
    tmp.write_text(json.dumps({'files': files}))
    tmp.replace(step_dir / MANIFEST)
  except Exception as e:  # noqa: BLE001 - the manifest only makes damage quicker to see
    logging.warning('could not write %s/%s: %s', step_dir, MANIFEST, e)


def check_files(step_dir: epath.Path) -> None:
  """Raises Damaged when a file the step's manifest lists is missing or changed size."""
  try:
    files = json.loads((step_dir / MANIFEST).read_text())['files']
  except FileNotFoundError:
    return                    # killed before it was written, or an older version
  except (ValueError, KeyError) as e:
    raise Damaged(f'its file list {MANIFEST} is damaged ({e})') from None
  for rel, size in sorted(files.items()):
    path = step_dir / rel
    if not path.exists():
      raise Damaged(f'file {rel} is missing')
    actual = path.stat().length
    if actual != size:
      raise Damaged(f'file {rel} is {actual} bytes, {size} when written (truncated or '
                     'overwritten)')
