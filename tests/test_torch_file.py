"""alexnet_jax.tools.torch_file: .pth state dicts without torch, cross-checked against torch."""

import collections
import os
import pickle
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from alexnet_jax.tools import torch_file


def _state():
  base = torch.arange(10, dtype=torch.float32)
  return collections.OrderedDict(
      w=torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)),
      half=torch.linspace(-2, 2, 7).half(),
      bf16=torch.linspace(-3, 3, 5).to(torch.bfloat16),
      steps=torch.tensor(12345678901, dtype=torch.int64),        # a 0-d tensor
      transposed=torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
      view=base[2:8].view(2, 3),                                 # shares `base`'s storage
      base=base,
      empty=torch.zeros(0, 3),
  )


def _as_numpy(t: torch.Tensor) -> np.ndarray:
  if t.dtype == torch.bfloat16:
    return t.float().numpy().astype(ml_dtypes.bfloat16)
  return t.numpy()


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_reads_what_torch_saves(tmp_path, legacy):
  state = _state()
  path = tmp_path / 'sd.pth'
  torch.save(state, path, _use_new_zipfile_serialization=not legacy)
  got = torch_file.load_state_dict(path)
  assert list(got) == list(state)
  for k, t in state.items():
    want = _as_numpy(t)
    assert got[k].dtype == want.dtype, k
    assert got[k].shape == want.shape, k
    np.testing.assert_array_equal(got[k].astype(np.float64), want.astype(np.float64), err_msg=k)


def test_torch_reads_what_it_writes_exactly(tmp_path):
  rng = np.random.default_rng(1)
  state = collections.OrderedDict(
      kernel=rng.standard_normal((3, 3, 8, 16)).astype(np.float32),
      bias=rng.standard_normal(16).astype(np.float32),
      counts=np.arange(5, dtype=np.int64),
      h=rng.standard_normal(4).astype(np.float16))
  path = tmp_path / 'mine.pth'
  torch_file.save_state_dict(state, path)
  back = torch.load(path, weights_only=True)
  assert isinstance(back, collections.OrderedDict)
  assert list(back) == list(state)
  for k, v in state.items():
    assert back[k].numpy().dtype == v.dtype
    assert back[k].numpy().tobytes() == v.tobytes(), k          # bit-exact
  again = torch_file.load_state_dict(path)
  assert all(again[k].tobytes() == v.tobytes() for k, v in state.items())
  with zipfile.ZipFile(path) as z:                               # storages 64-byte aligned
    for info in z.infolist():
      if '/data/' in info.filename:
        with open(path, 'rb') as f:
          f.seek(info.header_offset + 26)
          name_len, extra_len = np.frombuffer(f.read(4), '<u2')
        assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


class _Marker:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, 'w'))        # would create the file when unpickled


@pytest.mark.parametrize('container', ['zip', 'plain'])
def test_refuses_anything_but_tensors_and_runs_none_of_it(tmp_path, container):
  marker = tmp_path / 'was_run'
  payload = pickle.dumps(collections.OrderedDict(w=_Marker(str(marker))), protocol=2)
  path = tmp_path / 'evil.pth'
  if container == 'zip':
    with zipfile.ZipFile(path, 'w') as z:
      z.writestr('evil/data.pkl', payload)
      z.writestr('evil/version', '3\n')
  else:
    path.write_bytes(payload)
  with pytest.raises(torch_file.TorchFileError, match=r'refusing to load (io|builtins)\.open'):
    torch_file.load_state_dict(path)
  assert not marker.exists()


def test_truncated_and_foreign_files_are_named(tmp_path):
  good = tmp_path / 'good.pth'
  torch.save(_state(), good, _use_new_zipfile_serialization=False)
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(good.read_bytes()[:-40])
  with pytest.raises(torch_file.TorchFileError, match='cut.pth.*truncated'):
    torch_file.load_state_dict(cut)
  text = tmp_path / 'notes.pth'
  text.write_text('not weights at all\n')
  with pytest.raises(torch_file.TorchFileError, match='notes.pth'):
    torch_file.load_state_dict(text)
  model = tmp_path / 'model.pth'
  torch.save([torch.zeros(2)], model)
  with pytest.raises(torch_file.TorchFileError, match='holds a list, not a state dict'):
    torch_file.load_state_dict(model)


def test_works_with_torch_unimportable(tmp_path):
  path = tmp_path / 'sd.pth'
  torch.save(_state(), path)
  out = tmp_path / 'out.pth'
  code = ('import sys; sys.modules["torch"] = None\n'
          'from alexnet_jax.tools import torch_file\n'
          f'sd = torch_file.load_state_dict({str(path)!r})\n'
          f'torch_file.save_state_dict(sd, {str(out)!r})\n'
          'assert "torch" not in sys.modules or sys.modules["torch"] is None\n'
          'print(len(sd))\n')
  r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                     env={**os.environ, 'PYTHONPATH': os.getcwd()})
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.split()[-1] == str(len(_state()))
  back = torch.load(out, weights_only=True)
  for k, t in _state().items():
    assert torch.equal(back[k], t), k
