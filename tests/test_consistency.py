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
from fewstep_jax.methods.base import StepContext
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
  sigma_n, sigma_next, _ = method.grid_pair(jax.random.PRNGKey(0), 50_000, step)
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


def numpy_batch_denoiser(x_t, t, x, y=None):
  """sum_j softmax_j(-||x_t,i - x_j||^2 / (2 t_i^2)) x_j in float64, over sample i's class when labelled."""
  x_t, t, x = (np.asarray(v, np.float64) for v in (x_t, t, x))
  logits = -np.sum((x_t[:, None] - x[None]) ** 2, axis=-1) / (2 * t[:, None] ** 2)
  if y is not None:
    logits = np.where(np.asarray(y)[:, None] == np.asarray(y)[None], logits, -np.inf)
  weights = np.exp(logits - logits.max(axis=1, keepdims=True))
  return (weights / weights.sum(axis=1, keepdims=True)) @ x


def test_sct_batch_denoiser_is_the_empirical_posterior_mean():
  """The stable target's x̂0 is E[x | x_t] under the batch's empirical distribution (per class when labelled), from
  t = 0.002 (one-hot on the sample itself) to t = 80 (the batch mean)."""
  from fewstep_jax.methods.ect import batch_denoiser
  x, eps = data(n=8)
  t = jnp.array([0.002, 0.05, 0.3, 0.7, 1.0, 3.0, 20.0, 80.0])
  x_t = x + t[:, None] * eps
  np.testing.assert_allclose(batch_denoiser(x_t, t, x), numpy_batch_denoiser(x_t, t, x), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(batch_denoiser(x_t, t, x)[0], x[0], atol=1e-6)
  np.testing.assert_allclose(batch_denoiser(x_t, t, x)[-1], np.mean(x, axis=0), atol=2e-2)  # Nearly uniform.
  y = jnp.array([0, 1, 0, 1, 2, 2, 0, 1])
  np.testing.assert_allclose(batch_denoiser(x_t, t, x, y, null_label=3), numpy_batch_denoiser(x_t, t, x, y),
                             rtol=1e-4, atol=1e-5)
  null = y.at[0].set(3)  # A dropped label averages over the whole batch.
  np.testing.assert_allclose(batch_denoiser(x_t, t, x, null, null_label=3)[0],
                             numpy_batch_denoiser(x_t, t, x)[0], rtol=1e-4, atol=1e-5)


def test_sct_without_variance_reduction_is_ect():
  """With the sample alone in its reference set (a batch of one, or samples far apart), x̂0 = x and the stable
  target point (r / t) x_t + (1 - r / t) x̂0 is ECT's x + r eps: the pair losses agree to float32 rounding. On a
  batch whose samples overlap, the targets differ."""
  ect, sct = make('ect'), make('stable_ct')
  params = perturbed_params(ect)
  x, eps = data(n=8)
  t = jnp.linspace(0.1, 3.0, 8)
  r = jnp.where(jnp.arange(8) < 2, 0.0, 0.6 * t)
  for i in range(8):
    one = lambda v: v[i:i + 1]
    np.testing.assert_allclose(sct.pair_loss(params, None, one(x), None, one(eps), one(t), one(r)),
                               ect.pair_loss(params, None, one(x), None, one(eps), one(t), one(r)), rtol=2e-6)
  far = x + 100.0 * jnp.arange(8)[:, None]
  np.testing.assert_allclose(sct.pair_loss(params, None, far, None, eps, t, r),
                             ect.pair_loss(params, None, far, None, eps, t, r), rtol=2e-6)
  assert np.max(np.abs(sct.pair_loss(params, None, x, None, eps, t, r)
                       - ect.pair_loss(params, None, x, None, eps, t, r))) > 1e-3


def make_tcm(**hparams):
  return make('tcm', stage1='unused (parameters given)', **hparams)


def test_tcm_times_are_the_truncated_student_t_with_a_fixed_boundary_count():
  from scipy import stats
  method = make_tcm()
  batch = 4000
  t, r = method.t_and_r(jax.random.PRNGKey(0), batch, 0)
  boundary = np.asarray(method.boundary_mask(jax.random.split(jax.random.PRNGKey(0))[1], batch))
  assert boundary.sum() == 1000
  np.testing.assert_array_equal(np.asarray(t)[boundary], 1.0)
  rest = np.log(np.asarray(t)[~boundary])
  assert rest.min() >= 0.0 and rest.max() <= math.log(80.0) + 1e-5
  law = stats.t(0.01, loc=0.0, scale=0.2)
  lo, hi = law.cdf(0.0), law.cdf(math.log(80.0))
  for q in (0.1, 0.25, 0.5, 0.75, 0.9):
    want = law.ppf(lo + q * (hi - lo))
    assert abs(np.quantile(rest, q) - want) < 0.05 + 0.1 * want, q
  want_r = np.asarray(t) - np.asarray(t) * 1e-3 * (1 + 8 / (1 + np.exp(np.asarray(t))))
  np.testing.assert_allclose(r, np.maximum(want_r, 1e-6), rtol=1e-6)


def test_tcm_target_below_the_transition_is_the_frozen_stage1_model():
  """The piecewise model of TCMPrecond: at r >= t' the live network, below it the stage-1 parameters; the loss is
  the mean over the truncated samples plus boundary_weight times the mean over the boundary ones."""
  method = make_tcm()
  live, stage1 = perturbed_params(method, seed=0), perturbed_params(method, seed=5)
  frozen = {'stage1': stage1}
  x, eps = data(n=8)
  t = jnp.array([1.0, 1.0, 1.2, 2.0, 5.0, 10.0, 40.0, 80.0])
  r = jnp.array([0.99, 0.995, 1.1, 0.9, 4.0, 0.5, 39.0, 79.0])
  x_r = x + r[:, None] * eps
  below = (r < 1.0)[:, None]
  want_target = jnp.where(below, method.consistency_fn(stage1, x_r, r), method.consistency_fn(live, x_r, r))
  online = method.consistency_fn(live, x + t[:, None] * eps, t)
  want = np.linalg.norm(np.asarray(online - want_target), axis=1) / np.asarray(t - r)
  np.testing.assert_allclose(method.pair_loss(live, frozen, x, None, eps, t, r), want, rtol=1e-5)
  # The loss's reduction over the boundary samples of its own draw.
  key = jax.random.PRNGKey(4)
  batch = {'x': x}
  loss, metrics = method.loss(live, batch, key, ctx=StepContext(frozen=frozen))
  eps_key, t_key, _, net_key = jax.random.split(key, 4)
  t, r = method.t_and_r(t_key, 8, 0)
  per = np.asarray(method.pair_loss(live, frozen, x, None, jax.random.normal(eps_key, x.shape), t, r, net_key))
  mask = np.asarray(method.boundary_mask(jax.random.split(t_key)[1], 8))
  assert mask.sum() == 2
  np.testing.assert_allclose(loss, per[~mask].mean() + 0.1 * per[mask].mean(), rtol=1e-5)


def test_tcm_stage2_continues_the_stage1_counters():
  """NVlabs/TCM resumes stage 2 at cur_nimg = resume_tick x 100 batches: the learning rate of its k-th update is
  learning_rate_schedule at iteration R + k (ref_lr / sqrt(max((R + k) / decay_iter, 1))), and the power EMA's rate
  is power_function_beta(R + k + 1, gamma) = (1 - 1 / (R + k + 1))^(gamma + 1), written out here."""
  stage1_steps, lr, decay, std = 800_000, 5e-4, 8000, 0.05
  config = base_config(method='tcm', network='mlp', dataset='toy')
  config.network.update(hidden=32, depth=2, time_scale=250.0)
  config.method.update(stage1='unused', stage1_steps=stage1_steps)
  config.optim.update(name='adam', schedule='inverse_sqrt', lr=lr, decay_ref_steps=decay, warmup_steps=0,
                      ema_rates=(), ema_stds=(std,))
  config.eval.params = f'phema_{std:g}'
  method = build_method(config, data_shape=(2,), num_classes=0, inputs=described_teachers(config, (2,), 0))
  for k in (0, 7):
    assert method.learning_rate(k) == pytest.approx(lr / math.sqrt((stage1_steps + k) / decay), rel=1e-6)
  # One update from parameters p0 with gradient g: the EMA copy e0 = p0 moves to beta e0 + (1 - beta) p1.
  net = method.student.init(perturbed_params(method))
  grads = jax.tree.map(jnp.ones_like, net.params)
  k = 3
  updated = method.student.apply_gradients(net, grads, count=jnp.asarray(k))
  gamma = float(np.roots([1.0, 7.0, 16.0 - std**-2, 12.0 - std**-2]).real.max())
  beta = (1 - 1 / (stage1_steps + k + 1)) ** (gamma + 1)
  leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0], np.float64)
  np.testing.assert_allclose(leaf(updated.ema[f'phema_{std:g}']),
                             beta * leaf(net.params) + (1 - beta) * leaf(updated.params), rtol=1e-6, atol=1e-9)
  # Adam's first step moves each weight by the learning rate: the schedule's value at R + 0 (the count before it).
  np.testing.assert_allclose(leaf(net.params) - leaf(updated.params), lr / math.sqrt(stage1_steps / decay),
                             rtol=1e-3)
  assert beta > 0.999  # Continuing the counter: a stage-2 start at 0 would copy (beta_1 = 0).


def test_tcm_needs_its_stage1_run():
  with pytest.raises(ValueError, match='set --config.method.stage1=WORKDIR'):
    make('tcm')
  with pytest.raises(ValueError, match='transition_sigma=90.0 must lie inside'):
    make_tcm(transition_sigma=90.0)


def exact_segment_model(method):
  """For N(0, S^2 I) data: the exact multistep consistency function, as the data prediction a network outputs.
  From x at sigma in the segment (b, b'] the probability-flow ODE lands at x sqrt((S^2 + b^2) / (S^2 + sigma^2)) at
  the segment's start b; the x0 whose DDIM move lands there is (x_b - (b / sigma) x) / (1 - b / sigma)."""
  from fewstep_jax.methods.consistency import segment_starts
  starts = jnp.asarray((0.0,) + tuple(reversed(segment_starts(method.hparams))))

  def consistency_fn(params, x, sigma, y=None, key=None):
    # The largest start below sigma; a segment's top grid point may round a float32 ulp above the next start.
    b = starts[jnp.sum(starts[None, :] < sigma[:, None] * (1 - 1e-6), axis=1) - 1]
    x_b = x * jnp.sqrt((S**2 + b**2) / (S**2 + sigma**2))[:, None]
    ratio = (b / sigma)[:, None]
    return (x_b - ratio * x) / (1 - ratio)
  return consistency_fn


def exact_ode_point(frozen, x, z, x_next, sigma_next, sigma_n, y):
  """x̂_n on the exact probability-flow ODE of N(0, S^2 I) data through x_{n+1}."""
  return x_next * jnp.sqrt((S**2 + sigma_n**2) / (S**2 + sigma_next**2))[:, None]


def test_multistep_loss_vanishes_at_the_exact_segment_model_and_k1_is_cm():
  """Multistep CM on Gaussian data: with the exact ODE step and the exact segment-start model (DDIM + inverse DDIM),
  every pair of the K = 4 grid has loss 0; the CM comparison (segments = 1, endpoint 'data') of the same pairs does
  not. With K = 1 every pair's segment starts at 0 and the loss is CM's exactly."""
  method = make('multistep_cd', segments=4, distance='l2')
  method.consistency_fn = exact_segment_model(method)
  method.previous_point = exact_ode_point
  x, z = data(n=512)
  sigma_n, sigma_next, sigma_end = method.grid_pair(jax.random.PRNGKey(1), 512, 0)
  starts = set(np.round(np.asarray(sigma_end), 5).tolist())
  assert len(starts) == 4 and 0.0 in starts   # Four segments, the first starting at the data.
  loss = method.pair_loss(None, None, None, x, None, z, sigma_n, sigma_next, sigma_end=sigma_end)
  np.testing.assert_allclose(loss, 0.0, atol=1e-8)
  data_end = method.pair_loss(None, None, None, x, None, z, sigma_n, sigma_next, sigma_end=jnp.zeros_like(sigma_n))
  assert float(jnp.mean(data_end)) > 1e-3
  one = make('multistep_cd', segments=1)
  cm = make('cd', weighting='snr_plus_one', distance='pseudo_huber', huber_c=1e-4, target_ema='none',
            curriculum='log_linear', s0=64, s1=1280)
  params = perturbed_params(one)
  sigma_n, sigma_next, sigma_end = one.grid_pair(jax.random.PRNGKey(2), 64, 0)
  np.testing.assert_array_equal(sigma_end, 0.0)
  np.testing.assert_array_equal(sigma_n, cm.grid_pair(jax.random.PRNGKey(2), 64, 0)[0])
  for method_ in (one, cm):
    method_.previous_point = exact_ode_point
  x, z = data(n=64)
  np.testing.assert_allclose(one.pair_loss(params, None, None, x, None, z, sigma_n, sigma_next, sigma_end=sigma_end),
                             cm.pair_loss(params, None, None, x, None, z, sigma_n, sigma_next), rtol=1e-6)


def test_multistep_sampler_with_the_exact_model_solves_the_ode():
  """K deterministic DDIM steps between the segment boundaries with the exact segment model land on the ODE's
  solution x_T S / sqrt(S^2 + sigma_max^2)."""
  method = make('multistep_cd', segments=4)
  method.sampler.consistency_fn = exact_segment_model(method)
  noise = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
  got = method.sample_at(None, jax.random.PRNGKey(4), 16, 4, noise=noise)
  np.testing.assert_allclose(got, 80.0 * noise * S / math.sqrt(S**2 + 80.0**2), rtol=1e-4, atol=1e-6)
  assert len(method.sampler.schedule(4)) == 4


def test_tcd_compares_both_outputs_moved_to_a_common_s():
  method = make('tcd')
  params, target = perturbed_params(method, 0), perturbed_params(method, 5)
  x, z = data(n=256)
  sigma_n, sigma_next, s = method.grid_pair(jax.random.PRNGKey(6), 256, 0)
  assert np.all(np.asarray(s) <= np.asarray(sigma_n)) and np.mean(np.asarray(s) == 0.0) > 0.02
  assert np.mean(np.isclose(np.asarray(s), np.asarray(sigma_n))) > 0.02  # s = sigma_n is drawn too.
  method.previous_point = exact_ode_point
  x_next = x + sigma_next[:, None] * z
  x_hat = exact_ode_point(None, x, z, x_next, sigma_next, sigma_n, None)
  online = method.consistency_fn(params, x_next, sigma_next)
  reference = method.consistency_fn(target, x_hat, sigma_n)
  a = online + (s / sigma_next)[:, None] * (x_next - online)
  b = reference + (s / sigma_n)[:, None] * (x_hat - reference)
  want = np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=1)
  got = method.pair_loss(params, target, None, x, None, z, sigma_n, sigma_next, sigma_end=s)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
  cd = make('cd')
  cd.previous_point = exact_ode_point
  np.testing.assert_allclose(method.pair_loss(params, target, None, x, None, z, sigma_n, sigma_next),
                             cd.pair_loss(params, target, None, x, None, z, sigma_n, sigma_next), rtol=1e-6)


def test_multistep_curriculum_is_log_linear_from_64_to_1280():
  for step, want in ((0, 64), (50_000, round(math.exp(math.log(64) + 0.5 * math.log(20)))), (100_000, 1280),
                     (300_000, 1280)):
    assert int(timesteps.log_linear_num_scales(step, 100_000, 64, 1280)) == want + 1


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
  out = method.sample_at(params, jax.random.PRNGKey(1), 5, nfe, labels=labels, guidance=guidance)
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


def test_ect_starts_from_an_edm_run_and_cd_distils_it(toy_edm_run, tmp_path):
  from fewstep_jax import trainer
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
  cd = load_config(os.path.join(REPO, 'configs/toy/cd.py'), dict(small, **{'method.teacher': workdir,
                                                                        'method.init_from': workdir}))
  _, state, finished = trainer.train(cd, str(tmp_path / 'cd'))
  assert finished and 'teacher' in state.frozen and 'target' in state.extra

