import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def repo():
  return REPO


def run_main(args, env_extra=None, timeout=600, check=True):
  """Runs `python -m fewstep_jax.main ARGS` in a subprocess; returns the CompletedProcess."""
  env = dict(os.environ, **(env_extra or {}))
  result = subprocess.run([sys.executable, '-m', 'fewstep_jax.main', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'main failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
  return result
