"""Orbax checkpoints of the TrainState plus the data iterator state, the metrics of the steps since the last
logged row, and the config.

Saves are asynchronous: `save` returns once the arrays are copied off the device, and the files are written
in the background, so training continues while they are written.

Restoring (`restore_newest`) tries the newest committed step first. A step whose files cannot be read is named
with the file and the reason, and the next older committed step is tried (saying so); a step deleted while it is
read (an eval next to a live trainer that keeps only `max_to_keep` steps) is skipped for the newest one left. A
step directory without Orbax's commit marker (a save cut short) is not a checkpoint.
"""
import contextlib
import errno
import gc
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from fewstep_jax.errors import CheckpointError, DiskFullError

# Written by Orbax last, once every item of a step is complete.
COMMIT_MARKERS = ('commit_success.txt', '_CHECKPOINT_METADATA')
ITEMS = ('state', 'data', 'log_interval', 'config')
JSON_ITEMS = ('data', 'log_interval')
SET_ASIDE = 'checkpoints_set_aside'  # workdir/<this>/<step>: damaged or superseded steps, moved, never deleted.


def is_committed(step_dir: str) -> bool:
  return any(os.path.exists(os.path.join(step_dir, marker)) for marker in COMMIT_MARKERS)


def _step_dirs(directory: str, committed: bool) -> list:
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and is_committed(os.path.join(directory, name)) == committed)


def committed_steps(directory: str) -> list:
  """The steps (ascending) whose directories carry Orbax's commit marker."""
  return _step_dirs(directory, committed=True)


def uncommitted_steps(directory: str) -> list:
  """Step-named directories without the commit marker: saves cut short (by a kill or a full disk)."""
  return _step_dirs(directory, committed=False)


def directory_bytes(path: str) -> int:
  total = 0
  for root, _, names in os.walk(path):
    for name in names:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:  # Deleted while walked.
        pass
  return total


# OCDBT (the format Orbax writes arrays in): every manifest starts with this magic (TensorStore's own error for a
# damaged manifest names it); data files start with the data magic and their length, or are zstd frames.
MANIFEST_MAGIC = bytes.fromhex('0cdb3a2a')
DATA_MAGIC, ZSTD_MAGIC = bytes.fromhex('0cdb20de'), bytes.fromhex('28b52ffd')


def _check_files(step_dir: str):
  """The files a restore needs, checked before Orbax reads them, so that a damaged step is named by its file
  (and a damaged manifest does not leave TensorStore's pending reads failing in the background)."""
  state_dir = os.path.join(step_dir, 'state')
  for name in ('_METADATA', 'manifest.ocdbt'):
    if not os.path.exists(os.path.join(state_dir, name)):
      raise CheckpointError(f'{os.path.join(state_dir, name)} is missing')
  for path in [os.path.join(state_dir, '_METADATA')] + [os.path.join(step_dir, item, 'metadata')
                                                        for item in JSON_ITEMS]:
    try:
      with open(path) as f:
        json.load(f)
    except (OSError, ValueError) as error:
      raise CheckpointError(f'{path} cannot be read ({type(error).__name__}: {str(error)[:120]})') from error
  for path in [os.path.join(state_dir, 'manifest.ocdbt')] + glob.glob(os.path.join(state_dir, 'ocdbt.process_*',
                                                                                    'manifest.ocdbt')):
    with open(path, 'rb') as f:
      if f.read(4) != MANIFEST_MAGIC:
        raise CheckpointError(f'{path} is damaged (not an OCDBT manifest)')


def _damaged_data_files(state_dir: str, certain_only: bool = False) -> list:
  """The OCDBT data files whose header shows damage: shorter than the first record their header declares
  (truncated; a file may hold several records, so a longer one is fine), zeroed, or, unless `certain_only`
  (the check before a read, which must not refuse a good step), starting with neither known magic."""
  damaged = []
  for path in glob.glob(os.path.join(state_dir, 'd', '*')) + glob.glob(os.path.join(state_dir, 'ocdbt.process_*',
                                                                                     'd', '*')):
    with open(path, 'rb') as f:
      header = f.read(12)
    if header[:4] == DATA_MAGIC:
      if len(header) < 12 or int.from_bytes(header[4:12], 'little') > os.path.getsize(path):
        damaged.append(f'{path} (truncated)')
    elif header and not any(header):
      damaged.append(f'{path} (zeroed)')
    elif header[:4] != ZSTD_MAGIC and not certain_only:
      damaged.append(f'{path} (not OCDBT data)')
  return damaged


def _describe(error: BaseException, step_dir: str) -> str:
  """A damaged step's failure in one line: the damaged data files if their headers show it, else the array that
  failed to read, and TensorStore's reason."""
  text = '\n'.join(str(link) for link in _chain(error))
  files = _damaged_data_files(os.path.join(step_dir, 'state'))
  key = re.search(r'Error reading "([^"/]+)', text)
  reason = re.search(r'(DATA_LOSS|OUT_OF_RANGE|FAILED_PRECONDITION|INVALID_ARGUMENT|NOT_FOUND): ([^\n]*)', text)
  what = f'array {key.group(1)}' if key else 'an array'
  if reason:  # TensorStore's own words, after the names of the key and the database.
    words = re.split(r'local file "[^"]+": ', reason.group(2))[-1].split(' [tensorstore_spec')[0]
    why = f'{reason.group(1)}: {words[:160]}'
  else:
    why = text.strip().splitlines()[0][:160]
  where = ', '.join(files) if files else os.path.join(step_dir, 'state')
  return f'{where}: {what} cannot be read ({why})'


@contextlib.contextmanager
def _stderr_captured():
  """Captures file descriptor 2 (Python's and TensorStore's writes alike) into a temporary file, yielded."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield capture
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)


def _wait_until_quiet(capture, quiet_s: float = 0.5, limit_s: float = 10.0):
  """After a failed read, TensorStore's reads still in flight finish into Orbax's closed event loop, each printing
  a traceback, and their coroutines are collected with more: wait until they stop coming."""
  deadline, size = time.time() + limit_s, -1
  while time.time() < deadline and capture.tell() != size:
    size = capture.tell()
    gc.collect()
    time.sleep(quiet_s)


def _chain(error: BaseException) -> list:
  """An exception and its causes / contexts, outermost first."""
  links = []
  while error is not None and all(error is not link for link in links):
    links.append(error)
    error = error.__cause__ or error.__context__
  return links


def find_disk_full(error: BaseException):
  """The ENOSPC error anywhere in an exception's cause / context chain, or None."""
  return next((link for link in _chain(error) if (isinstance(link, OSError) and link.errno == errno.ENOSPC)
               or 'No space left on device' in str(link)), None)


def disk_full_error(directory: str, cause) -> DiskFullError:
  return DiskFullError(f'no space left on the device of {directory} ({cause}). The last committed checkpoint is '
                       'kept; free space and run the same command to resume.')


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int, *, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    options = (ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0, max_to_keep=None,
                                            enable_async_checkpointing=False) if read_only else
               ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True, create=True))
    verbosity = logging.get_verbosity()
    if read_only:  # Orbax warns that a read-only manager is read-only.
      logging.set_verbosity(logging.ERROR)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
    finally:
      logging.set_verbosity(verbosity)

  def committed_steps(self) -> list:
    return committed_steps(self.directory)

  def latest_step(self):
    steps = self.committed_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, data_state: dict, log_interval: list, config_json: dict,
           force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        log_interval=ocp.args.JsonSave(log_interval),
        config=ocp.args.JsonSave(config_json)), force=force)

  def restore(self, step: int, abstract_state, shardings, partial: bool = False):
    """Restores (state, data_state, log_interval) at `step`, placing every array with its sharding; a
    CheckpointError naming the file if the step's files are damaged. partial: abstract_state is a subtree of the
    saved state (nested dicts, e.g. one network's parameters) and only that is read; (subtree, None, None)."""
    step_dir = os.path.join(self.directory, str(step))
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    if not os.path.isdir(step_dir):
      raise FileNotFoundError(step_dir)
    try:
      if not is_committed(step_dir):
        raise CheckpointError(f'{step_dir} is not a committed checkpoint (no commit marker: its save was cut '
                              'short)')
      _check_files(step_dir)
      # A partial read may skip the damaged file; the step is still not one to trust.
      damaged = _damaged_data_files(os.path.join(step_dir, 'state'), certain_only=True) if partial else []
      if damaged:
        raise CheckpointError(f'{", ".join(damaged)}: the step\'s data files are damaged')
    except (CheckpointError, OSError) as error:
      if not os.path.isdir(step_dir):  # Deleted meanwhile (by the run's trainer), not damaged.
        raise FileNotFoundError(step_dir) from error
      raise CheckpointError(str(error)) from None
    self.manager.reload()
    failure = None
    with _stderr_captured() as capture:
      try:
        if partial:
          restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
          restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args, partial_restore=True)))
        else:
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
              log_interval=ocp.args.JsonRestore()))
      except Exception as error:  # Orbax and TensorStore raise many types; each is one damaged file here.
        failure = 'deleted' if not os.path.isdir(step_dir) else _describe(error, step_dir)
      if failure is not None:
        # The error's traceback held the failed read's other coroutines: now that it is gone, they and the reads
        # still in flight finish here, into the capture, instead of as pages of tracebacks later.
        _wait_until_quiet(capture)
      else:
        capture.seek(0)
        os.write(2, capture.read())  # A good read's own messages (Orbax's warnings) pass through.
    if failure == 'deleted':
      raise FileNotFoundError(step_dir)
    if failure is not None:
      raise CheckpointError(failure)
    if partial:
      return restored.state, None, None
    return restored.state, restored.data, restored.log_interval

  def restore_newest(self, abstract_state, shardings, step: int = 0, log=print, partial: bool = False):
    """(step, (state, data_state, log_interval)) of the newest committed step that reads, or of `step` if not 0
    (then without falling back). Damaged steps are reported through `log` and returned in `self.damaged`."""
    self.damaged = []
    if step:
      if step not in self.committed_steps():
        raise CheckpointError(f'train.resume_step={step} is not a committed checkpoint in {self.directory}; '
                              f'committed steps: {self.committed_steps()}')
      try:
        return step, self.restore(step, abstract_state, shardings, partial)
      except FileNotFoundError as error:
        raise CheckpointError(f'checkpoint step {step} was deleted while being read: {error}') from error
    failures, tried = [], set()
    while True:
      candidates = [s for s in reversed(self.committed_steps()) if s not in tried]
      if not candidates:
        break
      candidate = candidates[0]
      tried.add(candidate)
      try:
        return candidate, self.restore(candidate, abstract_state, shardings, partial)
      except FileNotFoundError:
        log(f'checkpoint step {candidate} was deleted while being read (the run is live and keeps '
            f'{self.max_to_keep} steps); reading the newest step now')
        continue
      except CheckpointError as error:
        failures.append((candidate, str(error)))
        self.damaged.append(candidate)
        older = candidates[1:]
        log(f'checkpoint step {candidate} cannot be restored: {error}. '
            + (f'Falling back to step {older[0]}, the newest before it.' if older else 'No older step is left.'))
    if failures:
      raise CheckpointError(
          f'no checkpoint in {self.directory} can be restored: '
          + '; '.join(f'step {s}: {message}' for s, message in failures)
          + '. Choose a step with --config.train.resume_step=STEP, or start again in a new --workdir.')
    return None, None

  def set_aside(self, steps, reason: str, log=print):
    """Moves the step directories out of the checkpoint directory, to workdir/checkpoints_set_aside/<step>.<reason>
    (nothing is deleted), so that new saves of those steps do not collide with them."""
    if not steps:
      return
    target = os.path.join(os.path.dirname(self.directory), SET_ASIDE)
    os.makedirs(target, exist_ok=True)
    for step in steps:
      destination = os.path.join(target, f'{step}.{reason}')
      suffix = 1
      while os.path.exists(destination):
        destination, suffix = os.path.join(target, f'{step}.{reason}.{suffix}'), suffix + 1
      shutil.move(os.path.join(self.directory, str(step)), destination)
      log(f'moved checkpoint step {step} ({reason}) to {destination}')
    self.manager.reload()

  def wait(self):
    """Waits for the save in flight; a full disk becomes one DiskFullError."""
    try:
      self.manager.wait_until_finished()
    except Exception as error:
      full = find_disk_full(error)
      if full is None:
        raise
      raise disk_full_error(self.directory, full) from None

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()
