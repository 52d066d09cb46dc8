"""PyTorch's `.pth` state dicts read and written without PyTorch.

A state dict saved by `torch.save` is a pickle that rebuilds tensors from raw storages.
Unpickling runs whatever callables the file names, so a `.pth` file from the internet is
code. Here the pickle is read by an unpickler that accepts exactly the globals a state dict
of tensors needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the
typed storage classes) and refuses every other name, so a hostile file fails with the name
it asked for and nothing of it runs. Tensors come back as NumPy arrays.

Two container formats are read:
- the zip archive of torch >= 1.6 (`<prefix>/data.pkl`, one `<prefix>/data/<key>` record
  per storage, `<prefix>/byteorder`);
- the legacy stream of torch < 1.6, which published files such as torchvision's
  `alexnet-owt-7be5be79.pth` use: pickles of the magic number, protocol version and system
  info, then the object, then the list of storage keys, then each storage as an int64
  element count followed by its bytes.

`save_state_dict` writes the zip format (protocol 2, storages aligned to 64 bytes as torch
does) that `torch.load(weights_only=True)` reads back exactly.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_ALIGN = 64

# torch's typed storage classes and their element types.
STORAGE_DTYPES: dict[str, np.dtype] = {
    'FloatStorage': np.dtype('float32'),
    'DoubleStorage': np.dtype('float64'),
    'HalfStorage': np.dtype('float16'),
    'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
    'LongStorage': np.dtype('int64'),
    'IntStorage': np.dtype('int32'),
    'ShortStorage': np.dtype('int16'),
    'CharStorage': np.dtype('int8'),
    'ByteStorage': np.dtype('uint8'),
    'BoolStorage': np.dtype('bool'),
}
_STORAGE_OF_DTYPE = {v: k for k, v in STORAGE_DTYPES.items()}


class TorchFileError(ValueError):
  """A file that is not a readable state dict of tensors (or asks for more than one)."""


class _StorageType:
  """Stands for `torch.<Name>Storage` inside the pickle."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple,
                    requires_grad: bool = False, backward_hooks: Any = None,
                    metadata: Any = None) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2` for NumPy: a strided view of the storage, copied."""
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if any(s < 0 for s in size + stride) or offset < 0:
    raise TorchFileError(f'a tensor with negative size, stride or offset ({size}, {stride})')
  last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else 0
  if all(size) and last >= storage.size:
    raise TorchFileError(f'a tensor of size {size} reaches element {last} of a storage of '
                         f'{storage.size}: the file is truncated or damaged')
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
  return collections.OrderedDict(*args)


_ALLOWED = {
    ('collections', 'OrderedDict'): _ordered_dict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
}


class _Unpickler(pickle.Unpickler):
  """Accepts ordered dicts, tensors and storages; every other global is refused."""

  def __init__(self, file: BinaryIO, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise TorchFileError(
        f'refusing to load {module}.{name}: a weights file may hold only tensors in '
        '(ordered) dicts, and unpickling anything else would run code from the file')

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType)):
      raise TorchFileError(f'unexpected persistent id {pid!r:.80}: not a tensor storage')
    return self._load_storage(pid[1].dtype, str(pid[2]), int(pid[4]))


def _state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
  if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
    obj = obj['state_dict']      # a training checkpoint that wraps its state dict
  if not isinstance(obj, Mapping):
    raise TorchFileError(f'{source}: holds a {type(obj).__name__}, not a state dict')
  out = {}
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      raise TorchFileError(f'{source}: entry {k!r} is a {type(v).__name__}, not a tensor')
    out[str(k)] = v
  return out


def _read_zip(f: BinaryIO, source: str) -> Any:
  with zipfile.ZipFile(f) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
    if not pkl:
      raise TorchFileError(f'{source}: a zip file without <prefix>/data.pkl: not a torch file')
    prefix = pkl[0][:-len('data.pkl')]
    order = '<'
    if prefix + 'byteorder' in names and z.read(prefix + 'byteorder').strip() == b'big':
      order = '>'
    storages: dict[str, np.ndarray] = {}

    def load_storage(dtype: np.dtype, key: str, numel: int) -> np.ndarray:
      if key not in storages:
        try:
          raw = z.read(f'{prefix}data/{key}')
        except KeyError:
          raise TorchFileError(f'{source}: storage {key} is missing: truncated file') from None
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder(order) if dtype.itemsize > 1
                            else dtype)
        if arr.size < numel:
          raise TorchFileError(f'{source}: storage {key} holds {arr.size} of its {numel} '
                               'elements: truncated file')
        storages[key] = arr.astype(dtype, copy=False)
      return storages[key]

    with z.open(pkl[0]) as p:
      return _Unpickler(p, load_storage).load()


def _read_legacy(f: BinaryIO, source: str) -> Any:
  def plain(what: str) -> Any:
    return _Unpickler(f, _no_storage(what)).load()

  if plain('the magic number') != LEGACY_MAGIC:
    raise TorchFileError(f'{source}: neither a zip archive nor a legacy torch file')
  plain('the protocol version')
  sys_info = plain('the system info')
  little = not isinstance(sys_info, dict) or sys_info.get('little_endian', True)
  wanted: dict[str, tuple[np.dtype, int]] = {}
  views: dict[str, np.ndarray] = {}

  def load_storage(dtype: np.dtype, key: str, numel: int) -> np.ndarray:
    # Storages follow the object: hand out placeholders now, fill them in below.
    if key not in views:
      wanted[key] = (dtype, numel)
      views[key] = np.zeros(numel, dtype=dtype)
    return views[key]

  # Tensors are rebuilt (copied) while the object is unpickled, before the storages' bytes
  # are read; so rebuild lazily: record the calls and replay them once the bytes are in.
  pending: list[tuple[dict, Any, tuple]] = []

  class Lazy(_Unpickler):
    def find_class(self, module, name):
      found = super().find_class(module, name)
      if found is _rebuild_tensor:
        return lambda *args: _LazyTensor(args, pending)
      return found

  obj = Lazy(f, load_storage).load()
  keys = plain('the storage keys')
  for key in keys:
    if key not in wanted:
      raise TorchFileError(f'{source}: storage {key} is listed but never used')
    dtype, numel = wanted[key]
    head = f.read(8)
    if len(head) < 8:
      raise TorchFileError(f'{source}: storage {key} is missing: truncated file')
    (count,) = struct.unpack('<q' if little else '>q', head)
    raw = f.read(count * dtype.itemsize)
    if count < numel or len(raw) < count * dtype.itemsize:
      raise TorchFileError(f'{source}: storage {key} is truncated')
    arr = np.frombuffer(raw, dtype=dtype.newbyteorder('<' if little else '>')
                        if dtype.itemsize > 1 else dtype)
    views[key][:] = arr[:numel]
  return _resolve(obj)


class _LazyTensor:
  def __init__(self, args: tuple, pending: list):
    self.args = args
    pending.append(self)

  def build(self) -> np.ndarray:
    return _rebuild_tensor(*self.args)


def _resolve(obj: Any) -> Any:
  if isinstance(obj, _LazyTensor):
    return obj.build()
  if isinstance(obj, dict):
    for k in list(obj):
      obj[k] = _resolve(obj[k])
  return obj


def _no_storage(what: str):
  def refuse(dtype, key, numel):
    raise TorchFileError(f'a tensor storage inside {what}: not a torch file')
  return refuse


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a `.pth`/`.pt` state dict, in the file's order, as NumPy arrays."""
  source = os.fspath(path)
  with open(source, 'rb') as f:
    data = f.read()
  try:
    if zipfile.is_zipfile(io.BytesIO(data)):
      obj = _read_zip(io.BytesIO(data), source)
    else:
      obj = _read_legacy(io.BytesIO(data), source)
  except TorchFileError:
    raise
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
          TypeError, IndexError, KeyError, AttributeError) as e:
    raise TorchFileError(f'{source}: not a readable torch state dict ({type(e).__name__}: '
                         f'{" ".join(str(e).split())[:160]})') from None
  return _state_dict(obj, source)


# ---------------------------------------------------------------------------- writing


def _unicode(s: str) -> bytes:
  b = s.encode('utf-8')
  return b'X' + struct.pack('<I', len(b)) + b


def _int(n: int) -> bytes:
  if 0 <= n < 256:
    return b'K' + bytes([n])
  if -(2 ** 31) <= n < 2 ** 31:
    return b'J' + struct.pack('<i', n)
  raw = n.to_bytes((n.bit_length() + 8) // 8, 'little', signed=True)
  return b'\x8a' + bytes([len(raw)]) + raw


def _tuple(items: list[bytes]) -> bytes:
  return b'(' + b''.join(items) + b't'


def _global(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode('ascii')


def _pickle_state_dict(state: Mapping[str, np.ndarray]) -> bytes:
  """Protocol-2 opcodes for OrderedDict(key -> _rebuild_tensor_v2(storage, ...))."""
  out = [b'\x80\x02', _global('collections', 'OrderedDict'), b')R(']
  for i, (key, arr) in enumerate(state.items()):
    storage = _STORAGE_OF_DTYPE[arr.dtype]
    stride, s = [], 1
    for n in reversed(arr.shape):
      stride.insert(0, s)
      s *= n
    pid = _tuple([_unicode('storage'), _global('torch', storage), _unicode(str(i)),
                  _unicode('cpu'), _int(arr.size)]) + b'Q'
    args = _tuple([pid, _int(0), _tuple([_int(n) for n in arr.shape]),
                   _tuple([_int(n) for n in stride]), b'\x89',
                   _global('collections', 'OrderedDict') + b')R'])
    out.append(_unicode(key) + _global('torch._utils', '_rebuild_tensor_v2') + args + b'R')
  out.append(b'u.')
  return b''.join(out)


def _write_aligned(z: zipfile.ZipFile, f: BinaryIO, name: str, data: bytes) -> None:
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  header = 30 + len(name.encode('utf-8'))
  pad = (-(f.tell() + header + 4)) % _ALIGN
  # An extra field of an unassigned id ('FB', as torch's writer uses) that only pads.
  info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
  z.writestr(info, data)


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes `state` as torch's zip format; `torch.load(path, weights_only=True)` reads it
  back as an OrderedDict of tensors with the same keys, order, dtypes and values."""
  arrays = collections.OrderedDict()
  for k, v in state.items():
    a = np.array(v, order='C', copy=None)   # 0-d stays 0-d (ascontiguousarray makes it 1-d)
    if a.dtype not in _STORAGE_OF_DTYPE:
      raise TorchFileError(f'{k}: dtype {a.dtype} has no torch storage type')
    arrays[str(k)] = a.astype(a.dtype.newbyteorder('<'), copy=False)
  prefix = os.path.splitext(os.path.basename(os.fspath(path)))[0] or 'archive'
  with open(path, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as z:
    _write_aligned(z, f, f'{prefix}/data.pkl', _pickle_state_dict(arrays))
    _write_aligned(z, f, f'{prefix}/byteorder', b'little')
    for i, a in enumerate(arrays.values()):
      _write_aligned(z, f, f'{prefix}/data/{i}', a.tobytes())
    _write_aligned(z, f, f'{prefix}/version', b'3\n')
