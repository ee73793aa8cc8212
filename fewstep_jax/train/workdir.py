"""One trainer per workdir, and a workdir that can be written before any work is done.

`WorkdirLock` is a file, workdir/run.lock, created atomically by the trainer (process 0 of a multi-host run:
the lock belongs to the run, whose processes share the workdir by design) and removed when it ends. A second
trainer on the same workdir is refused with the owner's host and pid. A lock left by a trainer that was killed
(SIGKILL, a lost machine) is stale: on the same host, its pid no longer runs, and it is taken over with a message;
on another host, its heartbeat (the file's modification time, refreshed at every logged step) is older than
`stale_after_s`.
"""
import json
import os
import socket
import time

from fewstep_jax.errors import RunError, WorkdirInUseError

LOCK_FILE = 'run.lock'


def _pid_runs(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Runs, under another user.
    return True
  return True


class WorkdirLock:

  def __init__(self, workdir: str, stale_after_s: float = 3600.0, log=print):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.stale_after_s, self.log = stale_after_s, log
    self.owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.strftime('%Y-%m-%d %H:%M:%S')}
    self.held = False

  def _holder(self):
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None  # Gone meanwhile, or torn: a lock that names no owner.

  def _is_stale(self, holder) -> bool:
    if holder is None:
      return True
    if holder.get('host') == self.owner['host']:
      return not _pid_runs(int(holder.get('pid', -1)))
    try:
      return time.time() - os.path.getmtime(self.path) > self.stale_after_s
    except OSError:
      return True

  def acquire(self):
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if not self._is_stale(holder):
          raise WorkdirInUseError(
              f'{os.path.dirname(self.path)} is in use by a trainer on host {holder.get("host")} with pid '
              f'{holder.get("pid")} (since {holder.get("since")}). Wait for it or stop it, or use another '
              f'--workdir; if no such trainer runs, delete {self.path}.')
        self.log(f'taking over the stale lock {self.path} of a trainer that no longer runs ({holder})')
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(self.owner, f)
      self.held = True
      return self
    raise WorkdirInUseError(f'could not take the lock {self.path}: another trainer keeps creating it')

  def live_holder(self):
    """The owner of a live (not stale) lock on this workdir, or None."""
    if not os.path.exists(self.path):
      return None
    holder = self._holder()
    return None if self._is_stale(holder) else holder

  def heartbeat(self):
    if self.held:
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self):
    if self.held and (self._holder() or {}).get('pid') == self.owner['pid']:
      os.remove(self.path)
    self.held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def check_writable(directory: str):
  """Creates `directory` and a file in it, before hours of work whose results would go there."""
  probe = os.path.join(directory, f'.write-test-{os.getpid()}')
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as error:
    raise RunError(f'cannot write to {directory} ({error.strerror or error}): results would be lost. Make it '
                   'writable, or pass another --workdir.') from error
