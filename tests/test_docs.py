"""README.md and docs/ against the code: what CI runs, the paths they name, the tables
regenerated from results files. Text only (no JAX), so it belongs to the fast lane."""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))


def _read(path: str) -> str:
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def _tables():
  spec = importlib.util.spec_from_file_location('docs_tables', os.path.join(REPO, 'docs',
                                                                            'tables.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _code_blocks(text: str) -> list[str]:
  return re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)


def test_readme_is_a_front_page_of_at_most_200_lines():
  readme = _read('README.md')
  assert len(readme.splitlines()) <= 200
  blocks = _code_blocks(readme)
  assert ('python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet\n'
          in blocks)
  # every docs page is linked from the front page, and every link there is a page
  linked = set(re.findall(r'\]\((docs/[^)#]+\.md)\)', readme))
  assert linked == {os.path.relpath(p, REPO) for p in DOCS}


def test_readme_setup_line_and_test_command_are_what_ci_runs():
  """.ci/run installs exactly as the README says and runs the README's test command."""
  ci = _read('.ci/run').splitlines()
  setup = ci[ci.index('# --- set-up (README) ---') + 1]
  tests = ci[ci.index('# --- tests (README) ---') + 1:]
  env = dict(re.fullmatch(r'export (\w+)=(\S+)', line).groups()
             for line in tests if line.startswith('export '))
  (command,) = [line for line in tests if line and not line.startswith(('export ', '#'))]
  blocks = _code_blocks(_read('README.md'))
  assert setup + '\n' in blocks
  readme_test = ' '.join(f'{k}={v}' for k, v in env.items()) + ' ' + command
  assert readme_test == 'XLA_FLAGS=--xla_force_host_platform_device_count=8 ' \
                        'TF_CPP_MIN_LOG_LEVEL=2 python -m pytest'
  assert readme_test + '\n' in blocks


# A path in backquotes or a link, rooted at a top-level folder of the repository.
_PATH = re.compile(r'(?<![\w./-])((?:alexnet_jax|benchmarks|configs|docs|experiments|notebooks'
                   r'|tests)/[\w./-]*[\w/])')


@pytest.mark.parametrize('doc', ['README.md', 'experiments/cpu_study/README.md',
                                 'benchmarks/logs/step.md', 'benchmarks/logs/input.md']
                         + [os.path.relpath(p, REPO) for p in DOCS])
def test_every_repository_path_named_exists(doc):
  """A moved or renamed file leaves no stale name behind (runs/ are sweep outputs, not
  committed; `..` paths are outside the repository)."""
  text = _read(doc)
  missing = set()
  for path in _PATH.findall(text):
    if '/runs/' in path or path.endswith('/runs'):
      continue
    if not os.path.exists(os.path.join(REPO, path)):
      missing.add(path)
  for link in re.findall(r'\]\(([^)#:]+)\)', text):   # relative links, from the page
    if not os.path.exists(os.path.join(REPO, os.path.dirname(doc), link)):
      missing.add(link)
  assert not missing, sorted(missing)


def test_no_removed_module_names_in_docs():
  """The layout of commit 831610a: the old flat module names are gone."""
  old = ['models.py', 'optim.py', 'input_pipeline', 'weight_io', 'caffe_io', 'inference.py',
         'figures_lib', 'plotting.py', 'workdir_lock', 'evaluation.py', 'imagenet.py',
         'report.py', 'alexnet_jax.plots ', 'step_benchmarks.md', 'input_benchmarks.md']
  for doc in ['README.md'] + [os.path.relpath(p, REPO) for p in DOCS]:
    text = _read(doc)
    for name in old:
      # historical mentions say "was"/"gone"/"then"; only docs/options.md and figures.md
      # mention the removed plots command, to say so
      hits = [line for line in text.splitlines()
              if name in line and not re.search(r'\b(gone|was|then)\b', line)]
      assert not hits, (doc, name, hits)


def test_ablations_table_matches_the_committed_json():
  tables = _tables()
  with open(os.path.join(REPO, tables.ABLATIONS_JSON)) as f:
    table = tables.ablations_table(json.load(f))
  assert table in _read('docs/ablations.md')
  # and the numbers are the committed sweep's: baseline 40.0 ± 1.0, pooling -9.2 at p 0.044
  assert '| 40.0 ± 1.0 |' in table and '-9.2 (p 0.044)' in table


CIFAR10_ABLATIONS_JSON = 'experiments/results/ablations_cifar10/ablations.json'


def test_the_cifar10_ablations_table_matches_its_committed_json():
  """The headline sweep's table in docs/ablations.md is what docs/tables.py prints from
  the committed CIFAR-10 results, and the README leads its results with that sweep."""
  tables = _tables()
  with open(os.path.join(REPO, CIFAR10_ABLATIONS_JSON)) as f:
    report = json.load(f)
  table = tables.ablations_table(report)
  assert table in _read('docs/ablations.md')
  assert report['base'].endswith('configs/cifar10_fast.py')
  readme = _read('README.md')
  assert readme.index('ablations_cifar10') < readme.index('configs/ablation_base.py')


def test_a_variant_with_one_finished_seed_has_no_std_and_no_p():
  table = _tables().ablations_table({'variants': [
      {'name': 'baseline', 'final_top1_mean': 0.75, 'final_top1_std': 0.004},
      {'name': 'activation', 'final_top1_mean': 0.713, 'final_top1_std': None,
       'vs_baseline': {'diff_top1': -0.037, 'p_welch': None}}]})
  lines = table.splitlines()
  assert lines[2] == '| 75.0 ± 0.4 | 71.3 (1 seed) |'
  assert lines[3] == '| | -3.7 (no p: 1 seed) |'


def test_ablations_table_compares_no_lrn_with_its_control():
  """A sweep with the LRN control (lrn_constant) gets a row of each ablation against its
  control; the committed sweep predates it and has none."""
  def variant(name, mean, diff=None, p=None, control=None):
    v = {'name': name, 'final_top1_mean': mean, 'final_top1_std': 0.01}
    if diff is not None:
      v['vs_baseline'] = {'diff_top1': diff, 'p_welch': p}
    if control is not None:
      v['vs_control'] = {'control': 'lrn_constant', 'diff_top1': control, 'p_welch': 0.5}
    return v
  table = _tables().ablations_table({'variants': [
      variant('baseline', 0.40), variant('lrn', 0.45, 0.05, 0.1, control=0.08),
      variant('lrn_constant', 0.37, -0.03, 0.2)]})
  lines = table.splitlines()
  assert lines[0] == "| baseline | no LRN | LRN's constant only (the control) |"
  assert lines[3] == '| | +5.0 (p 0.10) | -3.0 (p 0.20) |'
  assert lines[4] == '| | vs lrn_constant: +8.0 (p 0.50) | |'


def test_the_dropout_heading_says_which_way_the_toggle_went():
  tables = _tables()
  off = {'name': 'dropout', 'overrides': {'model.dropout_rate': '0.0'}}
  on = {'name': 'dropout', 'overrides': {'model.dropout_rate': 0.5}}
  assert tables._heading(off) == 'no dropout' and tables._heading(on) == 'dropout 0.5'
  assert tables._heading({'name': 'activation'}) == 'tanh'


def test_tables_script_prints_the_table():
  out = subprocess.run([sys.executable, 'docs/tables.py', 'ablations'], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.startswith('| baseline | no LRN |') and out.count('\n') == 4
  bad = subprocess.run([sys.executable, 'docs/tables.py', 'nonsense'], cwd=REPO,
                       capture_output=True, text=True)
  assert bad.returncode == 2 and 'python docs/tables.py ablations' in bad.stderr


def test_no_absolute_machine_paths_committed():
  files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
  if not files:
    pytest.skip('not a git checkout')
  bad = []
  for name in files:
    path = os.path.join(REPO, name)
    if not os.path.isfile(path) or name.endswith(('.png', '.jpg', '.JPEG', '.npy', '.gz')):
      continue
    with open(path, 'rb') as f:
      data = f.read()
    if re.search(rb'(?<![\w.])/(?:work|root|home)/\w', data):
      bad.append(name)
  assert not bad, bad


CLAIMS_DIR = 'experiments/results/cifar10'


def test_the_cifar10_claims_files_hold_the_issue_keys_and_the_readme_quotes_them():
  """The committed results of the paper's CIFAR-10 claims (issue 18) carry the keys a
  script reads, name no path of the machine they ran on, and the README's results rows
  quote their headline numbers as the files hold them."""
  def load(name):
    text = _read(os.path.join(CLAIMS_DIR, name))
    assert not re.search(r'"/(home|work|tmp|root|Users)/', text), name
    return json.loads(text)

  readme = _read('README.md')
  fig = load('figure1.json')
  assert set(fig['epochs_to_25pct_train_error']) == {'relu', 'tanh'}
  assert set(fig['learning_rates']) == {'relu', 'tanh'} and len(fig['seeds']) >= 2
  assert fig['ratio_kind'] in ('exact', 'lower_bound', 'upper_bound')
  assert f'tanh/relu {fig["ratio_text"]}' in readme
  lrn = load('lrn.json')
  for name in ('with_lrn', 'without_lrn', 'constant_control'):
    assert {'val_error_mean', 'val_error_std', 'n'} <= set(lrn[name]) and lrn[name]['n'] >= 3
  assert 0 <= lrn['welch_p'] <= 1 and lrn['epochs'] > 0
  assert (f'{100 * lrn["with_lrn"]["val_error_mean"]:.1f}% vs '
          f'{100 * lrn["without_lrn"]["val_error_mean"]:.1f}%') in readme
  drop = load('dropout.json')
  for name in ('with_dropout', 'without_dropout'):
    assert {'train_error', 'val_error'} <= set(drop[name])
  assert (f'validation error {100 * drop["with_dropout"]["val_error"]:.1f}% vs '
          f'{100 * drop["without_dropout"]["val_error"]:.1f}%') in readme
