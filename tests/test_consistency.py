"""CT, CD, iCT and ECT against independent math.

- The boundary-shifted consistency function meets f(x, sigma_min) = x exactly.
- The curricula N(k), the target EMA rate mu(k) and ECT's t -> r mapping equal the papers' formulas written
  with Python's math module; iCT's sampled indices follow the erf formula (frequencies over 200k draws).
- The CT / iCT pair losses equal a hand computation from the two points, the weighting and the distance; CD's
  x̂_n equals a numpy Heun step of the exact Gaussian-data ODE dx/dsigma = (x - D(x, sigma)) / sigma with
  D = S^2 / (S^2 + sigma^2) x, reached through the teacher's linear-flow velocity.
- ECT's target is x where r = 0, with finite gradients.
- The target network is the EMA with the scheduled rate after a step (CT), and absent for iCT.
- Distances: pseudo-Huber by hand, iCT's c, LPIPS invariants on random VGG weights and its errors.
"""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, described_teachers, perturbed_params
from fewstep_jax import distances, paths, timesteps
from fewstep_jax.inputs import Teacher
from fewstep_jax.config_base import base_config, load_config
from fewstep_jax.methods import build_method
from fewstep_jax.nn import lpips

S = 0.7  # Gaussian data std.


def make(name='ct', num_classes=0, teacher=None, **hparams):
  """The method on a small MLP; CD gets `teacher` (a Teacher), or a description of one if not given."""
  config = base_config(method=name, network='mlp', dataset='toy')
  config.network.update(hidden=32, depth=2, time_scale=250.0)
  config.train.num_steps = 1000
  config.method.update(hparams)
  inputs = described_teachers(config, (2,), num_classes)
  if teacher is not None:
    inputs['teacher'] = teacher
  return build_method(config, data_shape=(2,), num_classes=num_classes, inputs=inputs)


def data(n=8, seed=2):
  x_key, z_key = jax.random.split(jax.random.PRNGKey(seed))
  return S * jax.random.normal(x_key, (n, 2)), jax.random.normal(z_key, (n, 2))


@pytest.mark.parametrize('name', ['ct', 'ict', 'cd'])
def test_boundary_condition_is_exact(name):
  method = make(name)
  x, _ = data()
  f = method.consistency_fn(perturbed_params(method), x, jnp.full((x.shape[0],), 0.002))
  np.testing.assert_array_equal(f, x)


def test_cm_curriculum_and_target_rate_are_the_papers_formulas():
  total, s0, s1 = 1000, 2, 150
  for k in [0, 1, 10, 250, 999, 1000]:
    want = math.ceil(math.sqrt(k / total * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1
    assert int(timesteps.cm_num_scales(k, total, s0, s1)) == want
  assert int(timesteps.cm_num_scales(0, total)) == 2 and int(timesteps.cm_num_scales(total, total)) == 151
  for n in [2, 17, 151]:
    np.testing.assert_allclose(timesteps.cm_target_ema_rate(n, 2, 0.9), math.exp(2 * math.log(0.9) / n), rtol=1e-6)
  np.testing.assert_allclose(timesteps.cm_target_ema_rate(2, 2, 0.9), 0.9, rtol=1e-6)
  np.testing.assert_allclose(timesteps.cm_target_ema_rate(2, 2, 0.9, divisor_offset=1), 0.81, rtol=1e-6)


def test_ict_curriculum_doubles_in_equal_stages():
  # K' = floor(800 / (log2 floor(1280 / 10) + 1)) = 100.
  got = [int(timesteps.ict_num_scales(k, 800, 10, 1280)) for k in [0, 99, 100, 250, 699, 700, 799, 10**6]]
  assert got == [11, 11, 21, 41, 641, 1281, 1281, 1281]


def test_ict_indices_follow_the_erf_distribution():
  method = make('ict', s0=10, s1=1280)
  step = 150  # Second doubling stage at K = 1000 (K' = 125): N = 21.
  num = int(method.num_scales(step))
  assert num == 21
  sigma_n, sigma_next = method.grid_pair(jax.random.PRNGKey(0), 200_000, step)
  grid = [(0.002 ** (1 / 7) + i / (num - 1) * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7 for i in range(num)]
  index = np.argmin(np.abs(np.log(np.asarray(sigma_n))[:, None] - np.log(grid)[None]), axis=1)
  np.testing.assert_allclose(np.asarray(sigma_n), np.asarray(grid, np.float32)[index], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(sigma_next), np.asarray(grid, np.float32)[index + 1], rtol=1e-5)
  cdf = [math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0)) for s in grid]
  want = np.diff(cdf) / (cdf[-1] - cdf[0])
  assert abs(want.sum() - 1) < 1e-12 and index.max() <= num - 2
  freq = np.bincount(index, minlength=num - 1) / index.size
  # Within 4 binomial standard deviations per index.
  assert np.all(np.abs(freq - want) <= 4 * np.sqrt(want * (1 - want) / index.size) + 1e-4), (freq, want)


def test_ct_and_ict_pair_losses_are_the_hand_computed_step():
  x, z = data()
  sigma_n, sigma_next = jnp.linspace(0.01, 5.0, 8), jnp.linspace(0.02, 7.0, 8)
  for name, weight, distance in [
      ('ct', lambda a, b: 1.0, lambda a, b: np.mean((a - b) ** 2, axis=1)),
      ('ict', lambda a, b: 1 / (b - a),
       lambda a, b: np.sqrt(np.sum((a - b) ** 2, axis=1) + (0.00054 * math.sqrt(2)) ** 2) - 0.00054 * math.sqrt(2))]:
    method = make(name)
    params, target = perturbed_params(method, 0), perturbed_params(method, 5)
    if name == 'ict':
      target = None  # theta- = sg(theta).
    online = method.consistency_fn(params, x + sigma_next[:, None] * z, sigma_next)
    reference = method.consistency_fn(params if target is None else target, x + sigma_n[:, None] * z, sigma_n)
    want = weight(np.asarray(sigma_n), np.asarray(sigma_next)) * distance(np.asarray(online), np.asarray(reference))
    got = method.pair_loss(params, target, None, x, None, z, sigma_n, sigma_next)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The gradient flows through the online point only.
    grads = jax.grad(lambda p: jnp.sum(method.pair_loss(p, target, None, x, None, z, sigma_n, sigma_next)))(params)
    frozen_ref = jax.grad(lambda p: jnp.sum(weight(sigma_n, sigma_next) * method.distance.fn(
        method.consistency_fn(p, x + sigma_next[:, None] * z, sigma_next), reference, None)))(params)
    for g, h in zip(jax.tree.leaves(grads), jax.tree.leaves(frozen_ref)):
      np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-7)


def gaussian_velocity(params, z, t, r=None, y=None, key=None):
  """The exact linear-flow velocity of N(0, S^2 I) data, as a raw network read as a velocity."""
  t = t[:, None]
  return z * (t - (1 - t) * S**2) / ((1 - t) ** 2 * S**2 + t**2)


GAUSSIAN_TEACHER = Teacher(network=None, readout=paths.readout('flow'), data_shape=(2,), num_classes=0,
                           apply=gaussian_velocity)


def test_cd_previous_point_is_a_heun_step_of_the_teacher_ode():
  method = make('cd', teacher=GAUSSIAN_TEACHER)
  x, z = data()
  sigma_n, sigma_next = jnp.linspace(0.01, 5.0, 8), jnp.linspace(0.02, 7.0, 8)
  x_next = x + sigma_next[:, None] * z
  got = method.previous_point({'teacher': None}, x, z, x_next, sigma_next, sigma_n, None)
  xn, sn, snext = np.asarray(x_next, np.float64), np.asarray(sigma_n)[:, None], np.asarray(sigma_next)[:, None]
  drift = lambda v, s: (v - S**2 / (S**2 + s**2) * v) / s
  euler = xn + (sn - snext) * drift(xn, snext)
  want = xn + (sn - snext) * 0.5 * (drift(xn, snext) + drift(euler, sn))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ect_mapping_stages_and_boundary():
  t = jnp.exp(jnp.linspace(-6.0, 4.0, 200))
  for stage in range(5):
    r = timesteps.ect_r_from_t(t, stage)
    assert bool(jnp.all(r < t)) and bool(jnp.all(r >= 0))
    want = np.maximum(0.0, t * (1 - 2.0 ** -(stage + 1) * (1 + 8 / (1 + np.exp(t)))))
    np.testing.assert_allclose(r, want, rtol=1e-5, atol=1e-7)
  assert float(timesteps.ect_r_from_t(jnp.asarray(0.01), 0)) == 0.0   # Small t: r = 0 in the first stage.
  assert bool(jnp.all(timesteps.ect_r_from_t(t, 4) >= timesteps.ect_r_from_t(t, 3)))


@pytest.mark.parametrize('parameterization', ['edm', 'flow'])
def test_ect_pair_loss_targets_x_at_r_zero(parameterization):
  method = make('ect', parameterization=parameterization)
  params = perturbed_params(method)
  x, eps = data()
  t = jnp.linspace(0.1, 3.0, 8)
  r = jnp.where(jnp.arange(8) < 4, 0.0, 0.5 * t)
  got = method.pair_loss(params, None, x, None, eps, t, r)
  online = method.consistency_fn(params, x + t[:, None] * eps, t)
  r_point = method.consistency_fn(params, x + (0.5 * t)[:, None] * eps, 0.5 * t)
  reference = jnp.where((r > 0)[:, None], r_point, x)
  want = np.linalg.norm(np.asarray(online - reference), axis=1) / np.asarray(t - r)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(method.pair_loss(p, None, x, None, eps, t, r)))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  edm_weighted = make('ect', parameterization=parameterization, weighting='edm')
  np.testing.assert_allclose(edm_weighted.pair_loss(params, None, x, None, eps, t, r),
                             want * np.asarray(t - r) * (np.asarray(t) ** 2 + 0.25) / (0.25 * np.asarray(t) ** 2),
                             rtol=1e-5)


def test_ct_target_is_the_scheduled_ema_and_ict_has_none():
  method = make('ct')
  state = method.init(jax.random.PRNGKey(0))
  batch = {'x': S * jax.random.normal(jax.random.PRNGKey(1), (32, 2))}
  new, metrics = jax.jit(method.step)(state, batch, jax.random.PRNGKey(2))
  np.testing.assert_allclose(metrics['target_ema'], 0.9, rtol=1e-6)  # N(0) = s0 = 2: mu = mu0.
  for t_new, t_old, p in zip(*(jax.tree.leaves(tree) for tree in
                               (new.extra['target'], state.extra['target'], new.nets['student'].params))):
    np.testing.assert_allclose(t_new, 0.9 * t_old + 0.1 * p, rtol=1e-5, atol=1e-7)
  ict = make('ict')
  assert 'target' not in ict.init(jax.random.PRNGKey(0)).extra


def test_pseudo_huber_and_the_ict_constant():
  a = jnp.asarray([[0.3, -0.4], [1.0, 1.0]])
  b = jnp.zeros_like(a)
  np.testing.assert_allclose(distances.pseudo_huber(a, b, 0.1), [np.sqrt(0.25 + 0.01) - 0.1, np.sqrt(2.01) - 0.1],
                             rtol=1e-6)
  auto = distances.make_distance('pseudo_huber', (8, 8, 1), huber_c=-1.0)
  np.testing.assert_allclose(auto.fn(a.reshape(1, -1)[:, :1].reshape(1, 1, 1, 1) * jnp.ones((1, 8, 8, 1)),
                                     jnp.zeros((1, 8, 8, 1)), None),
                             [np.sqrt(64 * 0.09 + (0.00054 * 8) ** 2) - 0.00054 * 8], rtol=1e-5)
  # c = 0 (ECT) at a == b: a zero, finite gradient.
  grad = jax.grad(lambda v: jnp.sum(distances.pseudo_huber(v, v * 1.0, 0.0) + distances.pseudo_huber(v, b, 0.0)))
  assert bool(jnp.all(jnp.isfinite(grad(a))))
  with pytest.raises(ValueError, match="unknown distance 'l1'"):
    distances.make_distance('l1', (2,))


def random_lpips_file(path):
  rng = np.random.default_rng(0)
  weights = {}
  for name, shape in lpips.weight_shapes().items():
    if name.endswith('/kernel'):
      weights[name] = rng.normal(0, np.sqrt(2 / (9 * shape[2])), shape).astype(np.float32)
    else:
      weights[name] = np.abs(rng.normal(0, 0.1, shape)).astype(np.float32)
  np.savez(path, **weights)
  return weights


def test_lpips_from_a_local_file_and_its_errors(tmp_path):
  path = str(tmp_path / 'lpips.npz')
  weights = random_lpips_file(path)
  distance = distances.make_distance('lpips', (8, 8, 1), lpips_weights=path, lpips_resolution=16)
  params = distance.load()
  a, b = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 8, 8, 1), minval=-1, maxval=1)
  d_ab, d_ba, d_aa = (np.asarray(jax.jit(distance.fn)(u, v, params)) for u, v in [(a, b), (b, a), (a, a)])
  assert d_ab.shape == (3,) and np.all(d_ab > 0)
  np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)
  np.testing.assert_allclose(d_aa, 0.0, atol=1e-7)
  with pytest.raises(ValueError, match='set --config.method.lpips_weights=PATH'):
    distances.make_distance('lpips', (8, 8, 1)).load()
  with pytest.raises(FileNotFoundError, match='nothing is downloaded'):
    distances.make_distance('lpips', (8, 8, 1), lpips_weights=str(tmp_path / 'missing.npz')).load()
  weights.pop('lin4')
  np.savez(str(tmp_path / 'partial.npz'), **weights)
  with pytest.raises(ValueError, match=r"missing \['lin4'\]"):
    lpips.load_weights(str(tmp_path / 'partial.npz'))
  with pytest.raises(ValueError, match='needs RGB or grayscale images'):
    distances.make_distance('lpips', (2,), lpips_weights=path)


@pytest.mark.parametrize('nfe, guidance, calls', [(1, 1.0, 1), (4, 1.0, 4), (4, 2.0, 4)])
def test_samplers_make_the_documented_number_of_network_calls(nfe, guidance, calls):
  method = make('ict', num_classes=3 if guidance != 1.0 else 0)
  params = method.init(jax.random.PRNGKey(0)).nets['student'].params
  count = []
  apply = method.apply
  method.apply = lambda *args, **kwargs: count.append(1) or apply(*args, **kwargs)
  method.denoise = method.build_consistency_fn()
  labels = jnp.arange(5) % 3 if guidance != 1.0 else None
  out = method.sample(params, jax.random.PRNGKey(1), 5, nfe, labels=labels, guidance=guidance)
  assert out.shape == (5, 2) and len(count) == calls
  assert method.sampler.schedule(2) == [80.0, 0.821]
  np.testing.assert_allclose(method.sampler.schedule(4), [80.0, 0.821, 0.821 * 2 / 3, 0.821 / 3])


def test_bad_choices_are_clear_errors():
  with pytest.raises(ValueError, match="unknown method.curriculum 'linear'"):
    make('ct', curriculum='linear')
  with pytest.raises(ValueError, match="unknown method.parameterization 'trigflow'"):
    make('ect', parameterization='trigflow')
  config = base_config(method='cd', network='mlp', dataset='toy')
  with pytest.raises(ValueError, match='set --config.method.teacher=WORKDIR'):
    build_method(config, data_shape=(2,), num_classes=0)


@pytest.fixture(scope='module')
def toy_edm_run(tmp_path_factory):
  from fewstep_jax.train import trainer
  workdir = str(tmp_path_factory.mktemp('toy_edm'))
  small = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 2, 'train.batch_size': 16,
           'train.log_every': 1, 'train.tensorboard': False, 'eval.at_end': False}
  trainer.train(load_config(os.path.join(REPO, 'configs/toy/edm.py'), small), workdir)
  return workdir, small


def test_ect_starts_from_an_edm_run_and_cd_distils_it(toy_edm_run, tmp_path):
  from fewstep_jax.train import trainer
  from fewstep_jax import runs
  workdir, small = toy_edm_run
  opened = runs.open_run(workdir)
  edm_params = opened.params[opened.config.eval.params]
  config = load_config(os.path.join(REPO, 'configs/toy/ect.py'),
                       dict(small, **{'method.init_from': workdir, 'network.dropout': 0.1}))
  run = trainer.Run(config)  # Dropout differs from the EDM run's; it changes no parameter.
  init = jax.jit(run.method.init)(run.init_key, run.frozen)
  for got, want in zip(jax.tree.leaves(init.nets['student'].params), jax.tree.leaves(edm_params)):
    np.testing.assert_array_equal(got, want)
  config.unlock()
  config.method.parameterization = 'flow'
  with pytest.raises(ValueError, match="'edm' parameterisation; this 'ect' run uses 'flow'"):
    trainer.Run(config)
  cd = load_config(os.path.join(REPO, 'configs/toy/cd.py'), dict(small, **{'method.teacher': workdir}))
  _, state, finished = trainer.train(cd, str(tmp_path / 'cd'))
  assert finished and 'teacher' in state.frozen and 'target' in state.extra
