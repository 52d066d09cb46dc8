"""Reading (and, for tests, writing) Caffe's .caffemodel and .binaryproto files without
Caffe or protoc.

A .caffemodel is a serialised `caffe.NetParameter` (BVLC caffe, src/caffe/proto/caffe.proto).
Only the few fields needed to find each layer's weights are declared, in a descriptor built
here in code; protobuf keeps every other field as unknown bytes. Both layer formats are
read: the current `layer` (LayerParameter, field 100, `type` a string such as
"Convolution") and the old `layers` (V1LayerParameter, field 2, `type` an enum) in which
bvlc_alexnet.caffemodel was written. A blob's shape is `shape.dim` or, in old files, the
4-D (num, channels, height, width). A .binaryproto (a mean image) is one BlobProto.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = 'alexnet_jax_caffe'     # not 'caffe': never clashes with a real caffe_pb2
_F = descriptor_pb2.FieldDescriptorProto

# V1LayerParameter.LayerType values (caffe.proto), the ones an AlexNet file holds.
V1_LAYER_TYPES = {
    'NONE': 0, 'ACCURACY': 1, 'CONCAT': 3, 'CONVOLUTION': 4, 'DATA': 5, 'DROPOUT': 6,
    'FLATTEN': 8, 'IMAGE_DATA': 12, 'INNER_PRODUCT': 14, 'LRN': 15, 'POOLING': 17,
    'RELU': 18, 'SOFTMAX': 20, 'SOFTMAX_LOSS': 21, 'SPLIT': 22,
}


def _field(message, name: str, number: int, kind: int, *, repeated: bool = False,
           type_name: str | None = None, packed: bool = False) -> None:
  f = message.field.add(name=name, number=number, type=kind,
                        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if type_name:
    f.type_name = f'.{_PACKAGE}.{type_name}'
  if packed:
    f.options.packed = True


@functools.cache
def _classes() -> dict[str, type]:
  """The message classes NetParameter, LayerParameter, V1LayerParameter, BlobProto,
  BlobShape (field numbers as in BVLC caffe.proto)."""
  fdp = descriptor_pb2.FileDescriptorProto(name=f'{_PACKAGE}.proto', package=_PACKAGE,
                                           syntax='proto2')
  shape = fdp.message_type.add(name='BlobShape')
  _field(shape, 'dim', 1, _F.TYPE_INT64, repeated=True, packed=True)
  blob = fdp.message_type.add(name='BlobProto')
  _field(blob, 'shape', 7, _F.TYPE_MESSAGE, type_name='BlobShape')
  _field(blob, 'data', 5, _F.TYPE_FLOAT, repeated=True, packed=True)
  _field(blob, 'double_data', 8, _F.TYPE_DOUBLE, repeated=True, packed=True)
  for number, name in enumerate(('num', 'channels', 'height', 'width'), start=1):
    _field(blob, name, number, _F.TYPE_INT32)
  layer = fdp.message_type.add(name='LayerParameter')
  _field(layer, 'name', 1, _F.TYPE_STRING)
  _field(layer, 'type', 2, _F.TYPE_STRING)
  _field(layer, 'blobs', 7, _F.TYPE_MESSAGE, repeated=True, type_name='BlobProto')
  v1 = fdp.message_type.add(name='V1LayerParameter')
  enum = v1.enum_type.add(name='LayerType')
  for name, number in V1_LAYER_TYPES.items():
    enum.value.add(name=name, number=number)
  _field(v1, 'name', 4, _F.TYPE_STRING)
  _field(v1, 'type', 5, _F.TYPE_ENUM, type_name='V1LayerParameter.LayerType')
  _field(v1, 'blobs', 6, _F.TYPE_MESSAGE, repeated=True, type_name='BlobProto')
  net = fdp.message_type.add(name='NetParameter')
  _field(net, 'name', 1, _F.TYPE_STRING)
  _field(net, 'layers', 2, _F.TYPE_MESSAGE, repeated=True, type_name='V1LayerParameter')
  _field(net, 'layer', 100, _F.TYPE_MESSAGE, repeated=True, type_name='LayerParameter')
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  return {m.name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f'{_PACKAGE}.{m.name}')) for m in fdp.message_type}


def net_parameter():
  """An empty NetParameter message (to build test files with)."""
  return _classes()['NetParameter']()


class CaffeModelError(ValueError):
  """The file cannot be read as a .caffemodel."""


def _packed_floats(blob, field: str, dtype: str) -> np.ndarray:
  """A packed repeated field as NumPy without a Python float per element: the field alone
  is serialised (one length-delimited record) and its payload viewed."""
  if not len(getattr(blob, field)):
    return np.zeros(0, dtype)
  only = type(blob)()
  getattr(only, field).MergeFrom(getattr(blob, field))
  raw = only.SerializeToString()
  pos = 1                             # skip the tag (one byte for fields 5 and 8)
  shift = length = 0
  while True:                         # the payload's varint length
    byte = raw[pos]
    length |= (byte & 0x7F) << shift
    pos += 1
    shift += 7
    if byte < 0x80:
      break
  return np.frombuffer(raw, dtype, count=length // np.dtype(dtype).itemsize, offset=pos)


def blob_array(blob, where: str) -> np.ndarray:
  """A BlobProto as a float32 array of its shape (shape.dim, else num/channels/height/width
  with leading 1s dropped: Caffe's legacy 4-D blobs)."""
  if blob.HasField('shape'):
    shape = tuple(int(d) for d in blob.shape.dim)
  else:
    shape = (blob.num, blob.channels, blob.height, blob.width)
    while len(shape) > 1 and shape[0] in (0, 1):
      shape = shape[1:]
  data = _packed_floats(blob, 'data', '<f4')
  if not data.size and len(blob.double_data):
    data = _packed_floats(blob, 'double_data', '<f8')
  size = int(np.prod(shape)) if shape else 0
  if data.size != size:
    raise CaffeModelError(f'{where}: shape {shape} needs {size} values, the file holds '
                          f'{data.size} (truncated or damaged file?)')
  return data.astype(np.float32).reshape(shape)


def read_caffemodel(path: str) -> dict[str, tuple[str, list[np.ndarray]]]:
  """{layer name: (type, [blob arrays])} for every layer of the file with weights."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CaffeModelError(f'{path}: no such file')
  with open(path, 'rb') as f:
    data = f.read()
  net = net_parameter()
  try:
    net.ParseFromString(data)
  except Exception as e:  # noqa: BLE001 - DecodeError and the like
    raise CaffeModelError(f'{path}: cannot be parsed as a Caffe NetParameter ({len(data)} '
                          f'bytes; truncated or not a .caffemodel?): {e}') from None
  layers = [(layer.name, layer.type, layer.blobs) for layer in net.layer]
  type_names = {v: k for k, v in V1_LAYER_TYPES.items()}
  layers += [(layer.name, type_names.get(layer.type, str(layer.type)), layer.blobs)
             for layer in net.layers]
  if not layers:
    raise CaffeModelError(f'{path}: no layers found ({len(data)} bytes): not a .caffemodel, '
                          'or truncated')
  out = {}
  for name, kind, blobs in layers:
    if len(blobs):
      out[name] = (kind, [blob_array(b, f'{path}: layer {name} blob {i}')
                          for i, b in enumerate(blobs)])
  return out


def write_caffemodel(path: str, layers: dict[str, tuple[str, list[np.ndarray]]], *,
                     v1: bool = False, legacy_shapes: bool | None = None) -> None:
  """Writes {name: (type, [arrays])} as a .caffemodel: the current `layer` format (type a
  string such as 'Convolution'), or with v1=True the old `layers` (type a
  V1_LAYER_TYPES name such as 'CONVOLUTION'; blob shapes as num/channels/height/width,
  as bvlc_alexnet.caffemodel). The float payload goes in as bytes, not Python floats."""
  legacy = v1 if legacy_shapes is None else legacy_shapes
  classes = _classes()
  net = net_parameter()
  net.name = 'AlexNet'
  for name, (kind, arrays) in layers.items():
    if v1:
      layer = net.layers.add(name=name, type=V1_LAYER_TYPES[kind])
    else:
      layer = net.layer.add(name=name, type=kind)
    for a in arrays:
      blob = classes['BlobProto']()
      blob.ParseFromString(_blob_bytes(a, legacy))
      layer.blobs.add().CopyFrom(blob)
  with open(path, 'wb') as f:
    f.write(net.SerializeToString())


def _blob_bytes(a: np.ndarray, legacy: bool) -> bytes:
  """A serialised BlobProto of `a`: its shape as shape.dim or (legacy) as
  num/channels/height/width, and the float payload appended as bytes, not Python floats."""
  a = np.ascontiguousarray(a, '<f4')
  head = _classes()['BlobProto']()
  if legacy:
    dims = (1,) * (4 - a.ndim) + a.shape
    head.num, head.channels, head.height, head.width = (int(d) for d in dims)
  else:
    head.shape.dim.extend(int(d) for d in a.shape)
  payload = a.tobytes()
  return head.SerializeToString() + b'\x2a' + _varint(len(payload)) + payload


def read_blobproto(path: str) -> np.ndarray:
  """A .binaryproto file (one serialised BlobProto, such as Caffe's
  imagenet_mean.binaryproto) as a float32 array of its shape (`blob_array`: legacy 4-D
  shapes lose their leading 1s)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CaffeModelError(f'{path}: no such file')
  with open(path, 'rb') as f:
    data = f.read()
  blob = _classes()['BlobProto']()
  try:
    blob.ParseFromString(data)
  except Exception as e:  # noqa: BLE001 - DecodeError and the like
    raise CaffeModelError(f'{path}: cannot be parsed as a Caffe BlobProto ({len(data)} '
                          f'bytes; truncated or not a .binaryproto?): {e}') from None
  return blob_array(blob, path)


def write_blobproto(path: str, array: np.ndarray, *, legacy_shape: bool = True) -> None:
  """Writes `array` as a .binaryproto (for tests): shape as num/channels/height/width as
  Caffe's compute_image_mean writes it, or with legacy_shape=False as shape.dim."""
  with open(path, 'wb') as f:
    f.write(_blob_bytes(array, legacy_shape))


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)
