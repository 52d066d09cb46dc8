"""alexnet_jax.common.exits: one table of exit statuses, and one `error:` line (status 2)
for a bad flag, an unknown config field or a value of the wrong type, in every command."""

import pytest
from data_utils import run_cli

from alexnet_jax.common import config_lib, exits


def test_the_table_and_its_docstring_agree():
  assert exits.TABLE == {0: 'OK', 1: 'PARTIAL', 2: 'USAGE', 3: 'DIVERGED', 4: 'WORKDIR',
                         5: 'CHECKPOINT'}
  for status, name in exits.TABLE.items():
    assert getattr(exits, name) == status
    assert f'  {status}       {name}' in exits.__doc__, name


def test_each_user_fault_has_its_status_and_a_bug_has_none():
  from alexnet_jax.run import checkpoints, lock, train
  from alexnet_jax.tools import weights
  assert exits.status_of(checkpoints.CheckpointError('none restores')) == exits.CHECKPOINT == 5
  assert exits.status_of(checkpoints.CheckpointSaveError('disk full')) == 5
  assert exits.status_of(lock.WorkdirInUseError('busy')) == exits.WORKDIR == 4
  assert exits.status_of(train.DivergedError('nan')) == exits.DIVERGED == 3
  for e in (ValueError('bad value'), FileNotFoundError('no run'), weights.WeightsError('x'),
            PermissionError('read-only')):
    assert exits.status_of(e) == exits.USAGE == 2, e
  assert exits.status_of(KeyError('a bug')) is None
  assert exits.status_of(RuntimeError('a bug')) is None


def test_user_fault_prints_one_line_and_returns_its_status_and_reraises_a_bug(capsys):
  from alexnet_jax.run import checkpoints
  assert exits.user_fault(checkpoints.CheckpointError('none restores')) == 5
  assert exits.user_fault(FileNotFoundError('no such run')) == 2
  assert capsys.readouterr().err == 'error: none restores\nerror: no such run\n'
  with pytest.raises(KeyError):
    exits.user_fault(KeyError('a bug'))


def test_an_override_of_no_field_names_the_closest_fields():
  config = config_lib.base()
  assert exits.diagnose_override(config, 'model.lrn') is None
  assert exits.diagnose_override(config, 'model') is None
  problem = exits.diagnose_override(config, 'model.lrm')
  assert problem.startswith('no such field; closest: model.lrn, ')
  assert all(f.startswith('model.') for f in problem.split('closest: ')[1].split(', '))
  assert exits.diagnose_override(config, 'modle.lrn').startswith(
      'no such field; closest: model.lrn')
  assert exits.diagnose_override(config, 'model.lrn.x') == (
      'no such field: model.lrn is a string, not a section of fields')


def _one_error_line(out) -> str:
  assert out.returncode == 2, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr[-3000:]
  return lines[0]


def test_main_config_typo_and_wrong_type_are_one_line_and_exit_2(tmp_path):
  args = ('--config=configs/default.py', f'--workdir={tmp_path / "w"}')
  line = _one_error_line(run_cli('alexnet_jax.main', *args, '--config.model.lrm=none'))
  assert line.startswith('error: --config.model.lrm: no such field; closest: model.lrn, ')
  line = _one_error_line(run_cli('alexnet_jax.main', *args, '--config.optimizer.momentum=fast'))
  assert line == ("error: --config.optimizer.momentum=fast: optimizer.momentum takes a float "
                  "(could not convert string to float: 'fast')")
  line = _one_error_line(run_cli('alexnet_jax.main', *args, '--config.model=none'))
  assert 'model is a section of fields' in line
  line = _one_error_line(run_cli('alexnet_jax.main', *args, '--no_such_flag=1'))
  assert "Unknown command line flag 'no_such_flag'" in line
  line = _one_error_line(run_cli('alexnet_jax.main', '--config=configs/nope.py',
                                 f'--workdir={tmp_path / "w"}'))
  assert line == 'error: --config=configs/nope.py: no such file'
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('command', [
    ('alexnet_jax.summary', '--config=configs/default.py'),
    ('alexnet_jax.prepare', '--config=configs/paper.py'),
    ('benchmarks.step',),
    ('benchmarks.input',),
])
def test_every_command_with_a_config_explains_a_bad_override(command):
  line = _one_error_line(run_cli(*command, '--config.no_such_field=1'))
  assert line.startswith('error: --config.no_such_field: no such field')


def test_usage_errors_exit_2_in_one_line():
  line = _one_error_line(run_cli('alexnet_jax.evaluate'))
  assert line == 'error: --workdir is required: the workdir of a training run'
  line = _one_error_line(run_cli('alexnet_jax.figures', 'nope', '--workdir=x'))
  assert line.startswith('error: give one figure: kernels | neighbours | curves')
  line = _one_error_line(run_cli('alexnet_jax.weights', 'export', '--workdir=x'))
  assert line == 'error: export needs --out=FILE (.pth, .pt or .safetensors; --to=params also .npz)'
