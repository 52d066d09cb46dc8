"""notebooks/colab.ipynb: valid, committed without outputs, and executed headless on CPU.

The slow test runs the whole notebook with nbclient in this environment's `python3` kernel,
with ALEXNET_NOTEBOOK_CI=1: the notebook then skips its install, clone and Drive cells (no
network), keeps everything under a temporary root and trains a tiny config. Every step's
subprocess CLI is the notebook's own command line, so a renamed flag or module breaks it here.
"""

import json
import os
import re

import nbformat
import pytest
from data_utils import REPO

NOTEBOOK = os.path.join(REPO, 'notebooks', 'colab.ipynb')
# Cell ids of the notebook, one per step, in order.
STEPS = ('parameters', 'install', 'storage', 'devices', 'train', 'resume', 'tensorboard',
         'ablation', 'summary', 'evaluate', 'imagenette')


def _read():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  return nb


def _code_cells(nb):
  return {c.id: c for c in nb.cells if c.cell_type == 'code'}


def test_notebook_is_valid_with_outputs_cleared():
  nb = _read()
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == 'python3'
  cells = _code_cells(nb)
  assert tuple(cells) == STEPS
  for cell in cells.values():
    assert cell.outputs == [] and cell.execution_count is None, cell.id
  assert 'parameters' in cells['parameters'].metadata.tags


def test_every_command_runs_the_kernels_python_and_network_steps_are_guarded():
  """`!python` would be whatever python is on PATH (not the venv's in CI): commands use
  {PY} (sys.executable). pip, git, Drive and the Imagenette download run only outside CI."""
  cells = _code_cells(_read())
  for name, cell in cells.items():
    assert not re.search(r'!\s*python', cell.source), name
    for line in cell.source.splitlines():
      if line.lstrip().startswith('!'):
        assert '{PY}' in line or 'git clone' in line, (name, line)
  install = cells['install'].source
  assert 'if CI:' in install and 'else:' in install
  for network in ('pip install', 'git clone'):
    assert install.index(network) > install.index('else:'), network
  # The documented Colab install line (docs/install.md), package for package.
  with open(os.path.join(REPO, 'docs', 'install.md')) as f:
    (colab_row,) = [line for line in f if line.startswith('| Colab |')]
  readme_packages = re.search(r'"jax\[cuda12\]>=0.10" (.*?)`', colab_row).group(1).split()
  assert readme_packages and all(p in install for p in readme_packages), readme_packages
  assert '--no-deps -e .' in colab_row and 'pip install -q --no-deps -e .' in install
  assert 'google.colab' in cells['storage'].source
  storage = cells['storage'].source
  assert storage.index('google.colab') < storage.index('elif not CI')
  assert 'RUN_IMAGENETTE and not CI' in cells['imagenette'].source
  for build in ('jax[cuda12]>=0.10', 'jax[tpu]>=0.10', 'jax>=0.10'):
    assert build in install


def _text(cell) -> str:
  out = []
  for o in cell.outputs:
    if o.output_type == 'stream':
      out.append(o.text)
    elif o.output_type in ('execute_result', 'display_data'):
      out.append(o.data.get('text/plain', '') + o.data.get('text/markdown', ''))
  return ''.join(out).replace('\r\n', '\n')   # `!` runs in a pty


@pytest.mark.slow
def test_notebook_runs_headless_on_cpu(tmp_path):
  import nbclient
  nb = _read()
  env = dict(os.environ, ALEXNET_NOTEBOOK_CI='1', ALEXNET_NOTEBOOK_ROOT=str(tmp_path),
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  # One device, as on a Colab runtime (the summary cell sets its own 8): drop the test
  # session's simulated devices.
  env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                            env.get('XLA_FLAGS', '')).strip()
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': REPO}})
  client.execute(env=env)       # raises CellExecutionError on the first failing cell
  cells = _code_cells(nb)
  text = {name: _text(cell) for name, cell in cells.items()}

  assert 'repository: ' + REPO in text['install']
  assert f'workdir: {tmp_path}/default' in text['storage']
  assert re.search(r'JAX [\d.]+ on cpu: 1 device\(s\)', text['devices']), text['devices']
  assert 'backend: cpu' in text['devices'] and 'WARNING: this runtime' not in text['devices']
  assert 'eval at step 8: top1' in text['train'], text['train'][-3000:]
  assert 'checkpoint step 8 written' in text['train']
  assert f'Resumed from {tmp_path}/default/checkpoints at step 8' in text['resume']
  assert 'TensorBoard skipped' in text['tensorboard']
  # The ablation: two runs, the table and the plot shown.
  png = tmp_path / 'ablations' / 'ablations.png'
  assert png.stat().st_size > 10_000
  assert [o for o in cells['ablation'].outputs if 'image/png' in o.get('data', {})]
  runs = json.loads((tmp_path / 'ablations' / 'ablations.json').read_text())
  variants = {v['name']: v for v in runs['variants']}
  assert set(variants) == {'baseline', 'lrn'} and variants['lrn']['overrides'] == {
      'model.lrn': 'none'}
  assert all(v['n'] == 1 and 0 <= v['final_top1_mean'] <= 1 for v in variants.values())
  assert '| baseline | - | 1 |' in text['ablation'], text['ablation'][-3000:]
  assert '| lrn | `model.lrn=none` | 1 |' in text['ablation']
  # The two towers on 8 simulated devices: the paper's model split over 'model'.
  assert 'Mesh: data=4, model=2  (8 x cpu)' in text['summary'], text['summary'][-3000:]
  assert '60,965,224' in text['summary']
  assert re.search(r'conv3\s+all-gather\s+model', text['summary'])
  assert not re.search(r'conv[1245]\s+\S+\s+model', text['summary'])
  # The evaluation table, centre crop and 10 crops, every validation image counted.
  assert re.search(r'crops\s+top-1\s+top-5', text['evaluate']), text['evaluate'][-3000:]
  for crops in (1, 10):
    assert re.search(rf'\n\s+{crops}\s+[01]\.\d{{4}}\s+[01]\.\d{{4}}.*\s64\n', text['evaluate'])
  assert (tmp_path / 'default' / 'eval_validation_latest.json').exists()
  assert 'Imagenette skipped' in text['imagenette']
