"""Test set-up: 8 simulated CPU devices, so the ('data', 'model') mesh is real; shared fixtures.

Tests marked `slow` (more than ~10 s each on 2 cores) are left out by the fast lane,
`python -m pytest -m "not slow"`; CI runs them all.
"""

import os
import sys
import tempfile

import pytest

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Two XLA:CPU pool threads per simulated device (NPROC), or its collectives can deadlock
# and abort the whole pytest process: alexnet_jax/__init__.py says why and sets it, before
# JAX starts; the CLIs the tests run inherit it.
import alexnet_jax  # noqa: E402, F401

# TensorFlow and Triton (which torchvision imports from torch's CUDA builds) each bring
# their own LLVM, and loading both into one process crashes it (a segfault in
# `import tensorflow; import torchvision`). The tests run torch eagerly on the CPU and
# need no Triton: hide it, so test_weights can import torchvision after TF is loaded.
sys.modules.setdefault('triton', None)
# A persistent XLA compilation cache for this test session (fresh each run, shared with
# the CLIs the tests start as subprocesses): XLA:CPU spends seconds on every threefry
# random-number kernel, and many tests compile the same tiny step; identical programs
# are then compiled once. Tests that count compilations count jit's own cache, which
# this does not touch.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='alexnet_jax_xla_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.3')

import data_utils  # noqa: E402  (after XLA_FLAGS: nothing in it may start JAX first)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root() -> str:
  """The repository root (the working directory of subprocess runs of the CLIs)."""
  return REPO


@pytest.fixture(scope='session')
def sample_dir() -> str:
  """The folder of real ImageNet sample photos (tests/data/imagenet-sample, or
  $ALEXNET_IMAGENET_SAMPLE)."""
  return data_utils.SAMPLE_DIR


@pytest.fixture(scope='session')
def sample_photos(sample_dir) -> list[str]:
  """Sorted paths of the sample photos (*.JPEG); data_utils.sample_jpegs fails without them."""
  return data_utils.sample_jpegs(sample_dir)


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the built-in dataset at the sizes of data_utils.TINY_RUN,
  built once per session (training runs then also cache its mean image there)."""
  from alexnet_jax.data.datasets import shapes
  data_dir = tmp_path_factory.mktemp('tiny_tfds')
  config = data_utils.tiny_config(data_dir)
  shapes.builder(str(data_dir), image_size=config.dataset.shapes_image_size,
                 train_size=config.dataset.shapes_train_size,
                 validation_size=config.dataset.shapes_validation_size).download_and_prepare()
  return data_dir


@pytest.fixture(scope='session')
def fault_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the built-in dataset at the sizes of fault_utils.TINY (the
  tiny run of `main` launches) and its mean image, built once per session: the launches
  of test_faults_subprocess and test_divergence only read it, so none pays for building."""
  import fault_utils

  from alexnet_jax.data import sources, statistics
  data_dir = tmp_path_factory.mktemp('fault_tfds')
  config = fault_utils.tiny_config(data_dir)
  assert sources.num_examples(config, 'train') == 256
  statistics.load_or_compute_mean_image(config)
  return data_dir


@pytest.fixture(scope='session')
def fresh_workdir(tiny_data_dir, tmp_path_factory) -> str:
  """A run's workdir of freshly initialised parameters on the tiny dataset (config.json,
  preprocessing.npz, checkpoints/2 and best/1; workdir_utils.make_workdir), made once per
  session: predict and figure tests."""
  import workdir_utils
  workdir = tmp_path_factory.mktemp('fresh_run')
  workdir_utils.make_workdir(workdir, tiny_data_dir, seed=3)
  return str(workdir)


@pytest.fixture(scope='session')
def cifar_workdir(tmp_path_factory) -> str:
  """A run's workdir of a CIFAR-10 net (cifar10_18pct: its output layer reads a pooling,
  'conv3_avg') with fresh parameters on tests/data/cifar10 (workdir_utils.cifar_config):
  the weights-export and figure tests of the CIFAR nets."""
  import workdir_utils
  workdir = tmp_path_factory.mktemp('cifar_run')
  config = workdir_utils.cifar_config('cifar10_18pct', tmp_path_factory.mktemp('cifar_data'))
  workdir_utils.make_workdir(workdir, None, config=config, seed=1)
  return str(workdir)


@pytest.fixture(scope='session')
def cifar_fast_run(tmp_path_factory) -> dict:
  """Three steps of configs/cifar10_fast.py on tests/data/cifar10 through the `main` command
  (data_utils.train_cifar) and `evaluate --checkpoint=latest` on it, run once per session
  (two launches, about a minute on 2 cores): test_cifar_train checks the run and its
  evaluation, test_evaluate_folder scores folders with it. Returns {'workdir', 'stderr'
  (main's), 'records' (metrics.jsonl), 'evaluate' (the evaluate process)}. Tests that write
  into the workdir take their own copy (shutil.copytree): it is shared."""
  root = tmp_path_factory.mktemp('cifar_fast_run')
  workdir = str(root / 'run')
  r, records = data_utils.train_cifar('cifar10_fast', workdir, str(root / 'data'))
  evaluated = data_utils.run_cli('alexnet_jax.evaluate', f'--workdir={workdir}',
                                 '--checkpoint=latest', timeout=900)
  return {'workdir': workdir, 'stderr': r.stderr, 'records': records, 'evaluate': evaluated}

