"""The command line as a new user meets it: user errors (a missing teacher run, an unprepared dataset) end in one
line and a non-zero exit."""
import os

import pytest

from conftest import run_main


def one_line_error(result) -> str:
  """The error line of a command that failed as a user error: exit status 1, no traceback."""
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith('error: '), result.stderr[-3000:]
  return line


@pytest.mark.parametrize('args,says', [
    (['--config=configs/toy/sid.py', '--config.method.teacher=/nonexistent'],
     'error: /nonexistent/run_info.json not found: /nonexistent is not a trained fewstep_jax run (method.teacher)'),
    (['--config=configs/cifar10/edm.py', '--config.data.dir={tmp}'],
     "error: TFDS dataset 'cifar10' is not prepared in {tmp}"),
])
def test_a_missing_input_is_one_line(tmp_path, args, says):
  args = [arg.format(tmp=tmp_path) for arg in args]
  line = one_line_error(run_main(args + ['--workdir=' + str(tmp_path / 'run')], check=False))
  assert line.startswith(says.format(tmp=tmp_path)), line
