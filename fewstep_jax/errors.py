"""Errors that end a run with one clear message (what failed, where, and what to do), printed by the entry point
without a traceback: bad input and faults of the run's files or disk, as opposed to bugs.

A user error raises one of these (or a subclass), never a bare ValueError or FileNotFoundError: the entry point
(`fewstep_jax.main`) prints `error: <message>` for every RunError and exits non-zero. The subclasses that are also
builtin errors (InputNotFoundError is a FileNotFoundError, ConfigError a ValueError) keep the library's callers'
`except FileNotFoundError` / `except ValueError` working.
"""


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


class InputNotFoundError(RunError, FileNotFoundError):
  """Something the config or command line names is not there: a teacher run, a dataset not prepared in data.dir,
  stored pairs or latents, a schedule file."""


class ConfigError(RunError, ValueError):
  """A config value that cannot work for this run: a teacher trained on other data, an NFE the sampler cannot
  spend, an override eval may not make."""
