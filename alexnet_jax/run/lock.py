"""One run per workdir: an exclusive lock held for the life of a training run.

A second `main` on a workdir that a live run holds (a double launch, a scheduler
retry, a notebook cell run twice) would resume from the first's checkpoints and
both would train, checkpoint and append to metrics.jsonl side by side. It is
refused instead: `WorkdirInUseError` names the workdir and the process holding it.

Local (and NFS) workdirs: `flock` on WORKDIR/.lock. The kernel drops the lock when
the holder dies, however it dies (kill -9 included), so a crashed run never blocks
its own resume; the file itself stays (it only says who held it last).

Object stores (gs://..., anything with '://') have no locks: there WORKDIR/.lock is a
lease, a JSON file the holder rewrites every HEARTBEAT_S seconds. A run refuses a lease
renewed less than LEASE_S ago by someone else. Limits, by design of object stores: two
launches within a few seconds of each other can both pass (there is no atomic
create-if-absent through `epath`), and after a kill -9 the lease blocks a resume until
it expires (LEASE_S) or the file is deleted; the message says which.

In a multi-process run only process 0 takes the lock; `acquire_for_run` tells the
other processes whether it did, so all of them stop together.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from alexnet_jax.common import exits

LOCK_NAME = '.lock'
HEARTBEAT_S = 60.0
LEASE_S = 300.0


class WorkdirError(RuntimeError):
  """The workdir cannot be used: another live run holds it, or it cannot be written."""
  exit_status = exits.WORKDIR


class WorkdirInUseError(WorkdirError):
  """Another live run holds the workdir."""


def _describe(info: dict) -> str:
  if not info:
    return 'another process (it has not written its name yet)'
  where = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
  started = info.get('started')
  if started:
    where += f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
  if info.get('command'):
    where += f": {info['command']}"
  return where


def _holder_info() -> dict:
  return {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time(),
          'command': ' '.join(sys.argv)[:500]}


class WorkdirLock:
  """The exclusive lock of a workdir (a context manager; `acquire` raises
  WorkdirInUseError when a live run holds it)."""

  def __init__(self, workdir: str, *, heartbeat_s: float = HEARTBEAT_S,
               lease_s: float = LEASE_S, use_lease: bool | None = None):
    self.workdir = str(workdir)
    self.path = epath.Path(self.workdir) / LOCK_NAME
    self.use_lease = ('://' in self.workdir) if use_lease is None else use_lease
    self.heartbeat_s, self.lease_s = heartbeat_s, lease_s
    self._fd: int | None = None
    self._token: str | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # ------------------------------------------------------------------ public

  def acquire(self) -> WorkdirLock:
    try:
      epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise self._not_writable(e) from e
    if not self.use_lease:
      try:
        self._acquire_flock()
        return self
      except WorkdirError:
        raise
      except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
          raise self._not_writable(e) from e
        logging.warning('%s does not support file locks (%s): using a lease file instead '
                        '(see alexnet_jax/workdir_lock.py for its limits).', self.workdir, e)
        self.use_lease = True
    self._acquire_lease()
    return self

  def release(self) -> None:
    if self._fd is not None:
      try:
        os.ftruncate(self._fd, 0)
      except OSError:
        pass
      os.close(self._fd)      # closing drops the flock
      self._fd = None
    if self._token is not None:
      self._stop.set()
      if self._thread is not None:
        self._thread.join()
      try:
        if self._read_lease().get('token') == self._token:
          self.path.unlink()
      except Exception as e:  # noqa: BLE001 - releasing must never fail the run
        logging.warning('could not remove the lease %s: %s', self.path, e)
      self._token = None

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def _not_writable(self, e: OSError) -> WorkdirError:
    return WorkdirError(f'workdir {self.workdir} cannot be written ({e.strerror or e}: '
                        f'{e.filename or self.path}); checkpoints and logs go there. Pass a '
                        'writable --workdir.')

  # ------------------------------------------------------------------ flock

  def _acquire_flock(self) -> None:
    fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      try:
        info = json.loads(os.pread(fd, 65536, 0) or b'{}')
      except ValueError:
        info = {}
      os.close(fd)
      raise WorkdirInUseError(
          f'workdir {self.workdir} is in use by another run: {_describe(info)}. Two runs on '
          'one workdir would train, checkpoint and log over each other. Wait for it to end, '
          f"stop it (kill {info.get('pid', '<pid>')} checkpoints and exits), or pass another "
          '--workdir.') from None
    except BaseException:
      os.close(fd)
      raise
    data = json.dumps(_holder_info()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    self._fd = fd

  # ------------------------------------------------------------------ lease

  def _read_lease(self) -> dict:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return {}
    except ValueError:        # half-written or damaged: nobody's
      return {}

  def _write_lease(self) -> None:
    self.path.write_text(json.dumps({**self._info, 'token': self._token,
                                     'heartbeat': time.time()}))

  def _acquire_lease(self) -> None:
    info = self._read_lease()
    age = time.time() - info.get('heartbeat', 0.0)
    if info and age < self.lease_s:
      raise WorkdirInUseError(
          f'workdir {self.workdir} is in use by another run: {_describe(info)}; its lease '
          f'{self.path} was renewed {age:.0f} s ago. If that run is gone (killed), the lease '
          f'expires in {self.lease_s - age:.0f} s, or delete {self.path}; otherwise wait for it '
          'to end or pass another --workdir.')
    self._token = uuid.uuid4().hex
    self._info = _holder_info()
    self._write_lease()
    # Two launches at the same moment: the later write wins; the other one sees it here.
    time.sleep(min(2.0, self.heartbeat_s / 4))
    info = self._read_lease()
    if info.get('token') != self._token:
      self._token = None
      raise WorkdirInUseError(f'workdir {self.workdir} was taken by another run at the same '
                              f'moment: {_describe(info)}.')
    self._thread = threading.Thread(target=self._heartbeat, name='workdir-lease', daemon=True)
    self._thread.start()

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        if self._read_lease().get('token') not in (None, self._token):
          logging.error('the lease %s was taken over by another run: %s', self.path,
                        _describe(self._read_lease()))
          return
        self._write_lease()
      except Exception as e:  # noqa: BLE001 - a missed heartbeat is retried
        logging.warning('could not renew the lease %s: %s', self.path, e)


def acquire_for_run(workdir: str) -> WorkdirLock | None:
  """Process 0 takes the workdir's lock; every process raises WorkdirError if it
  could not. Returns the lock on process 0 (release it at the end), None elsewhere."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except WorkdirError as e:
      error = e
  if jax.process_count() > 1:
    held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not held and error is None:
      error = WorkdirError(f'workdir {workdir}: process 0 could not lock it (its log says '
                           'why: another live run holds it, or it cannot be written).')
  if error is not None:
    raise error
  return lock
