"""CIFAR-10 end to end on 200 real CIFAR-10 training images (tests/data/cifar10: the first
20 of each class of the JPEG copy), through the real `main` and `evaluate` commands."""

import json
import os

import pytest
from data_utils import CIFAR_DIR, run_cli, train_cifar

from alexnet_jax.common import config_lib
from alexnet_jax.data import pipeline, sources
from configs import cifar10_conv_local, cifar10_fast

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck')


def test_folder_holds_out_a_fixed_part_of_every_class():
  train = sources.folder_listing(CIFAR_DIR, 'train')
  val = sources.folder_listing(CIFAR_DIR, 'validation')
  assert train.classes == val.classes == CLASSES
  assert (len(train.paths), len(val.paths)) == (167, 33)
  assert not set(train.paths) & set(val.paths)
  # About 10% of each class, by a hash of the file name (1 to 6 of these 20 per class).
  assert [val.labels.count(k) for k in range(10)] == [4, 3, 1, 5, 5, 3, 3, 2, 1, 6]
  assert sources.folder_listing(CIFAR_DIR, 'validation') == val


@pytest.mark.parametrize('module,arg,crop,flip', [
    (cifar10_fast, None, 32, True), (cifar10_fast, 'recipe=cuda_convnet', 32, False),
    (cifar10_conv_local, None, 24, True)])
def test_configs_keep_cifar_images_at_32_and_crop(module, arg, crop, flip):
  c = module.get_config(arg)
  c.dataset.folder = CIFAR_DIR
  spec = config_lib.validate(c)
  assert pipeline.host_image_size(c, train=True) == pipeline.host_image_size(c, False) == 32
  assert spec.input_size == crop and c.input.random_crop == 'paper' and c.input.flip == flip
  assert (c.input.mean, c.input.pca_lighting, c.input.scale) == ('image', 0.0, 1.0)
  assert c.mesh.model == 1 and c.optimizer.bias_lr_multiplier == 2.0
  assert not c.optimizer.decay_biases


@pytest.mark.slow
@pytest.mark.parametrize('module,params', [('cifar10_fast', '145,578'),
                                           ('cifar10_conv_local', '1,116,490')])
def test_three_training_steps_and_an_evaluation_through_the_commands(module, params,
                                                                       tmp_path, request):
  if module == 'cifar10_fast':
    # The session's run of it (conftest.cifar_fast_run: the same two commands), which
    # test_evaluate_folder scores folders with too.
    run = request.getfixturevalue('cifar_fast_run')
    workdir, stderr, records = run['workdir'], run['stderr'], run['records']
    evaluated = run['evaluate']
  else:
    workdir = str(tmp_path / 'run')
    r, records = train_cifar(module, workdir, str(tmp_path / 'data'))
    stderr = r.stderr
    evaluated = run_cli('alexnet_jax.evaluate', f'--workdir={workdir}', '--checkpoint=latest',
                        timeout=900)
  assert f'{params} parameters' in stderr
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in train] == [1, 2, 3] and [r['step'] for r in evals] == [3]
  assert evals[0]['count'] == 33
  # ln 10 from cuda-convnet's tiny init (conv-local); He's init (the fast recipe) starts
  # with logits of std ~1, so near it.
  tolerance = 1.0 if module == 'cifar10_fast' else 0.05
  assert all(abs(r['loss'] - 2.3026) < tolerance for r in train)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  result = json.load(open(os.path.join(workdir, 'eval_validation_latest.json')))
  assert result['crops_1']['count'] == result['crops_10']['count'] == 33
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['model']['arch'] == module.replace('cifar10_fast', 'cifar10_80sec')
