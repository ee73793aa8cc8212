"""Few-step sampler grids of ODE teachers: the default logits give the teacher's own grid, a stored grid samples as
the solver's grid does, the coordinate search finds a known minimum, and a grid made for a tiny toy teacher is
written, read back for its NFE only and used by the evaluator (with clear errors for a wrong file)."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import REPO
from fewstep_jax import sampler_grids
from fewstep_jax.tools import generate_pairs, search_sampler_grids
from fewstep_jax.config_base import base_config, load_config
from fewstep_jax.methods import build_method


def teacher_method(name):
  config = base_config(method=name, network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1)
  return build_method(config, data_shape=(2,), num_classes=0)


@pytest.mark.parametrize('name,solver,nfe', [('edm', 'heun', 7), ('edm', 'euler', 4), ('flow_matching', 'euler', 4),
                                            ('flow_matching', 'heun', 6)])
def test_default_logits_are_the_teachers_own_grid(name, solver, nfe):
  from fewstep_jax import timesteps
  method = teacher_method(name)
  steps = int(method.sampling_plan(nfe, False, solver=solver).steps.num_steps)
  want = method.sampling_grid(steps) if name == 'edm' else timesteps.flow_time_grid(steps)
  np.testing.assert_allclose(sampler_grids.logit_grid(method, solver, nfe), want, rtol=1e-5, atol=1e-7)
  moved = sampler_grids.logit_grid(method, solver, nfe, np.linspace(-1, 1, sampler_grids.grid_size(
      method, solver, nfe)))
  assert np.all(np.diff(moved) < 0)
  np.testing.assert_allclose(moved[[0, -1]], np.asarray(want)[[0, -1]], rtol=1e-6)  # The ends stay.
  assert not np.allclose(moved, want)


def test_a_stored_grid_samples_as_the_solver_grid_and_must_fit_the_nfe():
  method = teacher_method('edm')
  params = method.init(jax.random.PRNGKey(0)).nets['student'].params
  grid = tuple(sampler_grids.logit_grid(method, 'heun', 5))
  default = method.sample_at(params, jax.random.PRNGKey(1), 8, 5)
  # The stored grid is the float64 Karras grid; the sampler's own is float32: a few ulps apart.
  np.testing.assert_allclose(method.sample_at(params, jax.random.PRNGKey(1), 8, 5, grid=grid), default,
                             rtol=2e-4, atol=2e-4)
  with pytest.raises(ValueError, match='the stored grid has 5 solver steps, more than the 2 drift evaluations'):
    method.sample_at(params, jax.random.PRNGKey(1), 8, 2, grid=grid)


def test_the_tool_shares_a_process_with_the_reflow_tool():
  """Both command lines have a --teacher: the grid search defines its flags only when it runs as a program, so
  importing both (as this test file does) is no duplicate-flag error."""
  assert 'teacher' in generate_pairs.FLAGS and callable(search_sampler_grids.define_flags)


def test_coordinate_search_finds_a_known_minimum():
  target = np.array([0.7, -0.4, 0.2])
  logits, value, used = search_sampler_grids.search(lambda v: float(np.sum((v - target) ** 2)), 3, 400)
  np.testing.assert_allclose(logits, target, atol=0.02)
  assert value < 1e-3 and used <= 400
  assert search_sampler_grids.search(lambda v: 1.0, 0, 50)[2] == 1  # Nothing to move: one evaluation.


def test_a_grid_is_made_stored_and_used_by_the_evaluator(tmp_path):
  from fewstep_jax.eval import evaluate
  from fewstep_jax import trainer
  teacher = str(tmp_path / 'edm')
  small = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 2, 'train.batch_size': 16,
           'train.log_every': 1, 'train.tensorboard': False, 'eval.at_end': False}
  trainer.train(load_config(os.path.join(REPO, 'configs/toy/edm.py'), small), teacher)
  out = str(tmp_path / 'grids.json')
  made = search_sampler_grids.search_grids(teacher, [4], out, solver='euler', evals=6, num_samples=128)
  stored = json.load(open(out))
  assert stored == json.loads(json.dumps(made)) and stored['metric'] == 'sliced_w2'
  entry = stored['grids']['4']
  assert entry['evaluations'] == 6 and entry['search_value'] <= entry['default_search_value']
  assert sampler_grids.grid_for(out, 'edm', 'euler', 4) == tuple(entry['grid'])
  assert sampler_grids.grid_for(out, 'edm', 'euler', 8) is None  # Other NFEs keep the default grid.
  with pytest.raises(ValueError, match="grids for a 'edm' sampler with the 'euler' solver"):
    sampler_grids.grid_for(out, 'edm', 'heun', 4)
  with pytest.raises(FileNotFoundError, match='python -m fewstep_jax.tools.search_sampler_grids'):
    sampler_grids.grid_for(str(tmp_path / 'none.json'), 'edm', 'euler', 4)
  with pytest.raises(FileExistsError):
    search_sampler_grids.search_grids(teacher, [4], out, solver='euler', evals=2, num_samples=16)
  # The evaluator samples on the stored grid and names the file in its rows.
  config = load_config(os.path.join(REPO, 'configs/toy/edm.py'),
                       dict(small, **{'method.solver': 'euler', 'eval.grid_file': out}))
  assert evaluate.stored_grid(trainer.Run(config), 4) == tuple(entry['grid'])
  assert evaluate.sampler_name(config) == 'euler, grids grids.json'
  run = trainer.Run(config)
  state, _ = trainer.restore_latest(run, teacher)
  params = run.method.sampling_params(state)
  samples, _ = evaluate.generate(run, params, 4, 32, 0)
  key = jax.random.fold_in(run.sample_key, 0)
  for i in (0, 5, 31):  # Sample i is the sampler's single sample from key fold_in(key, i).
    want = run.method.sample_at(params, jax.random.fold_in(key, i), 1, 4, grid=tuple(entry['grid']))
    np.testing.assert_allclose(samples[i], want[0], rtol=1e-5, atol=1e-6)
  ct = load_config(os.path.join(REPO, 'configs/toy/ct.py'), {'eval.grid_file': out})
  with pytest.raises(ValueError, match='has its own few-step sampler'):
    evaluate.stored_grid(trainer.Run(ct), 1)


def test_eval_solvers_evaluates_each_solver_in_its_own_rows(toy_edm_run, tmp_path):
  from fewstep_jax.eval import evaluate
  from fewstep_jax import trainer
  workdir, small = toy_edm_run
  config = load_config(os.path.join(REPO, 'configs/toy/edm.py'), dict(
      small, **{'eval.solvers': ('euler', 'heun'), 'eval.nfe': (10,), 'eval.num_samples': 64}))
  run = trainer.Run(config)
  state, step = trainer.restore_latest(run, workdir)
  rows = evaluate.evaluate(run, state, str(tmp_path), step)
  by_sampler = {(row['sampler'], row['metric']): row['value'] for row in rows}
  assert sorted({sampler for sampler, _ in by_sampler}) == ['euler', 'heun']
  assert by_sampler[('euler', 'sliced_w2')] != by_sampler[('heun', 'sliced_w2')]
  # Euler at 10 NFE is the method's own sampler with solver=euler, sample by sample (at 4, EDM's Heun takes four
  # Euler steps too: sampling.heun_plan).
  euler = evaluate.generate_batches(run, run.method.sampling_params(state), 10, 8, config.eval.seed, 8, 'euler')
  samples = np.asarray(next(euler)[0])
  key = jax.random.fold_in(jax.random.fold_in(run.sample_key, config.eval.seed), 3)
  np.testing.assert_allclose(samples[3], run.method.sample_at(run.method.sampling_params(state), key, 1, 10,
                                                           solver='euler')[0], rtol=1e-5, atol=1e-6)
  ct = load_config(os.path.join(REPO, 'configs/toy/ct.py'), {'eval.solvers': ('euler',)})
  with pytest.raises(ValueError, match='eval.solvers chooses the solver of an ODE sampler'):
    evaluate.solvers(trainer.Run(ct))
  with pytest.raises(ValueError, match=r"unknown eval.solvers \['rk4'\]"):
    evaluate.solvers(trainer.Run(load_config(os.path.join(REPO, 'configs/toy/edm.py'), {'eval.solvers': ('rk4',)})))
