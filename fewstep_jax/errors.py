"""Errors that end a run with one clear message (what failed, where, and what to do), printed by the entry point
without a traceback: bad input and faults of the run's files or disk, as opposed to bugs."""


class RunError(RuntimeError):
  pass


class WorkdirInUseError(RunError):
  pass


class CheckpointError(RunError):
  pass


class DiskFullError(RunError, OSError):
  pass


class RefusedWeightsError(RunError):
  """A weights file that names code to run when it is loaded (a pickle's global outside the reader's allow-list):
  refused before anything in it is called."""


class UnreadableWeightsError(RunError):
  """A weights file that is cut short, corrupt, or not of the format its name says."""
