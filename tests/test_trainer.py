"""The trainer's contracts: exact resume (after SIGKILL, and of the data iterator), SIGTERM, sharded runs,
multi-host, and clear errors for bad input."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_main
from fewstep_jax.config_base import load_config
from fewstep_jax.train import trainer

TOY = str(REPO / 'configs/toy/flow_matching.py')
DIGITS = str(REPO / 'configs/digits/flow_matching.py')
# A small, fast toy run: every step logged.
TOY_ARGS = ['--config.network.hidden=64', '--config.network.depth=2', '--config.train.batch_size=64',
            '--config.train.log_every=1', '--config.eval.nfe=(1,)', '--config.eval.num_samples=64',
            '--config.eval.sample_grid=4', '--config.eval.at_end=False',
            '--config.train.tensorboard=False']
TINY_UNET = {'network.channels': 8, 'network.channel_mult': (1, 2), 'network.attn_resolutions': (),
             'train.batch_size': 16, 'train.log_every': 1, 'train.tensorboard': False,
             'optim.schedule': 'constant', 'eval.at_end': False}


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return {row['step']: row['loss'] for row in read_metrics(workdir)}


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


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


@pytest.mark.parametrize('data', TOY_AND_SLOW_DIGITS)
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


def test_resume_restores_data_iterator_and_log_interval_exactly(tmp_path):
  """Host-side data (grain over the digits TFDS dataset): a run stopped by SIGTERM at step 6 and continued to
  12 logs the same rows as an uninterrupted run, so the iterator state was restored exactly; with
  log_every=4 the row at step 8 averages steps 5-8 although the run stopped at step 6."""
  config = load_config(DIGITS, dict(TINY_UNET, **{'data.dir': str(tmp_path / 'data'), 'train.num_steps': 12,
                                                  'train.checkpoint_every': 100, 'train.log_every': 4,
                                                  'train.sample_every': 6}))
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  trainer.train(config, reference)

  def stop_at_step_6(run, state, step):
    if step == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  _, _, finished = trainer.train(config, resumed, on_sample=stop_at_step_6)
  assert not finished and checkpoint_steps(resumed) == [6]
  trainer.train(config, resumed)
  assert read_metrics(resumed) == read_metrics(reference)
  assert [row['step'] for row in read_metrics(reference)] == [4, 8, 12]


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
           env_extra={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
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
                          env_extra={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
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


def test_unknown_config_key_is_a_clear_error(tmp_path):
  """A misspelled key, on the command line or inside a config file, ends the run before it starts with one line
  that names the key and the closest known one."""
  result = run_main(['--config=' + TOY, '--workdir=' + str(tmp_path), '--config.train.num_stepz=3'],
                    check=False)
  assert result.returncode != 0
  assert result.stderr.strip().count('\n') == 0, result.stderr
  assert "'train.num_stepz'" in result.stderr and "did you mean 'train.num_steps'" in result.stderr
  with pytest.raises(KeyError, match="num_stepz.*did you mean 'optim.lr'|learning_rate.*did you mean 'optim.lr'"):
    load_config(TOY, {'optim.learning_rate': 3})
  config_file = tmp_path / 'misspelled.py'
  config_file.write_text('from fewstep_jax.config_base import base_config\n\n\ndef get_config():\n'
                         "  config = base_config(method='flow_matching', network='mlp', dataset='toy')\n"
                         '  config.train.num_stepz = 50\n  return config\n')
  with pytest.raises(AttributeError, match='num_stepz'):
    load_config(str(config_file))
  result = run_main(['--config=' + str(config_file), '--workdir=' + str(tmp_path / 'run')], check=False)
  assert result.returncode != 0 and not os.path.exists(tmp_path / 'run')
  assert result.stderr.strip() == (f"error: {config_file}, line 6 (config.train.num_stepz = 50): unknown config "
                                   "key 'num_stepz'; did you mean 'num_steps'?")


def test_wrong_mesh_size_is_a_clear_error():
  config = load_config(TOY, {'mesh.data': 2, 'mesh.fsdp': 2})
  with pytest.raises(ValueError, match=r'mesh.data \* mesh.fsdp .* 1 devices'):
    trainer.Run(config)


def test_eval_without_checkpoint_is_a_clear_error(tmp_path):
  result = run_main(['--config=' + TOY, '--workdir=' + str(tmp_path / 'empty'), '--mode=eval'], check=False)
  assert result.returncode != 0
  assert 'no checkpoint in' in result.stderr and 'train first' in result.stderr


def test_resuming_with_a_different_network_is_refused(tmp_path):
  workdir = str(tmp_path / 'run')
  overrides = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 2, 'train.log_every': 1,
               'train.tensorboard': False}
  trainer.train(load_config(TOY, overrides), workdir)
  with pytest.raises(ValueError, match='network.hidden'):
    trainer.train(load_config(TOY, dict(overrides, **{'network.hidden': 48})), workdir)
  with pytest.raises(ValueError, match='method.time_sampler'):  # A training hyperparameter.
    trainer.train(load_config(TOY, dict(overrides, **{'method.time_sampler': 'logit_normal'})), workdir)
  # Sampling options may change for eval; the network may not.
  run = trainer.Run(load_config(TOY, dict(overrides, **{'method.guidance': 2.0, 'method.solver': 'heun'})))
  assert int(trainer.restore_latest(run, workdir)[1]) == 2
  with pytest.raises(ValueError, match='network.hidden'):
    trainer.restore_latest(trainer.Run(load_config(TOY, dict(overrides, **{'network.hidden': 48}))), workdir)


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  overrides = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 2, 'train.log_every': 1,
               'train.checkpoint_every': 2, 'train.tensorboard': False}
  trainer.train(load_config(TOY, overrides), workdir)
  diverging = dict(overrides, **{'train.num_steps': 8, 'optim.lr': 1e30, 'optim.schedule': 'constant'})
  with pytest.raises(trainer.NonFiniteLossError, match=r'non-finite loss .* at step \d'):
    trainer.train(load_config(TOY, diverging), workdir)
  assert checkpoint_steps(workdir) == [2]


def test_load_trained_run_as_teacher(tmp_path):
  from fewstep_jax.train.teacher import load_trained
  import jax
  workdir = str(tmp_path / 'teacher')
  overrides = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 3, 'train.log_every': 1,
               'train.tensorboard': False}
  _, state, finished = trainer.train(load_config(TOY, overrides), workdir)
  assert finished
  method, params, step = load_trained(workdir)
  assert step == 3
  expected = state.nets['student'].ema['ema_0.999']
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
  _, raw_params, _ = load_trained(workdir, params_name='params')
  for got, want in zip(jax.tree.leaves(raw_params), jax.tree.leaves(state.nets['student'].params)):
    np.testing.assert_array_equal(got, want)
  samples = method.sample(params, jax.random.PRNGKey(0), 8, 2)
  assert samples.shape == (8, 2) and np.all(np.isfinite(samples))
  with pytest.raises(FileNotFoundError, match='not a trained fewstep_jax run'):
    load_trained(str(tmp_path / 'missing'))

  # A student distilled from it keeps the teacher in state.frozen, resumes with it, and loads as a run itself.
  student_dir = str(tmp_path / 'student')
  student = {'network.hidden': 32, 'network.depth': 1, 'network.two_times': True, 'train.num_steps': 2,
             'train.log_every': 1, 'train.checkpoint_every': 1, 'train.tensorboard': False,
             'method.teacher': workdir, 'method.boundary_fraction': 0.5, 'optim.schedule': 'constant'}
  student_config = load_config(os.path.join(REPO, 'configs/toy/split_meanflow.py'), student)
  _, distilled, _ = trainer.train(student_config, student_dir)
  for got, want in zip(jax.tree.leaves(distilled.frozen['teacher']), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  student_config.train.num_steps = 3  # A constant schedule: extending the run changes nothing already planned.
  _, resumed, _ = trainer.train(student_config, student_dir)
  assert int(resumed.step) == 3
  student_method, _, step = load_trained(student_dir)
  assert step == 3 and student_method.name == 'split_meanflow'
