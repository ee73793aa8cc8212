"""JAX's persistent compilation cache for the entry points: a re-run of the same config (a resumed run, --mode=eval
after training, a second seed) loads its compiled programs from disk instead of compiling them again.

The directory is, in order: the entry point's --compile_cache flag; the JAX_COMPILATION_CACHE_DIR environment
variable; ~/.cache/fewstep_jax/xla. An empty --compile_cache= turns the cache off. Programs that compile in under a
second are not stored (JAX's default threshold), so the cache holds the steps and samplers, not every small helper.
Entries are keyed by the program, the compiler flags and the jax / jaxlib versions, so a stale entry is never used.
"""
import os

import jax

ENVIRONMENT_VARIABLE = 'JAX_COMPILATION_CACHE_DIR'


def default_directory() -> str:
  return os.environ.get(ENVIRONMENT_VARIABLE) or os.path.join(os.path.expanduser('~'), '.cache', 'fewstep_jax', 'xla')


def enable(directory: str) -> str | None:
  """Points JAX's persistent cache at `directory` (created if needed) and returns it; '' leaves the cache off and
  returns None. A directory that cannot be created or written turns the cache off with a warning: a cache is
  never a reason for a run to fail."""
  if not directory:
    return None
  directory = os.path.expanduser(directory)
  try:
    os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK):
      raise PermissionError(f'{directory} is not writable')
  except OSError as error:
    print(f'warning: no compilation cache ({error}); set --compile_cache=DIR to a writable directory, or '
          '--compile_cache= to silence this', flush=True)
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory
