"""notebooks/colab.ipynb: valid, committed without outputs, and executed headless on CPU.

The slow test runs the whole notebook with nbclient in this environment's `python3` kernel,
with ALEXNET_NOTEBOOK_CI=1: the install cell then runs notebooks/colab_setup.py as a dry run
(detection and the pip commands, no network; tests/test_colab_setup.py runs the script for
real in a fresh venv), the clone, Drive and TensorBoard are skipped, everything stays under
a temporary root and a tiny config trains. Every step's subprocess CLI is the notebook's own
command line, so a renamed flag or module breaks it here. DeprecationWarnings are shown
(PYTHONWARNINGS, inherited by every command) and refused where the project's own code
triggers them; third-party ones are only shown.
"""

import json
import os
import re

import nbformat
import pytest
from data_utils import REPO

NOTEBOOK = os.path.join(REPO, 'notebooks', 'colab.ipynb')
# Cell ids of the notebook, one per step, in order.
STEPS = ('parameters', 'install', 'storage', 'devices', 'tensorboard', 'train', 'resume',
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
  assert install.index('git clone') > install.index('else:')
  # All of the installing is the set-up script's (the same in CI, as a dry run): no pip here.
  assert '!{PY} notebooks/colab_setup.py {SETUP_FLAGS}' in install and 'pip' not in install
  assert "SETUP_FLAGS = '--dry-run'" in install
  # The repository URL: no placeholder a shell would misread; unset, one clear line.
  parameters = cells['parameters'].source
  (url_line,) = [line for line in parameters.splitlines() if line.startswith('REPO_URL =')]
  assert "os.environ.get('ALEXNET_REPO_URL', '')" in url_line
  assert '<' not in ''.join(c.source for c in cells.values())
  assert 'if not REPO_URL:' in install and 'raise Stop(' in install
  assert '!git clone -q "{REPO_URL}" "{REPO_DIR}"' in install
  assert 'google.colab' in cells['storage'].source
  storage = cells['storage'].source
  assert storage.index('google.colab') < storage.index('elif not CI')
  assert 'RUN_IMAGENETTE and not CI' in cells['imagenette'].source
  assert '%tensorboard --logdir {ROOT}' in cells['tensorboard'].source


def test_a_stop_is_one_line_without_a_traceback():
  """check() and the unset REPO_URL raise Stop, which IPython shows as its one line."""
  namespace = {'__name__': 'parameters'}
  source = _code_cells(_read())['parameters'].source
  exec(compile(source[source.index('class Stop'):], 'parameters', 'exec'), namespace)
  namespace['_exit_code'] = 128
  with pytest.raises(namespace['Stop']) as e:
    namespace['check']('git clone')
  assert e.value._render_traceback_() == [
      'error: git clone failed with exit status 128: see its output above']


def _lock_version(name: str) -> str:
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    (line,) = [line for line in f if line.startswith(f'{name}==')]
  return line.split('==')[1].split(';')[0].strip()


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
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONWARNINGS='default::DeprecationWarning')
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

  # The install cell ran the set-up script: CPU detected, the lock's JAX, the constraints.
  lock = _lock_version('jax')
  assert f'runtime: cpu; JAX build: jax=={lock}' in text['install'], text['install']
  assert f"-c {REPO}/notebooks/constraints.txt" in text['install']
  assert f'--no-deps -e {REPO}' in text['install']
  assert 'repository: ' + REPO in text['install']
  assert f'workdir: {tmp_path}/default' in text['storage']
  assert re.search(r'JAX [\d.]+ on cpu: 1 device\(s\)', text['devices']), text['devices']
  assert 'backend: cpu' in text['devices'] and 'WARNING: this runtime' not in text['devices']
  assert 'eval at step 8: top1' in text['train'], text['train'][-3000:]
  assert 'checkpoint step 8 written' in text['train']
  assert f'Resumed from {tmp_path}/default/checkpoints at step 8' in text['resume']
  assert 'TensorBoard skipped' in text['tensorboard']
  # The ablation: three runs (baseline, no LRN, its constant control), the table and the plot shown.
  png = tmp_path / 'ablations' / 'ablations.png'
  assert png.stat().st_size > 10_000
  assert [o for o in cells['ablation'].outputs if 'image/png' in o.get('data', {})]
  runs = json.loads((tmp_path / 'ablations' / 'ablations.json').read_text())
  variants = {v['name']: v for v in runs['variants']}
  # --sweep=lrn on a paper-LRN base runs the constant-factor control beside 'none'.
  assert set(variants) == {'baseline', 'lrn', 'lrn_constant'}
  assert variants['lrn']['overrides'] == {'model.lrn': 'none'}
  assert variants['lrn_constant']['overrides'] == {'model.lrn': 'constant'}
  assert all(v['n'] == 1 and 0 <= v['final_top1_mean'] <= 1 for v in variants.values())
  assert '| baseline | - | 1 |' in text['ablation'], text['ablation'][-3000:]
  assert '| lrn | `model.lrn=none` | 1 |' in text['ablation']
  assert '| lrn_constant | `model.lrn=constant` | 1 |' in text['ablation']
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
  # DeprecationWarnings were shown; none may come from the project's own code.
  ours = re.compile(rf'{re.escape(REPO)}/(alexnet_jax|configs|experiments)/\S+:\d+: '
                    r'DeprecationWarning')
  assert not [line for t in text.values() for line in t.splitlines() if ours.search(line)]
