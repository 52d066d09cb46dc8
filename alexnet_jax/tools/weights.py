"""Published AlexNet weights in and out: torchvision's state dict and Caffe's bvlc_alexnet;
and any run's own parameters out, by its own layer names (`export_params`).

The library of `python -m alexnet_jax.weights`. An import turns a weights file into a
workdir that every command accepts like a trained run's: `config.json` (a full config,
`config_lib.validate` accepts it) and, through the project's own `Checkpointer` (so the
fingerprints and file manifests are there), the train state at step 0 in `checkpoints/0`
(what `--config.init_from=DIR` and a resumed `main` read; momentum zero) and the
parameters in `best/0` (what `evaluate` and `predict` read by default).

torchvision (`alexnet(weights=IMAGENET1K_V1)`, 61,100,840 parameters) maps onto
configs/one_tower.py; every tensor is a pure permutation, so export is its exact inverse:
- conv kernels OIHW -> the project's HWIO with a leading tower axis of 1;
- fc6's input rows: torchvision flattens pool5 as (C, H, W), the project as (H, W, C);
- fc kernels (out, in) -> (in, out);
- the normalisation x = (p/255 - mean)/std is the config's pipeline, not the weights:
  input.mean='constant' with mean_rgb = 255 mean, input.std_rgb = 255 std (folding 1/std
  into conv1's kernel could not be undone to the bit, and would train conv1 at ~3000x
  torchvision's effective learning rate);
- conv1 padding 2 at 224 (the model's own rule for 224 inputs), resize 256 + centre 224;
- dropout before fc6 and fc7, inverted (model.dropout_placement='torchvision',
  model.dropout_scaling='inverted'): only training sees it.

Caffe's bvlc_alexnet (the paper's two-group net; `caffe_io` reads the file) maps onto the
two-tower model of configs/paper.py: `group: 2` layers (conv2, conv4, conv5) put the first
half of their output channels (and of their input channels) on tower 0; conv3, fc6, fc7
read both towers in Caffe's channel order; fc6 reads pool5 as (C, H, W); fc8's input rows
split by tower. conv1 reads BGR in Caffe: its input-channel axis is reversed here so the
pipeline stays RGB, and Caffe's mean (B, G, R = 104.007, 116.669, 122.679) is stored in
RGB order; or, given its mean image (imagenet_mean.binaryproto, `read_caffe_mean`), that
image in RGB order with Caffe's geometry: every image squashed to 256 x 256, minus the image,
then the 227 crops. LRN k=1, alpha/n, n=5 across all 96/256 channels (lrn='caffe',
lrn_across_towers=True), input 227 without padding, inverted dropout after fc6 and fc7.

A run of a CIFAR-10 net (model.arch != 'alexnet', model/cifar.py) has other layers (conv1,
conv2, local3, local4, fc10, ...): neither torchvision's AlexNet nor bvlc_alexnet can hold
it, so `export_torchvision` refuses it naming the arch; `export_params` writes any run's
parameters as they are, '<layer>.kernel' / '<layer>.bias' in the project's layouts (.npz,
.safetensors or .pth).
"""

from __future__ import annotations

import collections
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from safetensors.numpy import load_file, save_file

from alexnet_jax.common import config_lib
from alexnet_jax.common.model_spec import CONV_GEOMETRY, LAYERS, ModelSpec
from alexnet_jax.data import statistics
from alexnet_jax.model import nets, optimizer, sharding, steps
from alexnet_jax.run import checkpoints
from alexnet_jax.run import workdir as workdir_lib
from alexnet_jax.tools import caffe as caffe_io
from alexnet_jax.tools import torch_file

# torchvision.models.alexnet's ImageNet normalisation (inputs in [0, 1]).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
# Caffe's bvlc_alexnet mean (ilsvrc_2012_mean averaged per channel), B, G, R in 0-255.
CAFFE_MEAN_BGR = (104.007, 116.669, 122.679)

# torchvision's state dict: key -> (layer, 'kernel' | 'bias'), in its order.
_TV_LAYERS = (('features.0', 'conv1'), ('features.3', 'conv2'), ('features.6', 'conv3'),
              ('features.8', 'conv4'), ('features.10', 'conv5'), ('classifier.1', 'fc6'),
              ('classifier.4', 'fc7'), ('classifier.6', 'fc8'))
_CAFFE_GROUPED = ('conv2', 'conv4', 'conv5')   # group: 2 in bvlc_alexnet


class WeightsError(ValueError):
  """A weights file that is not the expected architecture, or cannot be read."""


def _shape(shape) -> str:
  return '(' + ', '.join(str(int(d)) for d in shape) + ')'


# ------------------------------------------------------------------------------ configs


def torchvision_config() -> ml_collections.ConfigDict:
  """configs/one_tower.py (`config_lib.one_tower`) with torchvision's preprocessing and
  dropout."""
  c = config_lib.one_tower()
  c.model.input_size = 224                    # conv1 padding 2 (nets.ModelSpec.conv1_pad)
  c.model.dropout_placement = 'torchvision'
  c.model.dropout_scaling = 'inverted'
  c.input.mean = 'constant'
  c.input.mean_rgb = tuple(255.0 * m for m in TORCHVISION_MEAN)
  c.input.std_rgb = tuple(255.0 * s for s in TORCHVISION_STD)
  c.input.scale = 1.0
  c.input.resize_size = 256                   # Resize(256) + CenterCrop(224)
  c.input.resize_method = 'bilinear'          # PIL's antialiased bilinear, as torchvision
  c.input.random_crop = 'resized'             # RandomResizedCrop(224) for fine-tuning
  c.input.pca_lighting = 0.0
  return c


def caffe_config(mean_image: np.ndarray | None = None) -> ml_collections.ConfigDict:
  """configs/paper.py with bvlc_alexnet's differences: Caffe LRN across the towers, 227
  inputs, Caffe's per-channel mean (RGB order here), init and inverted dropout.

  With `mean_image` (`read_caffe_mean`: float32 [R, R, 3], RGB) the inputs are Caffe's own:
  every image squashed to R x R (input.resize_mode='squash', what bvlc_alexnet was trained
  and tested on) minus that image (input.mean='image'; the image itself goes in the
  workdir's preprocessing.npz), then cropped. input.mean_rgb becomes its per-channel average,
  so that --config.input.mean=constant stays Caffe's mean.
  """
  c = config_lib.base()
  c.model.lrn = 'caffe'
  c.model.lrn_across_towers = True
  c.model.input_size = 227
  c.model.init = 'caffe'
  c.model.dropout_scaling = 'inverted'
  c.input.mean = 'constant'
  c.input.mean_rgb = tuple(reversed(CAFFE_MEAN_BGR))
  if mean_image is not None:
    c.input.mean = 'image'
    c.input.resize_mode = 'squash'
    c.input.resize_size = int(mean_image.shape[0])
    c.input.mean_rgb = tuple(float(v) for v in mean_image.mean(axis=(0, 1), dtype=np.float64))
  c.input.pca_lighting = 0.0
  c.optimizer.decay_biases = False
  return c


# ------------------------------------------------------------------------------ torchvision


def torchvision_shapes(spec) -> dict[str, tuple[int, ...]]:
  """torchvision's state-dict keys and shapes for a one-tower `spec` (AlexNet: 16)."""
  s5 = spec.spatial_sizes()['pool5']
  c = spec.conv_widths
  out = collections.OrderedDict()
  ins = (3,) + tuple(c[:4])
  for i, (key, layer) in enumerate(_TV_LAYERS[:5]):
    k = CONV_GEOMETRY[layer][0]
    out[f'{key}.weight'] = (c[i], ins[i], k, k)
    out[f'{key}.bias'] = (c[i],)
  fc_in = (c[4] * s5 * s5, spec.fc_widths[0], spec.fc_widths[1])
  fc_out = (spec.fc_widths[0], spec.fc_widths[1], spec.num_classes)
  for (key, _), n_in, n_out in zip(_TV_LAYERS[5:], fc_in, fc_out, strict=True):
    out[f'{key}.weight'] = (n_out, n_in)
    out[f'{key}.bias'] = (n_out,)
  return out


def check_tensors(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                  what: str, source: str) -> None:
  """Refuses unless `found` has exactly the keys and shapes of `expected`; the message
  lists each missing key (with the expected shape), unexpected key and wrong shape."""
  missing = [k for k in expected if k not in found]
  extra = [k for k in found if k not in expected]
  wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
  if not (missing or extra or wrong):
    return
  lines = []
  for k in wrong:
    lines.append(f'  {k}: expected shape {_shape(expected[k])}, found {_shape(found[k])}')
  for k in missing[:8]:
    lines.append(f'  {k}: expected shape {_shape(expected[k])}, missing')
  if len(missing) > 8:
    lines.append(f'  ... and {len(missing) - 8} more missing')
  for k in extra[:8]:
    lines.append(f'  {k}: not expected (shape {_shape(found[k])})')
  if len(extra) > 8:
    lines.append(f'  ... and {len(extra) - 8} more not expected')
  raise WeightsError(f'{source} is not {what}:\n' + '\n'.join(lines))


def read_torchvision(path: str) -> dict[str, np.ndarray]:
  """A state dict from a .safetensors file or a .pth/.pt file, as NumPy arrays in the
  file's order. Neither needs torch: `.pth` files go through `torch_file`'s restricted
  unpickler, so a file from the internet can hold tensors and nothing that runs."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise WeightsError(f'{path}: no such file')
  if path.endswith('.safetensors'):
    try:
      tensors = load_file(path)
    except Exception as e:  # noqa: BLE001 - any failure: not a readable file
      raise WeightsError(f'{path}: cannot be read as a safetensors file (truncated or not '
                         f'safetensors?): {" ".join(str(e).split())[:300]}') from None
  else:
    try:
      tensors = torch_file.load_state_dict(path)
    except torch_file.TorchFileError as e:
      raise WeightsError(f'{path}: cannot be read as a PyTorch state dict (truncated or not a '
                         f'.pth file?): {" ".join(str(e).split())[:300]}') from None
  return {k: np.asarray(v) for k, v in tensors.items()}


def torchvision_to_params(state: dict[str, np.ndarray], spec, source: str = 'the file'
                          ) -> dict[str, dict[str, np.ndarray]]:
  """torchvision's state dict -> the project's parameters for the one-tower `spec`."""
  if spec.towers != 1:
    raise WeightsError(f'torchvision weights need a one-tower model, got towers={spec.towers}')
  check_tensors({k: v.shape for k, v in state.items()}, torchvision_shapes(spec),
                "torchvision's AlexNet state dict", source)
  for k, v in state.items():
    if v.dtype != np.float32:
      raise WeightsError(f'{source}: {k} is {v.dtype}, expected float32')
  s5 = spec.spatial_sizes()['pool5']
  params = {}
  for key, layer in _TV_LAYERS:
    w, b = state[f'{key}.weight'], state[f'{key}.bias']
    if layer.startswith('conv'):
      kernel = w.transpose(2, 3, 1, 0)[None]                    # OIHW -> 1, H, W, I, O
    elif layer == 'fc6':
      n_out = w.shape[0]
      kernel = (w.reshape(n_out, -1, s5, s5).transpose(2, 3, 1, 0)   # rows (C,H,W) -> (H,W,C)
                .reshape(-1, n_out)[None])
    else:
      kernel = w.T[None]
    bias = b if layer == 'fc8' else b[None]
    params[layer] = {'kernel': np.ascontiguousarray(kernel), 'bias': np.ascontiguousarray(bias)}
  return params


def params_to_torchvision(params: dict, spec) -> dict[str, np.ndarray]:
  """The exact inverse of `torchvision_to_params`: torchvision's keys, shapes and order."""
  if spec.towers != 1:
    raise WeightsError(f'torchvision has one tower; this run has towers={spec.towers}')
  s5 = spec.spatial_sizes()['pool5']
  out = collections.OrderedDict()
  for key, layer in _TV_LAYERS:
    kernel = np.asarray(params[layer]['kernel'])[0]
    bias = np.asarray(params[layer]['bias'])
    if layer.startswith('conv'):
      w = kernel.transpose(3, 2, 0, 1)
    elif layer == 'fc6':
      n_out = kernel.shape[-1]
      w = kernel.reshape(s5, s5, -1, n_out).transpose(3, 2, 0, 1).reshape(n_out, -1)
    else:
      w = kernel.T
    out[f'{key}.weight'] = np.ascontiguousarray(w, np.float32)
    out[f'{key}.bias'] = np.ascontiguousarray(bias if layer == 'fc8' else bias[0], np.float32)
  check_tensors({k: v.shape for k, v in out.items()}, torchvision_shapes(spec),
                "torchvision's AlexNet", 'the exported state dict')
  return out


def write_torchvision(state: dict[str, np.ndarray], path: str) -> None:
  """.safetensors (safetensors.numpy) or .pth/.pt (`torch_file`: torch's zip format, which
  `torch.load(weights_only=True)` reads back exactly), without torch."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith('.safetensors'):
    save_file(dict(state), path)
  elif path.endswith(('.pth', '.pt')):
    torch_file.save_state_dict(collections.OrderedDict(
        (k, np.asarray(v)) for k, v in state.items()), path)
  else:
    raise WeightsError(f'--out={path}: the suffix must be .pth, .pt or .safetensors')


# ------------------------------------------------------------------------------ caffe


def caffe_shapes(spec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """bvlc_alexnet's layers: name -> (weight shape, bias shape), for the two-tower `spec`."""
  c, t = spec.conv_widths, spec.towers
  s5 = spec.spatial_sizes()['pool5']
  ins = (3,) + tuple(c[:4])
  out = {}
  for i, layer in enumerate(LAYERS[:5]):
    k = CONV_GEOMETRY[layer][0]
    groups = t if layer in _CAFFE_GROUPED else 1
    out[layer] = ((c[i], ins[i] // groups, k, k), (c[i],))
  fc_in = (c[4] * s5 * s5, spec.fc_widths[0], spec.fc_widths[1])
  fc_out = (spec.fc_widths[0], spec.fc_widths[1], spec.num_classes)
  for layer, n_in, n_out in zip(LAYERS[5:], fc_in, fc_out, strict=True):
    out[layer] = ((n_out, n_in), (n_out,))
  return out


def caffe_to_params(blobs: dict[str, list[np.ndarray]], spec, source: str = 'the file'
                    ) -> dict[str, dict[str, np.ndarray]]:
  """bvlc_alexnet's blobs {layer: [weight, bias]} (Caffe's shapes, `caffe_io`) -> the
  project's parameters for the two-tower `spec` (see the module docstring)."""
  if spec.towers != 2:
    raise WeightsError(f'bvlc_alexnet has two groups; the model needs towers=2, got '
                       f'{spec.towers}')
  expected = caffe_shapes(spec)
  found, want = {}, {}
  for layer, (w_shape, b_shape) in expected.items():
    want[f'{layer} weights'], want[f'{layer} bias'] = w_shape, b_shape
  for layer, arrays in blobs.items():
    names = [f'{layer} weights', f'{layer} bias'] + [f'{layer} blob {i}'
                                                    for i in range(2, len(arrays))]
    for name, a in zip(names, arrays, strict=False):
      found[name] = a.shape
  check_tensors(found, want, "bvlc_alexnet (Caffe's two-group AlexNet)", source)
  t = spec.towers
  s5 = spec.spatial_sizes()['pool5']
  params = {}
  for layer in LAYERS:
    w, b = blobs[layer]
    n_out = w.shape[0]
    if layer == 'conv1':
      w = w[:, ::-1]                                   # BGR -> RGB input channels
    if layer.startswith('conv'):
      # Output channels t * n/2 ... of every layer are tower t; a grouped layer's inputs
      # are its group's own (the tower's), conv3's all of pool2 in Caffe's order.
      kernel = w.reshape(t, n_out // t, *w.shape[1:]).transpose(0, 3, 4, 2, 1)
    elif layer == 'fc6':
      per = n_out // t
      kernel = w.reshape(t, per, -1, s5, s5).transpose(0, 3, 4, 2, 1).reshape(t, -1, per)
    elif layer == 'fc7':
      kernel = w.reshape(t, n_out // t, -1).transpose(0, 2, 1)
    else:                                              # fc8: rows of each tower's fc7 units
      kernel = w.T.reshape(t, -1, n_out)
    bias = b if layer == 'fc8' else b.reshape(t, -1)
    params[layer] = {'kernel': np.ascontiguousarray(kernel, np.float32),
                     'bias': np.ascontiguousarray(bias, np.float32)}
  return params


def read_caffe_mean(path: str, *, min_size: int = 227) -> np.ndarray:
  """A Caffe mean image (.binaryproto: a BlobProto of shape (1, 3, R, R), channels B, G, R in
  0-255; Caffe's imagenet_mean.binaryproto, the ILSVRC-2012 mean, has R = 256) -> float32
  [R, R, 3] in RGB order, the order the importer gives conv1's input channels. Square and at
  least `min_size` (the crop), because the pipeline squashes every image to one R x R square
  and crops the model's input from it."""
  try:
    blob = caffe_io.read_blobproto(path)
  except caffe_io.CaffeModelError as e:
    raise WeightsError(f'--mean={e}') from None
  shape = blob.shape[1:] if blob.ndim == 4 and blob.shape[0] == 1 else blob.shape
  if (len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or shape[1] < min_size):
    raise WeightsError(
        f'--mean={path}: expected a Caffe mean image, a BlobProto of shape (1, 3, R, R) '
        f"(channels B, G, R; square, R >= {min_size}; Caffe's imagenet_mean.binaryproto is "
        '(1, 3, 256, 256)); found ' + (f'shape {_shape(blob.shape)}' if blob.size else
                                        'no values (empty, or not a .binaryproto?)'))
  if not np.isfinite(blob).all():
    raise WeightsError(f'--mean={path}: the mean image holds NaN or infinite values')
  return np.ascontiguousarray(blob.reshape(shape).transpose(1, 2, 0)[..., ::-1], np.float32)


# ------------------------------------------------------------------------------ workdirs


def write_workdir(workdir: str, config: ml_collections.ConfigDict, params: dict, *,
                  source: dict[str, Any], overwrite: bool = False,
                  mean: np.ndarray | None = None) -> str:
  """Writes config.json, preprocessing.npz (`mean`, else the config's constant mean),
  checkpoints/0 (the train state: these parameters, zero momentum) and best/0 (the
  parameters) through the project's Checkpointer. Refuses a workdir that already holds a
  run unless `overwrite` (which removes that run's files first)."""
  workdir = checkpoints.absolute(workdir)
  root = epath.Path(workdir)
  present = [name for name in workdir_lib.RUN_ENTRIES if (root / name).exists()]
  if present:
    if not overwrite:
      raise WeightsError(f'{workdir} already holds a run ({", ".join(present)}); choose an '
                         'empty --workdir or pass --overwrite to replace it')
    for name in present:
      path = root / name
      if path.is_dir():
        shutil.rmtree(os.fspath(path)) if '://' not in workdir else path.rmtree()
      else:
        path.unlink()
  # One device is enough to write: checkpoints hold global arrays that any mesh reads.
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': 1, 'model': 1}),
                            devices=jax.devices()[:1])
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  abstract = jax.eval_shape(lambda: nets.init_params(spec))
  got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params)
  want = jax.tree_util.tree_map(lambda a: tuple(a.shape), abstract)
  if got != want:
    raise WeightsError(f'parameter shapes {got} do not match the model {want}')
  state = steps.build(config, spec, mesh).state_from_params(
      jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), config.seed)
  workdir_lib.write_config(workdir, config)
  # Imported configs take a constant mean or the file's image (no dataset pass) and no PCA
  # lighting.
  workdir_lib.write_preprocessing(
      workdir, statistics.load_or_compute_mean_image(config) if mean is None else mean)
  schedule = optimizer.LearningRateController.from_config(config, 1).state_dict()
  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    ckpt.save(0, state, {'schedule': schedule, 'best_top1': -1.0, 'input_position': 0,
                         'epoch': 0.0, 'imported': source})
    ckpt.save_best(0, state.params, {'top1': -1.0, 'step': 0, 'imported': source})
    ckpt.wait()
  finally:
    ckpt.close()
  return workdir


def read_workdir_params(workdir: str, *, checkpoint: str = 'latest'):
  """(config, spec, params as NumPy, step) of a run's checkpoint ('latest' or 'best'),
  read onto one device."""
  run = workdir_lib.load_run(workdir, checkpoint=checkpoint, one_device=True)
  return run.config, run.spec, jax.tree_util.tree_map(np.asarray, run.params), run.step


def torchvision_export_warnings(config: ml_collections.ConfigDict, spec) -> list[str]:
  """What makes an exported model need other inputs (or behave otherwise) than torchvision's
  alexnet; the architecture itself is checked by `check_torchvision_export`."""
  notes = []
  i = config.input
  want_mean = tuple(255.0 * m for m in TORCHVISION_MEAN)
  want_std = tuple(255.0 * s for s in TORCHVISION_STD)
  if (i.mean != 'constant' or not np.allclose(i.mean_rgb, want_mean)
      or not np.allclose(i.std_rgb, want_std) or i.scale != 1.0):
    notes.append(f'this run normalises its inputs with input.mean={i.mean!r} '
                 f'(mean_rgb={tuple(i.mean_rgb)}), std_rgb={tuple(i.std_rgb)}, '
                 f'scale={i.scale}, not torchvision\'s (p/255 - {TORCHVISION_MEAN}) / '
                 f'{TORCHVISION_STD}: feed the exported model inputs normalised like this run\'s')
  if spec.dropout_scaling != 'inverted' and spec.dropout_rate > 0:
    notes.append("this run used the paper's test-time dropout scaling (x"
                 f'{1 - spec.dropout_rate:g} on the dropped layers at test time), which '
                 "torchvision's eval mode does not apply: the exported logits differ")
  return notes


def check_torchvision_export(spec) -> None:
  """Refuses a run whose architecture is not torchvision's alexnet."""
  if spec.arch != 'alexnet':
    raise WeightsError(
        f"this run is model.arch={spec.arch!r}, a CIFAR-10 net (layers "
        f"{', '.join(spec.layer_names())}), not AlexNet: torchvision's AlexNet layout cannot "
        'hold it. Export its own parameters instead: --to=params --out=FILE.npz (or '
        '.safetensors, .pth)')
  tv = ModelSpec.from_config(torchvision_config().model)
  problems = []
  if spec.towers != 1:
    problems.append(f'model.towers={spec.towers} (torchvision: 1)')
  if spec.lrn != 'none':
    problems.append(f"model.lrn={spec.lrn!r} (torchvision has no LRN: 'none')")
  for field in ('conv_widths', 'fc_widths', 'num_classes', 'pooling', 'activation'):
    if getattr(spec, field) != getattr(tv, field):
      problems.append(f'model.{field}={getattr(spec, field)!r} (torchvision: '
                      f'{getattr(tv, field)!r})')
  if spec.input_size != 224 or spec.conv1_pad != 2:
    problems.append(f'model.input_size={spec.input_size} with conv1 padding '
                    f'{spec.conv1_pad} (torchvision: 224, padding 2)')
  if problems:
    raise WeightsError("this run is not torchvision's AlexNet: " + '; '.join(problems))


# ------------------------------------------------------------------------------ commands


def _source(kind: str, path: str) -> dict[str, Any]:
  return {'from': kind, 'file': os.path.basename(os.fspath(path)),
          'bytes': os.path.getsize(path)}


def import_torchvision(src: str, workdir: str, *, overwrite: bool = False) -> str:
  """torchvision's alexnet state dict (.pth or .safetensors) -> a workdir (see the module
  docstring); returns the workdir."""
  config = torchvision_config()
  spec = ModelSpec.from_config(config.model)
  params = torchvision_to_params(read_torchvision(src), spec, source=os.fspath(src))
  return write_workdir(workdir, config, params, source=_source('torchvision', src),
                       overwrite=overwrite)


def import_caffe(src: str, workdir: str, *, overwrite: bool = False,
                 mean: str | None = None) -> str:
  """bvlc_alexnet.caffemodel -> a two-tower workdir (see the module docstring); with `mean`
  (a .binaryproto mean image, read first: a bad one fails before the big file is read)
  Caffe's squash-and-subtract preprocessing (`caffe_config`)."""
  mean_image = (None if mean is None
                else read_caffe_mean(mean, min_size=caffe_config().model.input_size))
  config = caffe_config(mean_image)
  spec = ModelSpec.from_config(config.model)
  try:
    layers = caffe_io.read_caffemodel(src)
  except caffe_io.CaffeModelError as e:
    raise WeightsError(str(e)) from None
  blobs = {name: arrays for name, (_, arrays) in layers.items()}
  params = caffe_to_params(blobs, spec, source=os.fspath(src))
  source = _source('caffe', src)
  if mean is not None:
    source['mean'] = os.path.basename(os.fspath(mean))
  return write_workdir(workdir, config, params, source=source, overwrite=overwrite,
                       mean=mean_image)


def export_torchvision(workdir: str, dst: str, *, checkpoint: str = 'latest'
                       ) -> tuple[list[str], int]:
  """A run's parameters (its `checkpoint`: 'latest' or 'best') -> torchvision's alexnet
  state dict at `dst` (.pth, .pt or .safetensors by the suffix); returns the warnings about
  inputs the run normalised differently (the caller shows them) and the step exported."""
  if not os.fspath(dst).endswith(('.pth', '.pt', '.safetensors')):
    raise WeightsError(f'--out={dst}: the suffix must be .pth, .pt or .safetensors')
  config, spec, params, step = read_workdir_params(workdir, checkpoint=checkpoint)
  check_torchvision_export(spec)
  write_torchvision(params_to_torchvision(params, spec), dst)
  return torchvision_export_warnings(config, spec), step


PARAMS_SUFFIXES = ('.npz', '.safetensors', '.pth', '.pt')


def params_state(params: dict, spec) -> dict[str, np.ndarray]:
  """A run's parameters flat, in layer order: '<layer>.kernel', '<layer>.bias' (float32,
  the project's layouts: HWIO convolutions, (in, out) fc kernels reading the input
  flattened as (H, W, C), AlexNet's with a leading tower axis, a local layer's kernel
  (Ho, Wo, kh, kw, Cin, Cout))."""
  return collections.OrderedDict(
      (f'{layer}.{part}', np.ascontiguousarray(params[layer][part], np.float32))
      for layer in spec.layer_names() for part in ('kernel', 'bias'))


def export_params(workdir: str, dst: str, *, checkpoint: str = 'latest'
                  ) -> tuple[list[str], int]:
  """A run's parameters (any model.arch, its `checkpoint`) -> `dst` by its own layer names
  (`params_state`): .npz (numpy.load), .safetensors or .pth/.pt (a state dict that
  `torch.load(weights_only=True)` reads); returns (no warnings, the step exported). The
  run's config.json says which net the arrays belong to."""
  dst = os.fspath(dst)
  if not dst.endswith(PARAMS_SUFFIXES):
    raise WeightsError(f'--out={dst}: the suffix must be one of {", ".join(PARAMS_SUFFIXES)}')
  _, spec, params, step = read_workdir_params(workdir, checkpoint=checkpoint)
  state = params_state(params, spec)
  if dst.endswith('.npz'):
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(dst, 'wb') as f:            # a file object: numpy adds no second suffix
      np.savez(f, **state)
  else:
    write_torchvision(state, dst)
  return [], step
