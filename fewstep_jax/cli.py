"""How the project's single-purpose commands run (tools.import_checkpoint, tools.encode_latents, eval.inception,
eval.dinov2, eval.stats, eval.fid): absl's app.run with logging at WARNING, since Orbax logs each checkpoint step at
INFO and the commands print what the user needs themselves, and the errors of the user's input and files (a missing,
refused or damaged weights file, an occupied output) ended by one line, `error: ...`, and exit status 1, instead of a
traceback."""
import sys

from absl import app, logging

from fewstep_jax.errors import RunError

# Errors that describe the command's input, printed as they are; any other exception is a bug and keeps its traceback.
USER_ERRORS = (RunError, ValueError, FileNotFoundError, FileExistsError)


def run(main, flags_parser=None):
  """app.run(main) as the module docstring says; `flags_parser` as app.run's."""

  def quiet_main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except USER_ERRORS as error:
      sys.exit(f'error: {error}')

  app.run(quiet_main, **({'flags_parser': flags_parser} if flags_parser else {}))
