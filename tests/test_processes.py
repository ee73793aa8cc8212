"""The trainer's contracts across processes: exact resume after SIGKILL, SIGTERM, sharded runs and multi-host,
each through the command line in its own process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, checkpoint_steps, losses, run_main, xla_flags

TOY = str(REPO / 'configs/toy/flow_matching.py')
DIGITS = str(REPO / 'configs/digits/flow_matching.py')
# A small, fast toy run: every step logged.
TOY_ARGS = ['--config.network.hidden=64', '--config.network.depth=2', '--config.train.batch_size=64',
            '--config.train.log_every=1', '--config.eval.nfe=(1,)', '--config.eval.num_samples=64',
            '--config.eval.sample_grid=4', '--config.eval.at_end=False',
            '--config.train.tensorboard=False']
def start_main(args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.Popen([sys.executable, '-m', 'fewstep_jax.main', *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(workdir, process, step, timeout=240):
  """Polls metrics.jsonl until `step` is logged (and a checkpoint exists); fails if the process ends first."""
  deadline = time.time() + timeout
  path = os.path.join(workdir, 'metrics.jsonl')
  while time.time() < deadline:
    assert process.poll() is None, f'run ended before step {step}:\n{process.stdout.read()[-3000:]}'
    if os.path.exists(path) and checkpoint_steps(workdir):
      with open(path) as f:
        rows = f.read().splitlines()
      if rows and json.loads(rows[-1])['step'] >= step:
        return
    time.sleep(0.02)
  raise AssertionError(f'step {step} not reached in {timeout}s')


DIGITS_TINY_ARGS = ['--config.network.channels=8', '--config.network.attn_resolutions=()',
                    '--config.train.batch_size=16', '--config.train.log_every=1', '--config.eval.nfe=(2,)',
                    '--config.eval.at_end=False', '--config.eval.sample_grid=4',
                    '--config.train.tensorboard=False', '--config.optim.schedule=constant']


# The digits runs (host pipeline, about two minutes each) are slow tests; the toy ones stay in the default run.
TOY_AND_SLOW_DIGITS = ['toy', pytest.param('digits', marks=pytest.mark.slow)]
# Resuming after SIGKILL runs three processes (about a minute for toy); in-process resume stays in the default run
# (test_trainer.py), and the SIGTERM test here.
SLOW_TOY_AND_DIGITS = [pytest.param('toy', marks=pytest.mark.slow), pytest.param('digits', marks=pytest.mark.slow)]


@pytest.mark.parametrize('data', SLOW_TOY_AND_DIGITS)
def test_resume_after_sigkill_is_bit_exact(tmp_path, data):
  """Killed between checkpoints (with the host pipeline's prefetch thread running, for digits), then started
  again with the same command: every logged loss equals the uninterrupted run's."""
  if data == 'toy':
    num_steps, kill_after, args = 1500, 250, ['--config=' + TOY, *TOY_ARGS]
  else:
    num_steps, kill_after, args = 160, 60, ['--config=' + DIGITS, *DIGITS_TINY_ARGS,
                                             '--config.data.dir=' + str(tmp_path / 'data')]
  args += [f'--config.train.num_steps={num_steps}', f'--config.train.checkpoint_every={num_steps // 6}']
  reference, interrupted = str(tmp_path / 'reference'), str(tmp_path / 'interrupted')
  run_main(args + ['--workdir=' + reference])

  process = start_main(args + ['--workdir=' + interrupted])
  wait_for_step(interrupted, process, kill_after)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = max(losses(interrupted))
  assert killed_at < num_steps, 'the run finished before it was killed: the test did not interrupt it'
  run_main(args + ['--workdir=' + interrupted])

  expected, resumed = losses(reference), losses(interrupted)
  assert sorted(resumed) == list(range(1, num_steps + 1))
  assert resumed == expected  # Exact float equality, every step.


def test_sigterm_saves_checkpoint_and_exits_zero(tmp_path):
  workdir = str(tmp_path / 'run')
  process = start_main(['--config=' + TOY, *TOY_ARGS, '--config.train.num_steps=100000',
                        '--config.train.checkpoint_every=100', '--workdir=' + workdir])
  wait_for_step(workdir, process, 150)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output[-3000:]
  last_logged = max(losses(workdir))
  assert 150 <= last_logged < 100000
  assert checkpoint_steps(workdir)[-1] == last_logged, output[-2000:]


@pytest.mark.parametrize('data', TOY_AND_SLOW_DIGITS)
def test_sharded_run_matches_single_device(tmp_path, data):
  """2 x 4 mesh on 8 simulated devices vs. one device: the same losses. Digits also runs host batches
  through make_array_from_process_local_data and two accumulated micro-batches."""
  if data == 'toy':
    args = ['--config=' + TOY, *TOY_ARGS, '--config.network.hidden=256']
  else:
    args = ['--config=' + DIGITS, *DIGITS_TINY_ARGS, '--config.train.micro_batches=2',
            '--config.mesh.fsdp_min_size=256', '--config.data.dir=' + str(tmp_path / 'data')]
  args += ['--config.train.num_steps=20', '--config.train.checkpoint_every=20']
  single, sharded = str(tmp_path / 'single'), str(tmp_path / 'sharded')
  run_main(args + ['--workdir=' + single])
  run_main(args + ['--workdir=' + sharded, '--config.mesh.data=2', '--config.mesh.fsdp=4'],
           env_extra={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=8')})
  expected, got = losses(single), losses(sharded)
  assert sorted(got) == list(range(1, 21))
  for step in expected:
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-4)


def _free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def test_two_process_multi_host_matches_single_device(tmp_path):
  """Two processes on 127.0.0.1 with jax.distributed (gloo), two CPU devices each: a 4-device mesh."""
  args = ['--config=' + TOY, *TOY_ARGS, '--config.train.num_steps=10', '--config.train.checkpoint_every=5']
  single = str(tmp_path / 'single')
  run_main(args + ['--workdir=' + single])
  workdir = str(tmp_path / 'multihost')
  address = f'127.0.0.1:{_free_port()}'
  processes = [start_main(args + ['--workdir=' + workdir, '--config.mesh.data=2', '--config.mesh.fsdp=2',
                                  '--config.mesh.num_processes=2', f'--config.mesh.process_id={index}',
                                  f'--config.mesh.coordinator_address={address}'],
                          env_extra={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=2')})
               for index in range(2)]
  outputs = [process.communicate(timeout=300)[0] for process in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-4000:]
  assert 'step 10/10' in outputs[0]
  expected, got = losses(single), losses(workdir)
  assert sorted(got) == list(range(1, 11))
  for step in expected:
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-4)
  assert checkpoint_steps(workdir) == [5, 10]
