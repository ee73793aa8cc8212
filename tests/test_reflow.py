"""Reflow: pairs generated from a trained flow, stored once and read back, and the 2-RF / 2-RF++ losses."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from fewstep_jax import paths, runs
from fewstep_jax.tools import generate_pairs
from fewstep_jax.config_base import base_config, load_config
from fewstep_jax.data import build_data
from fewstep_jax.methods import build_method
from fewstep_jax import trainer

SMALL = {'network.hidden': 32, 'network.depth': 1, 'train.log_every': 1, 'train.tensorboard': False,
         'eval.at_end': False}


@pytest.fixture(scope='module')
def teacher_and_pairs(tmp_path_factory):
  root = tmp_path_factory.mktemp('reflow')
  teacher = str(root / 'teacher')
  trainer.train(load_config(os.path.join(REPO, 'configs/toy/flow_matching.py'),
                            dict(SMALL, **{'train.num_steps': 20})), teacher)
  pairs = str(root / 'pairs')
  info = generate_pairs.generate_pairs(teacher, pairs, 24, nfe=4, solver='euler', batch=16, seed=3)
  return teacher, pairs, info


def test_pairs_are_the_teacher_ode_solutions_of_the_stored_noise(teacher_and_pairs):
  teacher, pairs, info = teacher_and_pairs
  assert info['count'] == 24 and info['data_shape'] == [2] and info['source_data']['name'] == 'toy'
  noise, data = np.load(os.path.join(pairs, 'noise.npy')), np.load(os.path.join(pairs, 'data.npy'))
  assert noise.shape == data.shape == (24, 2)
  # Independent re-solve: four explicit Euler steps of the teacher's velocity from the stored noise.
  flow = runs.open_teacher(teacher)
  velocity = flow.prediction(paths.LinearFlowPath(), 'velocity')
  z = jnp.asarray(noise)
  for t in (1.0, 0.75, 0.5, 0.25):
    z = z - 0.25 * velocity(flow.params, z, jnp.full((24,), t))
  np.testing.assert_allclose(data, z, rtol=1e-4, atol=1e-5)
  assert not os.path.exists(pairs + '.incomplete')
  with pytest.raises(FileExistsError, match='written once'):
    generate_pairs.generate_pairs(teacher, pairs, 4)


def test_pairs_dataset_batches_and_resumes(teacher_and_pairs):
  _, pairs, _ = teacher_and_pairs
  config = base_config(method='reflow', network='mlp', dataset='reflow_pairs').data
  config.pairs_dir = pairs
  data = build_data(config, global_batch_size=8, seed=0)
  assert data.kind == 'host' and data.data_shape == (2,) and data.evaluator == 'toy'
  first = data.next_batch()
  assert set(first) == {'x', 'eps'} and first['x'].shape == (8, 2)
  noise = np.load(os.path.join(pairs, 'noise.npy'))
  data_all = np.load(os.path.join(pairs, 'data.npy'))
  rows = [int(np.argmin(np.abs(noise - e).sum(1))) for e in first['eps']]
  np.testing.assert_array_equal(first['x'], data_all[rows])  # Each noise comes with its own sample.
  state = data.get_state()
  second = data.next_batch()
  data.set_state(state)
  np.testing.assert_array_equal(data.next_batch()['x'], second['x'])
  assert data.reference_samples(5, 'test', 0)['x'].shape == (5, 2)
  config.pairs_dir = pairs + '_missing'
  with pytest.raises(FileNotFoundError, match='python -m fewstep_jax.tools.generate_pairs'):
    build_data(config, global_batch_size=8, seed=0)


def make(**hparams):
  config = base_config(method='reflow', network='mlp', dataset='reflow_pairs')
  config.network.hidden = 16
  config.network.depth = 1
  config.method.update(hparams)
  return build_method(config, data_shape=(2,), num_classes=0)


def test_reflow_losses_against_hand_formulas():
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  batch = {'x': jax.random.normal(keys[0], (8, 2)), 'eps': jax.random.normal(keys[1], (8, 2))}
  method = make(time_sampler='one_step')
  params = jax.tree.map(lambda p: p + 0.2, method.init(jax.random.PRNGKey(1)).nets['student'].params)
  loss, _ = method.loss(params, batch, jax.random.PRNGKey(2))
  # One-step distillation: z_1 = eps, and eps - v(eps, 1) should be x̂.
  v = method.velocity(params, batch['eps'], jnp.ones(8))
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(batch['eps'] - v - batch['x'])), rtol=1e-5)
  huber = make(time_sampler='one_step', distance='pseudo_huber')
  c = 0.00054 * 2  # 2-RF++'s c = 0.00054 dim (sangyun884/rfpp train.py).
  loss_h, _ = huber.loss(params, batch, jax.random.PRNGKey(2))
  diff = np.asarray(v - (batch['eps'] - batch['x']))
  np.testing.assert_allclose(loss_h, np.mean(np.sqrt((diff**2).sum(1) + c**2) - c), rtol=1e-5)
  with pytest.raises(ValueError, match="'eps'"):
    method.loss(params, {'x': batch['x']}, jax.random.PRNGKey(2))


def test_reflow_refuses_other_data_and_unknown_options():
  config = base_config(method='reflow', network='mlp', dataset='toy')
  with pytest.raises(ValueError, match='data.name=reflow_pairs'):
    build_method(config, data_shape=(2,), num_classes=0)
  with pytest.raises(ValueError, match="unknown method.time_sampler 'cosine'"):
    make(time_sampler='cosine')


def test_two_rf_plus_plus_trains_from_the_teacher_and_evaluates_on_the_source_data(teacher_and_pairs, tmp_path):
  teacher, pairs, _ = teacher_and_pairs
  overrides = dict(SMALL, **{'train.num_steps': 2, 'train.batch_size': 8, 'data.pairs_dir': pairs,
                             'method.init_from': teacher, 'eval.num_samples': 64, 'eval.nfe': (1,)})
  config = load_config(os.path.join(REPO, 'configs/toy/reflow.py'), overrides)
  assert config.method.time_sampler == 'u_shaped' and config.method.distance == 'pseudo_huber'
  run, state, finished = trainer.train(config, str(tmp_path / 'student'))
  assert finished and not state.frozen  # The 1-RF parameters only initialised the student.
  from fewstep_jax.eval import evaluate
  rows = evaluate.evaluate(run, state, str(tmp_path / 'student'), 2)
  assert {row['metric'] for row in rows} == {'sliced_w2', 'mmd_rbf'}
  # Initialised from the teacher: at step 0 the student's parameters were the teacher's EMA parameters.
  fresh = trainer.Run(config)
  init = jax.jit(fresh.method.init)(fresh.init_key, fresh.frozen)
  teacher_params = runs.open_teacher(teacher).params
  for got, want in zip(jax.tree.leaves(init.nets['student'].params), jax.tree.leaves(teacher_params)):
    np.testing.assert_array_equal(got, want)
  config.unlock()
  config.network.hidden = 48
  with pytest.raises(ValueError, match="fields \\['hidden'\\] differ"):
    trainer.Run(config)


def test_network_comparison_reads_tuples_and_their_json_lists_as_equal():
  from fewstep_jax.runs import network_differences
  import ml_collections
  ours = base_config(method='reflow', network='unet', dataset='reflow_pairs').network
  stored = ml_collections.ConfigDict(json.loads(json.dumps(ours.to_dict())))  # As config.json holds it.
  assert network_differences(stored, ours) == []
  stored.channel_mult = [1, 2, 4]
  assert network_differences(stored, ours) == ['channel_mult']
  stored.dropout, stored.attention = 0.3, 'pallas'  # They change no parameter.
  assert network_differences(stored, ours) == ['channel_mult']
