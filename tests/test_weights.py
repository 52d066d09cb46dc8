"""Weights in and out: torchvision's AlexNet and Caffe's bvlc_alexnet, offline.

No published weights can be downloaded here, so the files are made by the tests: a
torchvision `alexnet()` with seeded random weights saved as .pth and .safetensors, and a
.caffemodel with random blobs written through the same protobuf descriptor the importer
reads (new `layer` and old V1 `layers` forms). The imported model's logits on real photos
must equal torchvision's, and an independent float64 NumPy forward of Caffe's layers,
within 1e-4 of the logit scale, on one device and on 8 simulated devices.

The project reads and writes .pth files without torch (`tools/torch_file`); torch and
torchvision are here only as the independent cross-check: they make the files and read
the exports. They are imported at the top, not skipped: CI installs them
(requirements-torch.txt, the `torch` extra) and these tests must run there.
"""

import os
import subprocess
import sys

import data_utils
import jax
import ml_collections
import numpy as np
import pytest
import torch
import torchvision
from numpy.lib.stride_tricks import sliding_window_view

from alexnet_jax.common import config_lib, fields
from alexnet_jax.data import augment, statistics
from alexnet_jax.model import nets, sharding, steps
from alexnet_jax.run import checkpoints, evaluate
from alexnet_jax.run import workdir as workdir_lib
from alexnet_jax.tools import caffe as caffe_io
from alexnet_jax.tools import weights as weight_io
from configs import one_tower, paper

N_PHOTOS = 8
RTOL = 1e-4          # of the logit scale (max |logit|)


def _mesh(data, model, n=None):
  devices = jax.devices()[:n] if n else None
  return sharding.make_mesh(ml_collections.ConfigDict({'data': data, 'model': model}),
                            devices=devices)


@pytest.fixture(scope='module')
def photos_256(sample_photos):
  """N_PHOTOS real photos, shorter side 256 and centre square, uint8 [N, 256, 256, 3]: the
  one decode and resize both sides of every comparison start from."""
  return np.stack([data_utils.resize_center_crop_pil(p, 256) for p in sample_photos[:N_PHOTOS]])


def _project_logits(workdir, images, mesh_shape=None, which='best'):
  """Logits of the imported run: config.json, its checkpoint, the project's own eval
  preprocessing (device_preprocess) and forward, on one device or on a mesh."""
  config = workdir_lib.load_config(workdir)
  mesh = _mesh(1, 1, 1) if mesh_shape is None else _mesh(*mesh_shape)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  built = steps.build(config, spec, mesh)
  params, step = checkpoints.load_params(workdir, built.abstract_state().params, which=which)
  assert step == 0
  mean = built.device_mean(statistics.load_or_compute_mean_image(config))

  def forward(p, x, m):
    x = augment.device_preprocess(x, None, config=config, mean=m, train=False)
    return nets.apply(spec, p, x)

  with jax.set_mesh(mesh):
    x = jax.device_put(images, built.batch)
    return np.asarray(jax.jit(forward)(params, x, mean))


def _assert_logits_close(got, want):
  scale = np.abs(want).max()
  assert 1.0 < scale < 1e3, scale                   # not dead, not exploded
  err = np.abs(got - want).max() / scale
  assert err < RTOL, f'max |diff| / max |logit| = {err:.2e}'
  assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


# ------------------------------------------------------------------------------ torchvision


@pytest.fixture(scope='module')
def tv_model():
  """torchvision's alexnet with seeded He-normal weights (its default init leaves logits
  ~1e-3), small biases; eval mode."""
  torch.manual_seed(0)
  model = torchvision.models.alexnet(weights=None)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('weight'):
        fan_in = p[0].numel()
        gain = 1.0 if name == 'classifier.6.weight' else 2.0
        p.normal_(0.0, (gain / fan_in) ** 0.5)
      else:
        p.normal_(0.0, 0.05)
  return model.eval()


@pytest.fixture(scope='module')
def tv_files(tv_model, tmp_path_factory):
  root = tmp_path_factory.mktemp('tv')
  pth, st = str(root / 'alexnet.pth'), str(root / 'alexnet.safetensors')
  torch.save(tv_model.state_dict(), pth)
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in tv_model.state_dict().items()}, st)
  return {'pth': pth, 'safetensors': st}


@pytest.fixture(scope='module')
def tv_workdir(tv_files, tmp_path_factory):
  return weight_io.import_torchvision(tv_files['pth'], str(tmp_path_factory.mktemp('tv_run')))


def _torchvision_logits(model, photos_256):
  """torchvision's own eval: centre 224 of the 256 square, x/255, (x - mean) / std, NCHW."""
  off = (256 - 224) // 2
  x = photos_256[:, off:off + 224, off:off + 224].astype(np.float32) / 255.0
  x = (x - np.float32(weight_io.TORCHVISION_MEAN)) / np.float32(weight_io.TORCHVISION_STD)
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().astype(np.float64)


def test_torchvision_config_is_configs_one_tower_with_torchvision_inputs():
  tv, ours = weight_io.torchvision_config(), one_tower.get_config()
  for field in ('towers', 'conv_widths', 'fc_widths', 'num_classes', 'lrn', 'pooling',
                'activation', 'input_size'):
    assert tv.model[field] == ours.model[field], field
  spec = config_lib.validate(tv)
  assert spec.conv1_pad == 2 and spec.dropout_placement == 'torchvision'
  abstract = jax.eval_shape(lambda: nets.init_params(spec))
  assert nets.count_params(abstract) == 61_100_840
  assert sum(int(np.prod(s)) for s in weight_io.torchvision_shapes(spec).values()) == 61_100_840


@pytest.mark.slow
def test_torchvision_import_gives_torchvision_logits_one_device_and_8(
    tv_model, tv_workdir, photos_256):
  want = _torchvision_logits(tv_model, photos_256)
  _assert_logits_close(_project_logits(tv_workdir, photos_256), want)
  # One tower: the 8 simulated devices split the batch (mesh.model=2 needs two towers,
  # which test_caffe_... covers); init_from's checkpoint (latest) gives the same.
  _assert_logits_close(_project_logits(tv_workdir, photos_256, (8, 1), which='latest'), want)


@pytest.mark.slow
def test_torchvision_safetensors_and_pth_import_the_same_and_export_to_the_bit(
    tv_model, tv_files, tv_workdir, tmp_path):
  spec = nets.ModelSpec.from_config(weight_io.torchvision_config().model)
  from_st = weight_io.torchvision_to_params(
      weight_io.read_torchvision(tv_files['safetensors']), spec)
  jax.tree.map(np.testing.assert_array_equal, weight_io.read_workdir_params(tv_workdir)[2],
               from_st)
  original = {k: v.numpy() for k, v in tv_model.state_dict().items()}
  for suffix in ('pth', 'safetensors'):
    dst = str(tmp_path / f'out.{suffix}')
    assert weight_io.export_torchvision(tv_workdir, dst) == ([], 0)   # torchvision's inputs
    if suffix == 'pth':
      back = torch.load(dst, weights_only=True)
      assert all(isinstance(v, torch.Tensor) for v in back.values())
      back = {k: v.numpy() for k, v in back.items()}
    else:
      from safetensors.numpy import load_file
      back = load_file(dst)
    if suffix == 'pth':                  # keys in torchvision's order (safetensors sorts)
      assert list(back) == list(original)
    assert sorted(back) == sorted(original)
    for k, v in original.items():
      assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
      assert back[k].tobytes() == v.tobytes(), k                    # equal to the bit
  # And torchvision loads it strictly.
  fresh = torchvision.models.alexnet(weights=None)
  fresh.load_state_dict(torch.load(str(tmp_path / 'out.pth'), weights_only=True), strict=True)


# Runs a command as `python -m MODULE ARGS` with torch and torchvision unimportable (as in
# an install without the `torch` extra), then says which torch modules got loaded.
_WITHOUT_TORCH = """import runpy, sys
for name in ('torch', 'torchvision'):
  sys.modules[name] = None          # `import torch` raises ImportError
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
finally:
  loaded = sorted(m for m, v in sys.modules.items() if m.split('.')[0] in ('torch',
                  'torchvision') and v is not None)
  print('torch modules loaded:', loaded, file=sys.stderr)
"""


def _run_without_torch(module, *args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-c', _WITHOUT_TORCH, module, *args], cwd=data_utils.REPO,
                        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_pth_import_and_export_commands_need_no_torch(tv_model, tv_files, tmp_path):
  """`weights import` of a .pth and `export` to .pth with torch unimportable: the imported
  parameters equal torch.load's reading of the file mapped the same way, and torch reads
  the exported file back equal to the original state dict, to the bit."""
  workdir, dst = str(tmp_path / 'run'), str(tmp_path / 'out.pth')
  r = _run_without_torch('alexnet_jax.weights', 'import', '--from=torchvision',
                         f'--src={tv_files["pth"]}', f'--workdir={workdir}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'torch modules loaded: []' in r.stderr
  spec = nets.ModelSpec.from_config(weight_io.torchvision_config().model)
  by_torch = {k: v.numpy() for k, v in torch.load(tv_files['pth'], weights_only=True).items()}
  jax.tree.map(np.testing.assert_array_equal, weight_io.read_workdir_params(workdir)[2],
               weight_io.torchvision_to_params(by_torch, spec))
  r = _run_without_torch('alexnet_jax.weights', 'export', '--to=torchvision',
                         f'--workdir={workdir}', f'--out={dst}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'torch modules loaded: []' in r.stderr
  back = torch.load(dst, weights_only=True)
  original = tv_model.state_dict()
  assert list(back) == list(original)
  for k, v in original.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    assert back[k].numpy().tobytes() == v.numpy().tobytes(), k


@pytest.mark.slow
def test_imported_workdir_is_a_run_for_evaluate_and_init_from(tv_model, tv_workdir, photos_256):
  """load_config + validate (evaluate_checkpoint's path), the eval step on a batch,
  and load_params(latest) (init_from's path) all take the imported workdir."""
  config = workdir_lib.load_config(tv_workdir)
  assert config.input.mean == 'constant' and config.model.dropout_placement == 'torchvision'
  mesh = _mesh(1, 1, 1)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape))
  built = steps.build(config, spec, mesh)
  best, _ = checkpoints.load_params(tv_workdir, built.abstract_state().params, which='best')
  latest, _ = checkpoints.load_params(tv_workdir, built.abstract_state().params)
  jax.tree.map(np.testing.assert_array_equal, best, latest)
  # The real eval step (device preprocessing from config.json, masked sums) scores
  # torchvision's own predictions as 100% top-1 with torchvision's cross-entropy.
  want = _torchvision_logits(tv_model, photos_256)
  labels = want.argmax(1).astype(np.int32)
  batch = {'image': photos_256, 'label': labels, 'mask': np.ones(len(labels), bool)}
  with jax.set_mesh(mesh):
    out = jax.device_get(built.eval(best, evaluate.to_global(batch, built.batch),
                                    built.device_mean(
                                        statistics.load_or_compute_mean_image(config))))
  assert out['count'] == N_PHOTOS and out['top1'] == N_PHOTOS
  shifted = want - want.max(1, keepdims=True)
  ce = -(shifted[np.arange(N_PHOTOS), labels] - np.log(np.exp(shifted).sum(1)))
  np.testing.assert_allclose(out['loss'] / N_PHOTOS, ce.mean(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_written_workdir_is_evaluated_and_refused_unless_overwrite(tmp_path, tiny_data_dir):
  """write_workdir (what every import ends with) on the tiny built-in dataset's model:
  `evaluate_checkpoint` takes it whole; refused over a run, replaced with overwrite."""
  config = data_utils.tiny_config(tiny_data_dir)
  spec = config_lib.validate(config)
  shapes = jax.eval_shape(lambda: nets.init_params(spec))
  rng = np.random.default_rng(0)
  first, second = (jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32), shapes)
                   for _ in range(2))
  workdir = str(tmp_path / 'run')
  weight_io.write_workdir(workdir, config, first, source={'from': 'test'})
  (tmp_path / 'run' / 'metrics.jsonl').write_text('{}')
  with pytest.raises(weight_io.WeightsError, match='already holds a run.*--overwrite'):
    weight_io.write_workdir(workdir, config, second, source={'from': 'test'})
  jax.tree.map(np.testing.assert_array_equal, weight_io.read_workdir_params(workdir)[2], first)
  result = evaluate.evaluate_checkpoint(workdir, crops=(1,))
  assert result['step'] == 0 and result['crops_1']['count'] == 101
  assert 0.0 <= result['crops_1']['top1'] <= 1.0 and np.isfinite(result['crops_1']['loss'])
  weight_io.write_workdir(workdir, config, second, source={'from': 'test'}, overwrite=True)
  assert not (tmp_path / 'run' / 'metrics.jsonl').exists()
  for which in ('best', 'latest'):
    _, _, params, step = weight_io.read_workdir_params(workdir, checkpoint=which)
    assert step == 0
    jax.tree.map(np.testing.assert_array_equal, params, second)


def _resnet_like(path):
  from safetensors.numpy import save_file
  save_file({'conv1.weight': np.zeros((64, 3, 7, 7), np.float32),
             'fc.weight': np.zeros((1000, 512), np.float32)}, path)


def test_torchvision_refuses_other_architectures_and_truncated_files(tv_model, tmp_path):
  spec = nets.ModelSpec.from_config(weight_io.torchvision_config().model)
  resnet = str(tmp_path / 'resnet.safetensors')
  _resnet_like(resnet)
  with pytest.raises(weight_io.WeightsError) as e:
    weight_io.torchvision_to_params(weight_io.read_torchvision(resnet), spec, resnet)
  text = str(e.value)
  assert 'features.0.weight: expected shape (64, 3, 11, 11), missing' in text
  assert 'conv1.weight: not expected (shape (64, 3, 7, 7))' in text
  # One wrong shape (a 2-class head) and one extra key.
  state = {k: v.numpy() for k, v in tv_model.state_dict().items()}
  state['classifier.6.weight'] = state['classifier.6.weight'][:2]
  state['classifier.7.weight'] = np.zeros(3, np.float32)
  with pytest.raises(weight_io.WeightsError) as e:
    weight_io.torchvision_to_params(state, spec)
  assert 'classifier.6.weight: expected shape (1000, 4096), found (2, 4096)' in str(e.value)
  assert 'classifier.7.weight: not expected' in str(e.value)
  # Truncated files, both formats.
  full = str(tmp_path / 'full.pth')
  torch.save({k: v for k, v in list(tv_model.state_dict().items())[:4]}, full)
  for suffix, writer in (('pth', None), ('safetensors', resnet)):
    src = full if writer is None else writer
    data = open(src, 'rb').read()
    cut = str(tmp_path / f'cut.{suffix}')
    open(cut, 'wb').write(data[:len(data) // 2])
    with pytest.raises(weight_io.WeightsError, match='truncated'):
      weight_io.read_torchvision(cut)


@pytest.mark.slow
def test_cli_refusal_is_one_error_line_and_exit_2(tmp_path):
  resnet = str(tmp_path / 'resnet.safetensors')
  _resnet_like(resnet)
  r = data_utils.run_cli('alexnet_jax.weights', 'import', '--from=torchvision', f'--src={resnet}',
                         f'--workdir={tmp_path / "run"}')
  assert r.returncode == 2, r.stderr
  assert 'Traceback' not in r.stderr
  assert 'error: ' in r.stderr and 'features.0.weight: expected shape (64, 3, 11, 11)' in r.stderr
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
  r = data_utils.run_cli('alexnet_jax.weights', 'export', '--to=torchvision',
                         f'--workdir={tmp_path / "nothing"}', f'--out={tmp_path / "x.pth"}')
  assert r.returncode == 2 and 'Traceback' not in r.stderr and 'config.json not found' in r.stderr


# ------------------------------------------------------------------------------ own params


@pytest.mark.slow
def test_params_export_of_a_cifar_net_by_its_own_layer_names(cifar_workdir, tmp_path):
  """A CIFAR-10 net's run exports to .npz, .safetensors and .pth keyed by its layers, the
  arrays as the checkpoint holds them; torchvision's AlexNet layout refuses it by name."""
  _, spec, params, step = weight_io.read_workdir_params(cifar_workdir)
  assert spec.arch == 'cifar10_18pct' and step == 2
  keys = [f'{layer}.{part}' for layer in ('conv1', 'conv2', 'conv3', 'fc10')
          for part in ('kernel', 'bias')]
  for suffix in ('.npz', '.safetensors', '.pth'):
    out = str(tmp_path / f'c10{suffix}')
    assert weight_io.export_params(cifar_workdir, out) == ([], 2)
    if suffix == '.npz':
      with np.load(out) as f:
        got = {k: f[k] for k in f.files}
    else:
      got = weight_io.read_torchvision(out)
    # safetensors stores its keys sorted; .npz and .pth keep the layer order.
    assert list(got) == (sorted(keys) if suffix == '.safetensors' else keys), suffix
    assert got['conv1.kernel'].shape == (5, 5, 3, 32) and got['fc10.kernel'].shape == (1024, 10)
    for key, array in got.items():
      layer, part = key.split('.')
      np.testing.assert_array_equal(array, params[layer][part])
      assert array.dtype == np.float32
  # best/ holds the same fresh parameters at step 1
  assert weight_io.export_params(cifar_workdir, str(tmp_path / 'b.npz'),
                                 checkpoint='best')[1] == 1
  with pytest.raises(weight_io.WeightsError, match=r"\.npz, \.safetensors, \.pth, \.pt"):
    weight_io.export_params(cifar_workdir, str(tmp_path / 'c10.h5'))
  with pytest.raises(weight_io.WeightsError) as e:
    weight_io.export_torchvision(cifar_workdir, str(tmp_path / 'tv.pth'))
  assert "model.arch='cifar10_18pct'" in str(e.value) and '--to=params' in str(e.value)
  assert 'conv1, conv2, conv3, fc10' in str(e.value)
  assert not os.path.exists(tmp_path / 'tv.pth')


def test_torchvision_export_refuses_a_cifar_net_by_name():
  from configs import cifar10_fast
  spec = nets.ModelSpec.from_config(cifar10_fast.get_config().model)
  with pytest.raises(weight_io.WeightsError,
                     match=r"model\.arch='cifar10_80sec'.*conv1, conv2, conv3, fc64, fc10.*"
                           r'--to=params'):
    weight_io.check_torchvision_export(spec)


@pytest.mark.slow
def test_params_export_of_alexnet_keeps_the_tower_axis(fresh_workdir, tmp_path):
  _, spec, params, _ = weight_io.read_workdir_params(fresh_workdir)
  out = str(tmp_path / 'alexnet.npz')
  weight_io.export_params(fresh_workdir, out)
  with np.load(out) as f:
    assert f.files == [f'{layer}.{part}' for layer in spec.layer_names()
                       for part in ('kernel', 'bias')]
    assert f['conv1.kernel'].shape == (2,) + params['conv1']['kernel'].shape[1:]
    np.testing.assert_array_equal(f['fc6.kernel'], params['fc6']['kernel'])


@pytest.mark.slow
def test_export_commands_on_a_cifar_run(cifar_workdir, tmp_path):
  r = data_utils.run_cli('alexnet_jax.weights', 'export', '--to=params',
                         f'--workdir={cifar_workdir}', f'--out={tmp_path / "c10.npz"}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'exported the latest checkpoint (step 2) of {cifar_workdir}' in r.stdout
  with np.load(tmp_path / 'c10.npz') as f:
    assert len(f.files) == 8
  r = data_utils.run_cli('alexnet_jax.weights', 'export', '--to=torchvision',
                         f'--workdir={cifar_workdir}', f'--out={tmp_path / "tv.pth"}')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert "error: this run is model.arch='cifar10_18pct'" in r.stderr


# ------------------------------------------------------------------------------ caffe


def _caffe_blobs(seed=0, spec=None):
  """bvlc_alexnet's layers with random He-scaled weights (Caffe's shapes)."""
  spec = spec or nets.ModelSpec.from_config(weight_io.caffe_config().model)
  rng = np.random.default_rng(seed)
  out = {}
  for layer, (w_shape, b_shape) in weight_io.caffe_shapes(spec).items():
    fan_in = int(np.prod(w_shape[1:]))
    gain = 1.0 if layer == 'fc8' else 2.0
    w = rng.standard_normal(w_shape, np.float32) * np.float32((gain / fan_in) ** 0.5)
    out[layer] = [w, rng.standard_normal(b_shape, np.float32) * np.float32(0.05)]
  return out


_V1_TYPES = {'conv': 'CONVOLUTION', 'fc': 'INNER_PRODUCT'}
_NEW_TYPES = {'conv': 'Convolution', 'fc': 'InnerProduct'}


def _write_caffe(path, blobs, v1):
  types = _V1_TYPES if v1 else _NEW_TYPES
  layers = {'data': ('DATA' if v1 else 'Data', [])}
  for name, arrays in blobs.items():
    layers[name] = (types[name[:-1] if name.startswith('conv') else 'fc'], arrays)
    if name.startswith(('conv1', 'conv2')):
      layers['norm' + name[-1]] = ('LRN' if v1 else 'LRN', [])
  caffe_io.write_caffemodel(path, layers, v1=v1)


def _np_conv(x, w, b, stride, pad, groups):
  """Caffe's convolution (cross-correlation, `group`), NCHW, float64."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  kh, kw = w.shape[2:]
  win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
  cin, cout = x.shape[1] // groups, w.shape[0] // groups
  outs = [np.einsum('nchwij,ocij->nohw', win[:, g * cin:(g + 1) * cin],
                    w[g * cout:(g + 1) * cout], optimize=True) for g in range(groups)]
  return np.concatenate(outs, axis=1) + b[None, :, None, None]


def _np_lrn(x, n=5, alpha=1e-4, beta=0.75, k=1.0):
  """Caffe's ACROSS_CHANNELS LRN: x / (k + alpha/n * sum over n channels of x^2)^beta."""
  sq = np.pad(x * x, ((0, 0), (n // 2, n // 2), (0, 0), (0, 0)))
  window = sum(sq[:, i:i + x.shape[1]] for i in range(n))
  return x / (k + alpha / n * window) ** beta


def _np_max_pool(x, size=3, stride=2):
  """Caffe's max pooling: output size ceil((H - size) / stride) + 1."""
  h = x.shape[2]
  out = -(-(h - size) // stride) + 1
  need = (out - 1) * stride + size
  x = np.pad(x, ((0, 0), (0, 0), (0, need - h), (0, need - h)), constant_values=-np.inf)
  return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride].max((4, 5))


def _np_caffe_forward(blobs, bgr):
  """bvlc_alexnet's deploy net in float64 NumPy: conv-relu-norm-pool (1, 2), conv-relu
  (3, 4), conv-relu-pool (5), fc6-relu, fc7-relu (dropout: identity at test), fc8."""
  p = {k: [a.astype(np.float64) for a in v] for k, v in blobs.items()}
  relu = lambda a: np.maximum(a, 0)
  x = bgr.transpose(0, 3, 1, 2)
  x = _np_max_pool(_np_lrn(relu(_np_conv(x, *p['conv1'], 4, 0, 1))))
  x = _np_max_pool(_np_lrn(relu(_np_conv(x, *p['conv2'], 1, 2, 2))))
  x = relu(_np_conv(x, *p['conv3'], 1, 1, 1))
  x = relu(_np_conv(x, *p['conv4'], 1, 1, 2))
  x = _np_max_pool(relu(_np_conv(x, *p['conv5'], 1, 1, 2)))
  assert x.shape[1:] == (256, 6, 6)
  x = x.reshape(len(x), -1)                     # Caffe's flatten: C, H, W
  x = relu(x @ p['fc6'][0].T + p['fc6'][1])
  x = relu(x @ p['fc7'][0].T + p['fc7'][1])
  return x @ p['fc8'][0].T + p['fc8'][1]


def test_caffe_pooling_at_227_agrees_with_floor_rounding():
  spec = nets.ModelSpec.from_config(weight_io.caffe_config().model)
  sizes = spec.spatial_sizes()
  assert (sizes['conv1'], sizes['pool1'], sizes['pool2'], sizes['pool5']) == (55, 27, 13, 6)
  for h in (55, 27, 13):
    assert -(-(h - 3) // 2) + 1 == (h - 3) // 2 + 1
  assert spec.conv1_pad == 0 and spec.lrn == 'caffe' and spec.lrn_across_towers


@pytest.fixture(scope='module')
def caffe_blobs():
  return _caffe_blobs()


@pytest.mark.slow
def test_caffe_layer_and_v1_layers_files_read_the_same(caffe_blobs, tmp_path):
  read = {}
  for v1 in (True, False):
    src = str(tmp_path / f'v1_{v1}.caffemodel')
    _write_caffe(src, caffe_blobs, v1)
    read[v1] = caffe_io.read_caffemodel(src)
  assert read[True]['conv1'][0] == 'CONVOLUTION' and read[False]['fc6'][0] == 'InnerProduct'
  assert list(read[True]) == list(read[False]) == list(caffe_blobs)   # layers with weights
  for name, arrays in caffe_blobs.items():
    for got_v1, got_new, want in zip(read[True][name][1], read[False][name][1], arrays,
                                     strict=True):
      assert got_v1.shape == got_new.shape == want.shape
      np.testing.assert_array_equal(got_v1, want)
      np.testing.assert_array_equal(got_new, want)


@pytest.mark.slow
def test_caffe_import_gives_caffe_logits_one_device_and_4x2_mesh(
    caffe_blobs, photos_256, tmp_path):
  src = str(tmp_path / 'bvlc_alexnet.caffemodel')
  _write_caffe(src, caffe_blobs, v1=True)           # bvlc_alexnet's own (old) format
  workdir = weight_io.import_caffe(src, str(tmp_path / 'run'))
  off = (256 - 227) // 2                         # the project's centre crop
  crop = photos_256[:, off:off + 227, off:off + 227].astype(np.float64)
  bgr = crop[..., ::-1] - np.asarray(weight_io.CAFFE_MEAN_BGR)
  want = _np_caffe_forward(caffe_blobs, bgr)
  _assert_logits_close(_project_logits(workdir, photos_256), want)
  # The towers on their own devices: Caffe's groups land on the towers.
  _assert_logits_close(_project_logits(workdir, photos_256, (4, 2), which='latest'), want)


@pytest.mark.slow
def test_caffe_groups_land_on_the_towers(caffe_blobs):
  spec = nets.ModelSpec.from_config(weight_io.caffe_config().model)
  params = weight_io.caffe_to_params(caffe_blobs, spec)
  w2 = caffe_blobs['conv2'][0]                   # (256, 48, 5, 5), group 2
  np.testing.assert_array_equal(params['conv2']['kernel'][0], w2[:128].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['conv2']['kernel'][1], w2[128:].transpose(2, 3, 1, 0))
  w3 = caffe_blobs['conv3'][0]                   # (384, 256, 3, 3): reads both towers
  np.testing.assert_array_equal(params['conv3']['kernel'][1], w3[192:].transpose(2, 3, 1, 0))
  w1 = caffe_blobs['conv1'][0]                   # BGR -> RGB
  np.testing.assert_array_equal(params['conv1']['kernel'][0][..., 0, :],
                                w1[:48, 2].transpose(1, 2, 0))


def test_caffe_refuses_other_layers_and_truncated_files(tmp_path):
  spec = nets.ModelSpec.from_config(weight_io.caffe_config().model)
  small = nets.ModelSpec.from_config(dict(spec.__dict__, conv_widths=(8, 16, 24, 24, 16),
                                            fc_widths=(32, 32), num_classes=10))
  blobs = _caffe_blobs(spec=small)
  blobs['conv6'] = [np.zeros((4, 16, 3, 3), np.float32), np.zeros(4, np.float32)]
  src = str(tmp_path / 'other.caffemodel')
  _write_caffe(src, blobs, v1=False)
  with pytest.raises(weight_io.WeightsError) as e:
    weight_io.import_caffe(src, str(tmp_path / 'run'))
  text = str(e.value)
  assert 'conv1 weights: expected shape (96, 3, 11, 11), found (8, 3, 11, 11)' in text
  assert 'conv2 weights: expected shape (256, 48, 5, 5), found (16, 4, 5, 5)' in text
  assert 'conv6 weights: not expected' in text
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
  data = open(src, 'rb').read()
  for cut_at in (len(data) // 2, len(data) - 3):
    cut = str(tmp_path / 'cut.caffemodel')
    open(cut, 'wb').write(data[:cut_at])
    with pytest.raises(weight_io.WeightsError, match='truncated'):
      weight_io.import_caffe(cut, str(tmp_path / 'run'))


def test_caffe_descriptor_field_numbers_are_caffes():
  """The wire format of a hand-encoded message with BVLC caffe.proto's field numbers."""
  net = caffe_io.net_parameter()
  net.ParseFromString(bytes([0x0A, 1, ord('N')])                    # name = 1
                      + bytes([0xA2, 0x06, 8, 0x0A, 1, ord('c'),     # layer = 100: name = 1
                               0x12, 1, ord('t'),                    # type = 2
                               0x3A, 0]))                            # blobs = 7 (empty)
  assert net.name == 'N' and net.layer[0].name == 'c' and net.layer[0].type == 't'
  assert len(net.layer[0].blobs) == 1 and net.layer[0].blobs[0].num == 0
  blob = type(net.layer[0].blobs[0])()
  blob.ParseFromString(bytes([0x08, 2, 0x10, 3, 0x18, 4, 0x20, 5,   # num..width = 1..4
                              0x2A, 4]) + np.float32(1.5).tobytes()   # data = 5, packed
                       + bytes([0x3A, 3, 0x0A, 1, 7]))               # shape = 7: dim = 1
  assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
  assert list(blob.data) == [1.5] and list(blob.shape.dim) == [7]
  v1 = caffe_io.net_parameter()
  v1.ParseFromString(bytes([0x12, 7, 0x22, 1, ord('f'), 0x28, 14, 0x32, 0]))  # layers = 2
  assert v1.layers[0].name == 'f' and v1.layers[0].type == caffe_io.V1_LAYER_TYPES[
      'INNER_PRODUCT'] and len(v1.layers[0].blobs) == 1


def test_paper_config_is_the_caffe_base():
  c, p = weight_io.caffe_config(), paper.get_config()
  for field in ('towers', 'conv_widths', 'fc_widths', 'num_classes', 'pooling'):
    assert c.model[field] == p.model[field]
  assert tuple(c.input.mean_rgb) == (122.679, 116.669, 104.007)


def test_constant_mean_and_std_rgb_in_the_pipeline():
  config = weight_io.torchvision_config()
  images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  mean = statistics.load_or_compute_mean_image(config)          # no pass over any data
  np.testing.assert_allclose(mean, [123.675, 116.28, 103.53], rtol=1e-6)
  got = np.asarray(augment.device_preprocess(images, None, config=config, mean=mean,
                                             train=False))
  crop = images[:, 16:240, 16:240].astype(np.float64) / 255.0
  want = (crop - weight_io.TORCHVISION_MEAN) / weight_io.TORCHVISION_STD
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for field, value in (('input.std_rgb', (1.0, 0.0, 1.0)), ('input.mean_rgb', (1.0, 2.0))):
    bad = weight_io.torchvision_config()
    fields.set_fields(bad, {field: value})
    with pytest.raises(ValueError, match=field):
      config_lib.validate(bad)


# ------------------------------------------------------------------------------ caffe mean


def _mean_bgr(size=256, seed=1):
  """A Caffe mean image as compute_image_mean writes it: (1, 3, R, R), B, G, R, 0-255; each
  channel a different level so that a channel-order slip shows."""
  rng = np.random.default_rng(seed)
  levels = np.array([104.0, 117.0, 123.0], np.float32)[None, :, None, None]
  return (levels + rng.uniform(-20, 20, (1, 3, size, size))).astype(np.float32)


def _two_to_one_png(path, photo):
  """A 2:1 (512 x 256) PNG made from a real photo: lossless, so the decode is exact."""
  from PIL import Image
  with Image.open(photo) as im:
    im.convert('RGB').resize((512, 256), Image.BILINEAR).save(path)
  return np.asarray(Image.open(path).convert('RGB'))


def test_caffe_mean_file_is_read_in_rgb_and_bad_ones_refused(tmp_path):
  bgr = _mean_bgr()
  for legacy in (True, False):                  # num/channels/height/width, or shape.dim
    path = str(tmp_path / f'mean_{legacy}.binaryproto')
    caffe_io.write_blobproto(path, bgr, legacy_shape=legacy)
    rgb = weight_io.read_caffe_mean(path)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[..., 0], bgr[0, 2])     # R is Caffe's channel 2
    np.testing.assert_array_equal(rgb[..., 2], bgr[0, 0])
  bad = {'non_square': (bgr[:, :, :, :240], 'found shape (3, 256, 240)'),
         'two_channels': (bgr[:, :2], 'found shape (2, 256, 256)'),
         'small': (bgr[:, :, :200, :200], 'found shape (3, 200, 200)')}
  for name, (array, found) in bad.items():
    path = str(tmp_path / f'{name}.binaryproto')
    caffe_io.write_blobproto(path, array)
    with pytest.raises(weight_io.WeightsError) as e:
      weight_io.read_caffe_mean(path)
    assert f'--mean={path}: expected a Caffe mean image' in str(e.value)
    assert 'R >= 227' in str(e.value) and found in str(e.value), str(e.value)
  model = str(tmp_path / 'net.caffemodel')       # a .caffemodel passed as the mean
  _write_caffe(model, {'conv1': [np.ones((2, 3, 1, 1), np.float32)]}, v1=True)
  with pytest.raises(weight_io.WeightsError, match='found no values .*not a .binaryproto'):
    weight_io.read_caffe_mean(model)
  cut = str(tmp_path / 'cut.binaryproto')
  with open(str(tmp_path / 'mean_True.binaryproto'), 'rb') as f:
    open(cut, 'wb').write(f.read()[:1000])
  with pytest.raises(weight_io.WeightsError, match='cannot be parsed as a Caffe BlobProto'):
    weight_io.read_caffe_mean(cut)


def test_cli_refuses_a_bad_mean_file_before_reading_the_weights(tmp_path):
  path = str(tmp_path / 'mean.binaryproto')
  caffe_io.write_blobproto(path, _mean_bgr()[:, :, :, :240])
  r = data_utils.run_cli('alexnet_jax.weights', 'import', '--from=caffe',
                         f'--src={tmp_path / "absent.caffemodel"}', f'--mean={path}',
                         f'--workdir={tmp_path / "run"}')
  assert r.returncode == 2, r.stderr
  assert 'Traceback' not in r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert errors == [f'error: --mean={path}: expected a Caffe mean image, a BlobProto of shape '
                    '(1, 3, R, R) (channels B, G, R; square, R >= 227; '
                    "Caffe's imagenet_mean.binaryproto is (1, 3, 256, 256)); found shape "
                    '(3, 256, 240)'], r.stderr
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
  r = data_utils.run_cli('alexnet_jax.weights', 'import', '--from=torchvision',
                         f'--src={tmp_path / "a.pth"}', f'--mean={path}',
                         f'--workdir={tmp_path / "run"}')
  assert r.returncode == 2 and 'error: --mean is for import --from=caffe' in r.stderr


def test_caffe_mean_inputs_are_squashed_minus_the_mean_then_cropped(sample_photos, tmp_path):
  """What evaluate and predict feed bvlc_alexnet with --mean: a 2:1 photo squashed to
  256 x 256 (not its centre square), minus the 256 x 256 mean, then the centre 227 (or the
  ten crops), against NumPy and PIL."""
  from PIL import Image

  from alexnet_jax.data import pipeline
  from alexnet_jax.tools import predict
  mean = weight_io.read_caffe_mean(_write_mean(tmp_path))
  config = weight_io.caffe_config(mean)
  assert (config.input.resize_mode, config.input.mean, config.input.resize_size) == (
      'squash', 'image', 256)
  np.testing.assert_allclose(config.input.mean_rgb, mean.mean(axis=(0, 1), dtype=np.float64),
                             rtol=1e-9)
  assert weight_io.caffe_config().input.resize_mode == 'shorter_side'   # without --mean
  for split in ('train', 'validation'):
    (tmp_path / 'data' / split / 'a').mkdir(parents=True)
  png = str(tmp_path / 'data' / 'validation' / 'a' / 'wide.png')
  pixels = _two_to_one_png(png, sample_photos[0])
  Image.fromarray(pixels).save(tmp_path / 'data' / 'train' / 'a' / 'x.png')
  # The import's 'fast' filter halves the width exactly: each output column is the mean of
  # two input columns (bilinear at 2j + 0.5), rounded half to even like tf.round.
  x = pixels.astype(np.float64)
  squash = np.round((x[:, 0::2] + x[:, 1::2]) / 2).astype(np.uint8)
  fields.set_fields(config, {'dataset.name': 'folder', 'dataset.folder': str(tmp_path / 'data')})
  (evaluated,) = [b['image'][0] for b in pipeline.create_eval_iterator(
      config, 'validation', local_batch_size=1)]
  (predicted,) = [b.images[0] for b in predict.host_batches(config, [png], 1)]
  np.testing.assert_array_equal(evaluated, squash)
  np.testing.assert_array_equal(predicted, squash)
  centre = data_utils.resize_center_crop_pil(png, 256).astype(int)
  assert np.abs(centre - squash.astype(int)).mean() > 10       # not the shorter-side crop
  # With the antialiased filter, the same squash as PIL's.
  config.input.resize_method = 'bilinear'
  (smooth,) = [b.images[0] for b in predict.host_batches(config, [png], 1)]
  pil = np.asarray(Image.open(png).resize((256, 256), Image.BILINEAR))
  assert np.abs(smooth.astype(int) - pil.astype(int)).max() <= 1
  # The device: minus the 256 x 256 mean, then the crops.
  minus = squash.astype(np.float64) - mean
  got = np.asarray(augment.device_preprocess(squash[None], None, config=config, mean=mean,
                                             train=False))[0]
  np.testing.assert_allclose(got, minus[14:241, 14:241], atol=1e-4)
  config.input.eval_crops = 10
  ten = np.asarray(augment.device_preprocess(squash[None], None, config=config, mean=mean,
                                             train=False))[0]
  windows = [minus[y:y + 227, x:x + 227] for y, x in ((14, 14), (0, 0), (0, 29), (29, 0),
                                                       (29, 29))]
  np.testing.assert_allclose(ten, np.stack(windows + [w[:, ::-1] for w in windows]),
                             atol=1e-4)


def _write_mean(tmp_path, seed=1):
  path = str(tmp_path / 'imagenet_mean.binaryproto')
  caffe_io.write_blobproto(path, _mean_bgr(seed=seed))
  return path


@pytest.mark.slow
def test_caffe_import_with_mean_gives_caffe_logits_on_a_squashed_photo(
    caffe_blobs, sample_photos, tmp_path):
  """The command end to end: preprocessing.npz holds the file's mean in RGB, and the
  imported run's logits on a 2:1 photo are Caffe's on that photo squashed to 256, minus
  the BGR mean, centre 227."""
  from alexnet_jax.tools import predict
  src = str(tmp_path / 'bvlc_alexnet.caffemodel')
  _write_caffe(src, caffe_blobs, v1=True)
  mean_path = _write_mean(tmp_path)
  workdir = str(tmp_path / 'run')
  r = data_utils.run_cli('alexnet_jax.weights', 'import', '--from=caffe', f'--src={src}',
                         f'--mean={mean_path}', f'--workdir={workdir}', timeout=600)
  assert r.returncode == 0, r.stderr
  assert 'with the mean image' in r.stdout
  bgr_mean = _mean_bgr()[0].transpose(1, 2, 0).astype(np.float64)       # H, W, (B, G, R)
  saved = workdir_lib.read_preprocessing(workdir)
  assert sorted(saved) == ['mean']
  np.testing.assert_array_equal(saved['mean'], bgr_mean[..., ::-1].astype(np.float32))
  config = workdir_lib.load_config(workdir)
  assert (config.input.resize_mode, config.input.mean) == ('squash', 'image')
  png = str(tmp_path / 'wide.png')
  x = _two_to_one_png(png, sample_photos[1]).astype(np.float64)
  squash = np.round((x[:, 0::2] + x[:, 1::2]) / 2)
  run = predict.load_run(workdir, checkpoint='best', batch_size=1)
  (batch,) = list(predict.host_batches(run.config, [png], run.batch_size))
  np.testing.assert_array_equal(batch.images[0], squash)
  with jax.set_mesh(run.mesh):
    logits = np.asarray(jax.jit(lambda p, i, m: steps.eval_logits(
        run.config, run.spec, p, i, m))(run.params, run.put(batch.images), run.mean))
  caffe_input = (squash[..., ::-1] - bgr_mean)[None, 14:241, 14:241]    # Caffe: BGR, then crop
  _assert_logits_close(logits[:1].astype(np.float64), _np_caffe_forward(caffe_blobs,
                                                                         caffe_input))
