"""FID, IS and FD-DINOv2 through --mode=eval on the digits (upsampled for the Inception): the same value on one device, eight
simulated devices and two processes on 127.0.0.1, one compiled sampler and one compiled Inception for every batch,
reference statistics from the stats command, and the table and plot beside results.json.

The networks have random weights (no weights file ships), which is enough for what is tested here: that a metric is
a function of the checkpoint and the config only. The Inception's resolution is 75 (its smallest input) and the ViT
is a small one with DINOv2's position grid, for speed."""
import json
import os
import socket

import numpy as np
import pytest

from conftest import REPO, run_main, xla_flags
from test_processes import start_main

DIGITS = str(REPO / 'configs/digits/flow_matching.py')
TRAIN = {'network.channels': 8, 'network.attn_resolutions': (), 'train.batch_size': 16, 'train.num_steps': 1,
         'train.tensorboard': False, 'eval.at_end': False, 'eval.sample_grid': 4, 'eval.nfe': (2,)}


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  """(workdir, eval overrides as command-line flags): a one-step digits run, random Inception weights and the
  reference statistics of 64 training digits written by the stats command on 8 devices; a small random DINOv2 ViT
  and its statistics of the same digits (computed in this process)."""
  from fewstep_jax.config_base import load_config
  from fewstep_jax.eval import dinov2, inception, stats
  from fewstep_jax import trainer
  root = tmp_path_factory.mktemp('fid')
  data_dir = str(root / 'data')
  workdir = str(root / 'run')
  config = load_config(DIGITS, dict(TRAIN, **{'data.dir': data_dir}))
  trainer.train(config, workdir)
  vit_weights = str(root / 'dinov2.npz')
  dinov2.save_state_dict(vit_weights, dinov2.random_weights(dinov2.ViT(dim=64, depth=2, heads=1), 0))
  vit_reference = str(root / 'dinov2_reference.npz')
  mu, sigma, count = stats.dataset_statistics(config, 'train', 'dinov2', vit_weights, limit=64, batch_size=32)
  assert count == 64 and mu.shape == (64,)
  stats.save_stats(vit_reference, mu, sigma)
  weights = str(root / 'inception.npz')
  inception.save_weights(weights, inception.random_weights(0))
  reference = str(root / 'reference.npz')
  result = run_main(['--config=' + DIGITS, f'--config.data.dir={data_dir}', f'--weights={weights}',
                     f'--out={reference}', '--num=64', '--batch=32', '--resolution=75'],
                    env_extra={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=8')}, module='fewstep_jax.eval.stats')
  assert 'inception statistics of 64 images of digits (train)' in result.stdout
  overrides = {'eval.metrics': ('inception', 'dinov2'), 'eval.inception': weights, 'eval.reference_stats': reference,
               'eval.dinov2': vit_weights, 'eval.dinov2_reference_stats': vit_reference,
               'eval.inception_resolution': 75, 'eval.num_samples': 40, 'eval.batch_size': 16, 'eval.nfe': (2,),
               'eval.params': 'params', 'data.dir': data_dir}
  return workdir, overrides


def _flags(overrides):
  return [f'--config.{key}={value!r}' if isinstance(value, tuple) else f'--config.{key}={value}'
          for key, value in overrides.items()]


def _fid_rows(workdir):
  rows = json.load(open(os.path.join(workdir, 'eval', 'results.json')))
  return {row['metric']: row['value'] for row in rows}


def _free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


@pytest.fixture(scope='module')
def one_device(digits_run):
  """The metrics of the digits run evaluated in this process, on one device; checks the compile counts and the
  table and plot written beside results.json."""
  from fewstep_jax import config_base
  from fewstep_jax.eval import evaluate, features
  from fewstep_jax import trainer
  from fewstep_jax.train import files
  workdir, overrides = digits_run
  config = config_base.config_from_json(files.read_json(os.path.join(workdir, 'config.json')))
  with config.unlocked():
    for key, value in overrides.items():
      section, field = key.split('.')
      config[section][field] = value
  run = trainer.Run(config)
  state, step = trainer.restore_latest(run, workdir)
  rows = evaluate.evaluate(run, state, workdir, step)
  values = {row['metric']: row['value'] for row in rows}
  assert sorted(values) == ['fd_dinov2_40', 'fid_40', 'is_40', 'is_40_std'] and values['fid_40'] > 0
  # Three batches (16, 16 and a padded 8): one compiled sampler, one compiled Inception; the sampler serves every
  # NFE (here 2 and 4 network calls: 1 and 2 guided Heun evaluations, an Euler last step at 1 and not at 2).
  assert evaluate.compiled_sampler(run, 16, 2)._cache_size() == 1
  evaluate.generate(run, state.nets['student'].params, 4, 16, 0)
  assert evaluate.compiled_sampler(run, 16, 4)._cache_size() == 1
  assert features.sharded(features.inception_outputs, run.mesh, 75)._cache_size() == 1
  table = open(os.path.join(workdir, 'eval', 'results.md')).read()
  assert '| flow_matching | 1 | params | heun, guidance 1.5 | fid_40 |' in table
  assert os.path.getsize(os.path.join(workdir, 'eval', 'results.png')) > 0
  return values


def _evaluated_elsewhere(digits_run, directory, mesh, processes: int, devices: int):
  """The metrics of the same checkpoint evaluated by --mode=eval in `processes` processes of `devices` devices each,
  in another workdir (links to the run's files), so that it writes its own results."""
  workdir, overrides = digits_run
  os.makedirs(directory)
  for entry in ('checkpoints', 'config.json', 'run_info.json'):
    os.symlink(os.path.join(workdir, entry), os.path.join(directory, entry))
  args = ['--mode=eval', '--config=' + DIGITS, '--workdir=' + directory, *_flags(dict(overrides, **mesh))]
  env = {'XLA_FLAGS': xla_flags(f'--xla_force_host_platform_device_count={devices}')}
  if processes == 1:
    output = run_main(args, env_extra=env).stdout
  else:
    address = f'127.0.0.1:{_free_port()}'
    started = [start_main(args + [f'--config.mesh.num_processes={processes}', f'--config.mesh.process_id={index}',
                                  f'--config.mesh.coordinator_address={address}'], env_extra=env)
               for index in range(processes)]
    outputs = [process.communicate(timeout=300)[0] for process in started]
    for process, output in zip(started, outputs):
      assert process.returncode == 0, output[-4000:]
    output = outputs[0]
  assert 'params nfe 2: 40/40 samples' in output  # The progress line.
  return _fid_rows(directory)


def _assert_same(values, expected):
  for metric in ('fid_40', 'is_40', 'fd_dinov2_40'):
    np.testing.assert_allclose(values[metric], expected[metric], rtol=1e-6, err_msg=metric)


@pytest.mark.slow  # A digits run evaluated twice (about 80 s); the two-host run is slow too.
def test_fid_is_the_same_on_one_device_and_on_eight(digits_run, one_device, tmp_path):
  _assert_same(_evaluated_elsewhere(digits_run, str(tmp_path / 'eight'), {'mesh.data': 8}, 1, 8), one_device)


@pytest.mark.slow
def test_fid_is_the_same_on_two_hosts(digits_run, one_device, tmp_path):
  """Two processes on 127.0.0.1 with two devices each (about 30 s; the multi-host training test is in the
  default run)."""
  _assert_same(_evaluated_elsewhere(digits_run, str(tmp_path / 'hosts'), {'mesh.data': 4}, 2, 2), one_device)


def test_fid_without_weights_or_statistics_says_which_file_is_missing(tmp_path):
  import types
  import jax
  import ml_collections
  from fewstep_jax.eval import evaluate, inception, stats
  mesh = jax.make_mesh((1, 1), ('data', 'fsdp'), axis_types=(jax.sharding.AxisType.Auto,) * 2)

  def opened(**fields):
    eval_config = {'inception': '', 'reference_stats': '', 'inception_resolution': 75, 'dinov2': '',
                   'dinov2_reference_stats': '', **fields}
    return types.SimpleNamespace(config=ml_collections.ConfigDict({'eval': eval_config}), mesh=mesh)

  # Training's evaluation at the end is skipped, naming these, when they are unset.
  assert evaluate.unset_files(opened(inception='w.npz').config, ('digits', 'inception', 'dinov2')) == [
      'eval.reference_stats', 'eval.dinov2', 'eval.dinov2_reference_stats']
  with pytest.raises(ValueError, match='set --config.eval.reference_stats=FILE.npz'):
    evaluate.InceptionMetrics(opened(), 10, 0)
  with pytest.raises(FileNotFoundError, match='no reference statistics at'):
    evaluate.InceptionMetrics(opened(reference_stats=str(tmp_path / 'absent.npz')), 10, 0)
  full = str(tmp_path / 'full.npz')
  stats.save_stats(full, np.zeros(inception.FEATURE_DIM), np.eye(inception.FEATURE_DIM))
  with pytest.raises(ValueError, match='set --config.eval.inception=PATH'):
    evaluate.InceptionMetrics(opened(reference_stats=full), 10, 0)
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth'):
    evaluate.InceptionMetrics(opened(reference_stats=full, inception=str(tmp_path / 'absent.pth')), 10, 0)
  weights = str(tmp_path / 'inception.npz')
  inception.save_weights(weights, inception.random_weights(0))
  small = str(tmp_path / 'small.npz')
  stats.save_stats(small, np.zeros(64), np.eye(64))
  with pytest.raises(ValueError, match=r'64-dimensional features, not the inception features \(2048\)'):
    evaluate.InceptionMetrics(opened(reference_stats=small, inception=weights), 10, 0)
  with pytest.raises(ValueError, match='set --config.eval.dinov2_reference_stats=FILE.npz'):
    evaluate.DinoMetrics(opened(), 10, 0)
  with pytest.raises(ValueError, match='dinov2_vitl14_pretrain.pth'):
    evaluate.DinoMetrics(opened(dinov2_reference_stats=small), 10, 0)
