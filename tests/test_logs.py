"""alexnet_jax.common.logs: the log of a run holds this project's lines and warnings, not the
INFO chatter of Orbax, CLU, TFDS & co."""

import logging as std_logging
import os
import re

import pytest
from absl import logging
from data_utils import TINY_RUN, override_flags, run_cli

from alexnet_jax.common import logs

ORBAX_FILE = '/venv/lib/python3.11/site-packages/orbax/checkpoint/_src/path/atomicity.py'
OUR_FILE = os.path.join(logs.PACKAGE_DIR, 'train.py')


def record(pathname, level):
  return std_logging.makeLogRecord({'name': 'absl', 'levelno': level, 'pathname': pathname,
                                    'msg': 'x'})


def test_filter_keeps_our_lines_and_every_warning():
  f = logs.LibraryInfoFilter([logs.PACKAGE_DIR])
  assert f.filter(record(OUR_FILE, std_logging.INFO))
  assert f.filter(record(OUR_FILE, std_logging.DEBUG))
  assert not f.filter(record(ORBAX_FILE, std_logging.INFO))
  assert f.filter(record(ORBAX_FILE, std_logging.WARNING))
  assert f.filter(record(ORBAX_FILE, std_logging.ERROR))
  # A sibling directory whose name starts like the package's is not the package.
  assert not f.filter(record(logs.PACKAGE_DIR + '_other/x.py', std_logging.INFO))


def test_known_library_noise_is_dropped_but_no_other_warning():
  f = logs.LibraryInfoFilter([logs.PACKAGE_DIR])
  noise = std_logging.makeLogRecord({
      'name': 'absl', 'levelno': std_logging.WARNING, 'pathname': ORBAX_FILE,
      'msg': 'CheckpointManagerOptions.read_only=True, setting save_interval_steps=0.'})
  assert not f.filter(noise)
  other = std_logging.makeLogRecord({
      'name': 'absl', 'levelno': std_logging.WARNING, 'pathname': ORBAX_FILE,
      'msg': 'Checkpoint 12 is corrupt'})
  assert f.filter(other)
  # The same words from this project, or as an error, are kept.
  ours = std_logging.makeLogRecord({**noise.__dict__, 'pathname': OUR_FILE})
  assert f.filter(ours)
  assert f.filter(std_logging.makeLogRecord({**noise.__dict__, 'levelno': std_logging.ERROR}))


@pytest.fixture
def absl_handler():
  handler = logging.get_absl_handler()
  verbosity = logging.get_verbosity()
  yield handler
  for h in {handler, *std_logging.getLogger().handlers}:
    for f in [f for f in h.filters if isinstance(f, logs.LibraryInfoFilter)]:
      h.removeFilter(f)
  logging.set_verbosity(verbosity)


def test_setup_installs_one_filter_and_debug_verbosity_lifts_it(absl_handler, tmp_path):
  logs.setup()
  f = logs.setup(keep_dirs=[str(tmp_path)])            # again: replaces, does not stack
  assert [x for x in absl_handler.filters if isinstance(x, logs.LibraryInfoFilter)] == [f]
  assert f.filter(record(str(tmp_path / 'script.py'), std_logging.INFO))
  assert not f.filter(record(ORBAX_FILE, std_logging.INFO))
  logging.set_verbosity(logging.DEBUG)                  # --verbosity=1: everything again
  assert f.filter(record(ORBAX_FILE, std_logging.INFO))


LOG_LINE = re.compile(r'^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([\w.]+):\d+\] (.*)$')
KINDS = {
    'start': re.compile(r'^(Mesh |Config |Devices? |JAX [\d.]+ on |Resumed from |'
                        r'Initialised parameters |[\d,]+ parameters|PCA lighting: )'),
    'step': re.compile(r'^step \d+/\d+  loss '),
    'eval': re.compile(r'^eval at step \d+: '),
    'lr': re.compile(r'^(Step \d+: learning rate -> |Validation top-1 stopped improving)'),
    # Confirmation that a save is complete on disk (never logged for a failed one).
    'checkpoint': re.compile(r'^checkpoint step \d+ written: '),
}
# XLA's "Very slow compile?" alarm (a multi-line C++ error record) depends on the machine's
# load, not on this project's logging.
LOAD_DEPENDENT = {'slow_operation_alarm.cc'}


def log_records(text: str) -> list[tuple[re.Match, list[str]]]:
  """(first line's match, continuation lines) per log record; a line before any record
  (e.g. a progress bar) fails the test."""
  records = []
  for line in text.splitlines():
    m = LOG_LINE.match(line)
    if m:
      records.append((m, []))
    elif line.strip():
      assert records, f'output before any log line: {line!r}'
      records[-1][1].append(line)
  return records


@pytest.mark.slow
def test_a_training_run_logs_only_what_a_user_reads(tiny_data_dir, tmp_path):
  """A short run of the real command: every output line is a one-line log record of an
  expected kind, one per log step, eval and learning-rate change; no library INFO line."""
  overrides = {**TINY_RUN, 'dataset.data_dir': tiny_data_dir, 'mesh.model': 1,
               'schedule.step_epochs': (0.5, 100.0)}     # one rate drop, at step 4
  # As a user runs it (logs.setup() sets TF_CPP_MIN_LOG_LEVEL itself); one device
  # compiles fastest.
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  out = run_cli('alexnet_jax.main', '--config=configs/default.py',
                f'--workdir={tmp_path / "run"}', *override_flags(overrides), timeout=600,
                env=env)
  text = out.stdout + out.stderr
  assert out.returncode == 0, text[-5000:]
  records = [(m, more) for m, more in log_records(text) if m.group(2) not in LOAD_DEPENDENT]
  ours = {name for _, _, names in os.walk(logs.PACKAGE_DIR) for name in names
          if name.endswith('.py')}
  kinds = {kind: 0 for kind in KINDS}
  for m, more in records:
    assert not more, f'a multi-line record (a table?): {m.group(0)}\n' + '\n'.join(more)
    level, source, message = m.groups()
    if level == 'I':
      assert source in ours, f'library INFO line: {m.group(0)}'
      kind = next((k for k, pattern in KINDS.items() if pattern.match(message)), None)
      assert kind, f'INFO line of no expected kind: {m.group(0)}'
      kinds[kind] += 1
  steps, log_every, eval_every = (TINY_RUN[k] for k in (
      'num_train_steps', 'log_every_steps', 'eval_every_steps'))
  assert kinds['step'] == steps // log_every and kinds['eval'] == steps // eval_every
  assert kinds['lr'] == 1 and 1 <= kinds['start'] <= 6, kinds
  saves = steps // TINY_RUN['checkpoint_every_steps'] + steps // eval_every   # latest + best
  assert 1 <= kinds['checkpoint'] <= saves, kinds
  # Warnings (e.g. TFDS's on a dataset of custom size) are kept but must stay few.
  assert len(records) <= sum(kinds.values()) + 3, text
