"""The trainer's contracts in process: exact resume of the host data iterator, clear errors for bad input, trained
runs as teachers. The contracts across processes (SIGKILL, SIGTERM, sharded, multi-host) are in test_processes.py."""
import os
import signal

import numpy as np
import pytest

from conftest import REPO, checkpoint_steps, read_metrics, run_main
from fewstep_jax.config_base import load_config
from fewstep_jax import trainer

TOY = str(REPO / 'configs/toy/flow_matching.py')
DIGITS = str(REPO / 'configs/digits/flow_matching.py')
TINY_UNET = {'network.channels': 8, 'network.channel_mult': (1, 2), 'network.attn_resolutions': (),
             'train.batch_size': 16, 'train.log_every': 1, 'train.tensorboard': False,
             'optim.schedule': 'constant', 'eval.at_end': False, 'eval.nfe': (2,), 'eval.sample_grid': 4}


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


def test_open_a_trained_run_and_distil_it(tmp_path):
  from fewstep_jax import runs
  import jax
  workdir = str(tmp_path / 'teacher')
  overrides = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 3, 'train.log_every': 1,
               'train.tensorboard': False}
  _, state, finished = trainer.train(load_config(TOY, overrides), workdir)
  assert finished
  opened = runs.open_run(workdir)
  method, params, step = opened.method, opened.params['ema_0.999'], opened.step
  assert step == 3 and list(opened.params) == ['ema_0.999']
  expected = state.nets['student'].ema['ema_0.999']
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
  raw_params = runs.open_run(workdir, ['params']).params['params']
  for got, want in zip(jax.tree.leaves(raw_params), jax.tree.leaves(state.nets['student'].params)):
    np.testing.assert_array_equal(got, want)
  samples = method.sample_at(params, jax.random.PRNGKey(0), 8, 2)
  assert samples.shape == (8, 2) and np.all(np.isfinite(samples))
  with pytest.raises(FileNotFoundError, match='not a trained fewstep_jax run'):
    runs.open_run(str(tmp_path / 'missing'))

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
  # Opening the student reads its own parameters only: it opens with its teacher's workdir gone.
  os.rename(workdir, workdir + '.moved')
  opened_student = runs.open_run(student_dir)
  assert opened_student.step == 3 and opened_student.method.name == 'split_meanflow'
  assert opened_student.method.teacher.source == os.path.abspath(workdir)
  samples = opened_student.method.sample_at(opened_student.params['ema_0.999'], jax.random.PRNGKey(0), 8, 1)
  assert samples.shape == (8, 2) and np.all(np.isfinite(samples))
