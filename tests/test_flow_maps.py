"""SplitMeanFlow, shortcut models and Consistency-FM against independent math.

Gaussian data x ~ N(0, S^2 I) on the linear path has a linear probability-flow ODE: z_r = z_t sigma(r)/sigma(t)
with sigma(t)^2 = (1 - t)^2 S^2 + t^2, so the exact velocity is v*(z, t) = z (t - (1 - t) S^2) / sigma(t)^2 and
the exact flow map from t to r is z sigma(r) / sigma(t) (the average velocity u* = (z - z_r) / (t - r)).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import paths, runs
from fewstep_jax.config_base import base_config
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method
from fewstep_jax.methods.base import StepContext

S = 0.7


def sigma(t):
  return jnp.sqrt((1 - t)**2 * S**2 + t**2)


def exact_velocity(z, t):
  t = t[:, None]
  return z * (t - (1 - t) * S**2) / sigma(t)**2


def exact_average_velocity(params, z, r, t, y=None, key=None):
  del params, y, key
  gap = (t - r)[:, None]
  safe = jnp.where(gap > 0, gap, 1.0)
  flow_map = z * (sigma(r) / sigma(t))[:, None]
  return jnp.where(gap > 0, (z - flow_map) / safe, exact_velocity(z, t))


def gaussian_batch(n, key=0):
  keys = jax.random.split(jax.random.PRNGKey(key), 4)
  x = S * jax.random.normal(keys[0], (n, 2))
  eps = jax.random.normal(keys[1], (n, 2))
  t = jax.random.uniform(keys[2], (n,), minval=0.05, maxval=0.95)
  r = t * jax.random.uniform(keys[3], (n,))
  return x, eps, r, t


def make(method, two_times=True, num_classes=0, inputs=None, **hparams):
  config = base_config(method=method, network='mlp', dataset='toy')
  config.network.hidden = 32
  config.network.depth = 2
  config.network.two_times = two_times
  config.network.time_scale = 1.0
  config.method.update(hparams)
  return build_method(config, data_shape=(2,), num_classes=num_classes, inputs=inputs)


# SplitMeanFlow ------------------------------------------------------------------------------------------------

def test_split_target_with_the_exact_network_is_the_exact_average_velocity():
  method = make('split_meanflow')
  method.average_velocity = exact_average_velocity
  x, eps, r, t = gaussian_batch(64)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  lam = jax.random.uniform(jax.random.PRNGKey(7), (64,))
  s = (1 - lam) * t + lam * r
  target = method.split_target(None, z, r, s, t, lam, None)
  np.testing.assert_allclose(target, exact_average_velocity(None, z, r, t), rtol=1e-4, atol=1e-5)
  # A wrong split point would not be exact: lam reversed breaks the identity.
  wrong = method.split_target(None, z, r, s, t, 1 - lam, None)
  assert float(jnp.max(jnp.abs(wrong - exact_average_velocity(None, z, r, t)))) > 1e-2


def test_split_times_are_ordered_with_the_boundary_slice():
  method = make('split_meanflow', boundary_fraction=0.25)
  r, s, t, lam = method.sample_times(jax.random.PRNGKey(0), 32)
  assert bool(jnp.all(r <= s)) and bool(jnp.all(s <= t))
  np.testing.assert_allclose(s, (1 - lam) * t + lam * r, rtol=1e-6)
  assert method.num_split(32) == 24
  np.testing.assert_array_equal(r[24:], t[24:])
  assert bool(jnp.all(r[:24] < t[:24]))


def test_split_meanflow_boundary_is_flow_matching_and_the_teacher_replaces_v():
  x, eps, _, _ = gaussian_batch(16, key=3)
  batch = {'x': x}
  method = make('split_meanflow', boundary_fraction=1.0)
  params = jax.tree.map(lambda p: p + 0.1, method.init(jax.random.PRNGKey(0)).nets['student'].params)
  key = jax.random.PRNGKey(4)
  loss, _ = method.loss(params, batch, key)
  # Independent recomputation: with every sample on the boundary the loss is flow matching on u(z, t, t).
  eps_key, time_key, _, _ = jax.random.split(key, 4)
  eps = jax.random.normal(eps_key, x.shape)
  _, _, t, _ = method.sample_times(time_key, 16)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  u = method.average_velocity(params, z, t, t)
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(u - (eps - x))), rtol=1e-5)

  exact_teacher = Teacher(network=None, readout=paths.readout('flow'), data_shape=(2,), num_classes=0,
                          apply=lambda params, z, t, r=None, y=None, key=None: exact_velocity(z, t))
  distiller = make('split_meanflow', boundary_fraction=1.0, inputs={'teacher': exact_teacher})
  loss_teacher, _ = distiller.loss(params, batch, key, StepContext(frozen={'teacher': None}))
  np.testing.assert_allclose(loss_teacher, jnp.mean(jnp.square(u - exact_velocity(z, t))), rtol=1e-5)


def test_split_meanflow_needs_a_trained_teacher_run(tmp_path):
  config = base_config(method='split_meanflow', network='mlp', dataset='toy')
  config.network.two_times = True
  config.method.teacher = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='not a trained fewstep_jax run'):
    runs.resolve_inputs(config, (2,), 0)
  config.network.two_times = False
  with pytest.raises(ValueError, match='two_times=True'):
    build_method(config, data_shape=(2,), num_classes=0)


# Shortcut models ----------------------------------------------------------------------------------------------

def test_shortcut_bootstrap_target_with_the_exact_network_is_the_exact_double_step():
  method = make('shortcut', target_ema=0.0)
  method.average_velocity = exact_average_velocity
  x, eps, _, _ = gaussian_batch(64, key=2)
  half = 2.0 ** -jax.random.randint(jax.random.PRNGKey(1), (64,), 1, 8).astype(jnp.float32)
  t = jnp.clip(2 * half + jax.random.uniform(jax.random.PRNGKey(2), (64,)) * (1 - 2 * half), 0, 1)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  target = method.bootstrap_target(None, z, t, half, None)
  np.testing.assert_allclose(target, exact_average_velocity(None, z, t - 2 * half, t), rtol=1e-4, atol=1e-5)
  # One half step alone is not the double step (the test can tell them apart).
  single = method.step_velocity(None, z, t, half)
  assert float(jnp.max(jnp.abs(single - target))) > 1e-3


def test_shortcut_times_sit_on_the_grid_of_their_step_with_equal_level_shares():
  method = make('shortcut', base_steps=8, bootstrap_fraction=0.25, target_ema=0.0)
  t, step = method.sample_times(jax.random.PRNGKey(0), 48)
  np.testing.assert_array_equal(step[12:], 1 / 8)  # Flow matching at the finest level.
  np.testing.assert_array_equal(np.sort(np.asarray(step[:12])), np.repeat([0.25, 0.5, 1.0], 4))
  cells = np.asarray(t / step)
  np.testing.assert_allclose(cells, np.round(cells), atol=1e-5)
  assert bool(jnp.all(t >= step)) and bool(jnp.all(t <= 1.0))
  assert len(np.unique(np.asarray(t[12:]))) > 3


def test_shortcut_flow_part_is_flow_matching_and_targets_come_from_the_ema_parameters():
  method = make('shortcut', bootstrap_fraction=0.0)
  state = method.init(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p + 0.1, state.nets['student'].params)
  x = gaussian_batch(16, key=5)[0]
  key = jax.random.PRNGKey(3)
  loss, _ = method.loss(params, {'x': x}, key)
  eps_key, time_key, _, _ = jax.random.split(key, 4)
  eps = jax.random.normal(eps_key, x.shape)
  t, step = method.sample_times(time_key, 16)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  s = method.step_velocity(params, z, t, jnp.full((16,), 1 / 128))
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(s - (eps - x))), rtol=1e-5)
  assert make('shortcut').context(state).target is state.nets['student'].ema['ema_0.999']
  with pytest.raises(ValueError, match='not among optim.ema_rates'):
    make('shortcut', target_ema=0.95)


# Consistency flow matching ------------------------------------------------------------------------------------

def test_consistency_fm_segments_and_hand_computed_loss():
  method = make('consistency_fm', two_times=False, num_segments=2, dt=0.01, alpha=0.5)
  np.testing.assert_allclose(method.segment_start(jnp.array([0.3, 0.5, 0.51, 1.0])), [0.0, 0.0, 0.5, 0.5])
  # A velocity field with known values: v(z, t) = 0.3 z + t.
  method.velocity = lambda params, z, t, y=None, key=None: 0.3 * z + t[:, None]
  x = jnp.array([[1.0, -1.0], [0.5, 0.2], [0.2, 0.1]])
  eps = jnp.array([[0.1, 0.4], [-0.3, 0.9], [1.0, -2.0]])
  t = jnp.array([0.8, 0.505, 0.3])  # Inside segment 2; crossing s_1 = 0.5; inside segment 1.
  f, f_target, v, v_target, keep = method.targets(None, x, eps, t, None, None)
  for i in range(3):
    ti, start = float(t[i]), (0.5 if float(t[i]) > 0.5 else 0.0)
    z = (1 - ti) * x[i] + ti * eps[i]
    tn = ti - 0.01
    zn = (1 - tn) * x[i] + tn * eps[i]
    vi, vn = 0.3 * z + ti, 0.3 * zn + tn
    np.testing.assert_allclose(f[i], z - (ti - start) * vi, rtol=1e-5)
    want = (1 - start) * x[i] + start * eps[i] if tn <= start else zn - (tn - start) * vn
    np.testing.assert_allclose(f_target[i], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_target[i], vn, rtol=1e-5)
  np.testing.assert_array_equal(keep, [True, False, True])


def test_consistency_fm_loss_vanishes_on_an_exactly_straight_flow():
  """Data at one point x0: the exact velocity (z - x0) / t is constant along every path, so f = x0 everywhere."""
  method = make('consistency_fm', two_times=False, num_segments=1)
  x0 = jnp.array([0.4, -0.2])
  method.velocity = lambda params, z, t, y=None, key=None: (z - x0) / t[:, None]
  loss, metrics = method.loss(None, {'x': jnp.tile(x0, (32, 1))}, jax.random.PRNGKey(0))
  assert float(loss) < 1e-8 and float(metrics['v_loss']) < 1e-6
  # A field that is not straight is penalised.
  method.velocity = lambda params, z, t, y=None, key=None: (z - x0) / t[:, None] + jnp.sin(5 * t)[:, None]
  assert float(method.loss(None, {'x': jnp.tile(x0, (32, 1))}, jax.random.PRNGKey(0))[0]) > 1e-6


# TwinFlow -----------------------------------------------------------------------------------------------------

def perturbed_params(method, scale=0.3):
  params = method.init(jax.random.PRNGKey(0)).nets['student'].params
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def test_twinflow_rectification_vanishes_when_the_fake_flow_equals_the_real_flow():
  method = make('twinflow', target_ema=0.0)
  params = perturbed_params(method)
  x = gaussian_batch(16)[0]
  dv = method.rectification_direction(params, x, jax.random.PRNGKey(1), None)
  assert float(jnp.max(jnp.abs(dv))) > 1e-2  # Negated time is a different flow for a generic network.
  # A network blind to the sign of time: the fake flow is the real flow, so dv = 0 and the term is inert.
  signed = method.apply
  method.apply = lambda params, z, t, d, y=None, key=None: signed(params, z, jnp.abs(t), d, y, key)
  np.testing.assert_array_equal(method.rectification_direction(params, x, jax.random.PRNGKey(1), None), 0.0)

  def rectify_only(params):
    return method.tutorial_loss(params, params, x, jax.random.normal(jax.random.PRNGKey(2), x.shape), None,
                                jax.random.PRNGKey(3), jax.random.PRNGKey(5), jax.random.PRNGKey(4))[1]['rectify']
  grads = jax.grad(rectify_only)(params)
  assert float(rectify_only(params)) == 0.0
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


def test_twinflow_rcgm_target_is_consistent_for_the_exact_flow_map():
  method = make('twinflow', target_ema=0.0)
  method.average_velocity = exact_average_velocity
  x, eps, r, t = gaussian_batch(64, key=4)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  v = exact_velocity(z, t)
  u = exact_average_velocity(None, z, r, t)
  target = method.rcgm_target(None, u, z, r, t, v, None)
  far = (t - r) >= 0.01
  # The residual is the O(delta) error of one Euler step of size delta, divided by delta.
  assert float(jnp.max(jnp.abs(target - u)[far])) < 0.05
  wrong = method.rcgm_target(None, u + 0.5, z, r, t, v, None)
  wide = (t - r) > 0.05  # There the residual 0.5 (t - r) / delta + O(delta) exceeds the clip.
  np.testing.assert_allclose(wrong[wide], (u + 0.5 - 1.0)[wide], rtol=1e-5, atol=1e-6)
  # Below delta the target is v itself (clipped step toward it).
  near_t = jnp.full((4,), 0.5)
  near_r = near_t - 0.001
  zz, vv = z[:4], v[:4]
  uu = vv + 0.2
  np.testing.assert_allclose(method.rcgm_target(None, uu, zz, near_r, near_t, vv, None), vv, rtol=1e-5)


def label_constant_network(params, z, t, d, y=None, key=None):
  """A stand-in network whose output is y + 1 everywhere (null label 3 -> 4), whatever z, times and key."""
  return jnp.broadcast_to((y + 1.0)[:, None], z.shape)


def test_twinflow_one_step_rcgm_target_uses_the_cfg_enhanced_velocity():
  """With u = y + 1 the RCGM residual at (t = 1, r = 0) is (y + 1) - v, so the one-step term is
  mean clip((y + 1) - v)^2 with v = eps - x + cfg_ratio ((y + 1) - 4), the guided velocity (the reference's
  `target`); eps is placed so that this residual is a small w inside the clip, hence the term is mean w^2."""
  method = make('twinflow', target_ema=0.0, cfg_ratio=0.5, num_classes=3)
  method.apply = label_constant_network
  y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  w = 0.3 * jax.random.uniform(jax.random.PRNGKey(1), (8, 2), minval=-1.0)
  guidance = 0.5 * (y - 3.0)[:, None]
  eps = x + (y + 1.0)[:, None] - guidance - w
  terms = method.tutorial_loss(None, None, x, eps, y, jax.random.PRNGKey(2), jax.random.PRNGKey(3),
                               jax.random.PRNGKey(4))[1]
  np.testing.assert_allclose(terms['one_step'], jnp.mean(w**2), rtol=1e-4)
  # The un-guided eps - x would leave the residual guidance + w, mostly outside the clip.
  assert float(jnp.mean(jnp.clip(guidance + w, -1, 1) ** 2)) > 10 * float(jnp.mean(w**2))


@pytest.mark.parametrize('production_split', [False, True])
def test_twinflow_dropout_keys_follow_the_reference_rng(production_split):
  """Each trained call and each rectification call draws its own dropout key; the target network's calls (CFG and
  RCGM) replay the first trained call's key, as the reference restores its RNG state before each."""
  method = make('twinflow', target_ema=0.0, cfg_ratio=0.5, num_classes=3, production_split=production_split)
  calls = []

  def recording_network(params, z, t, d, y=None, key=None):
    calls.append((params, None if key is None else tuple(np.asarray(jax.random.key_data(key)).ravel())))
    return label_constant_network(params, z, t, d, y, key) + 0.1 * z

  method.apply = recording_network
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  eps = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
  keys = (jax.random.PRNGKey(2), jax.random.PRNGKey(3), jax.random.PRNGKey(4))
  if production_split:
    method.production_loss('live', 'target', x, eps, y, *keys, jax.random.PRNGKey(5))
  else:
    method.tutorial_loss('live', 'target', x, eps, y, *keys)
  trained = [key for params, key in calls if params == 'live']
  target = [key for params, key in calls if params == 'target']
  assert None not in trained and len(set(trained)) == len(trained), trained
  assert target and set(target) == {trained[0] if not production_split else trained[1]}
  assert len(trained) == (4 if production_split else 6)  # Production: generation, one pass, rectification's two.


def test_twinflow_production_split_times_weights_and_training():
  method = make('twinflow', production_split=True, robust_loss=True, target_ema=0.999)
  r, t, slice_of = method.production_times(jax.random.PRNGKey(0), 32)
  np.testing.assert_array_equal(slice_of, np.repeat(np.arange(4), 8))
  np.testing.assert_array_equal(t[:8], 1.0)
  np.testing.assert_array_equal(r[:8], 0.0)
  assert bool(jnp.all(r[8:16] >= 0.95 * t[8:16] - 1e-6)) and bool(jnp.all(r[8:16] <= t[8:16]))
  assert bool(jnp.all(r[16:] <= t[16:])) and bool(jnp.all(r >= 0))
  state = method.init(jax.random.PRNGKey(0))
  x = gaussian_batch(32)[0]
  new_state, metrics = jax.jit(method.step)(state, {'x': x}, jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['rectify']) >= 0
  changed = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new_state.nets['student'].params),
                                                             jax.tree.leaves(state.nets['student'].params))]
  assert max(changed) > 0
  from fewstep_jax.methods.twinflow import barron
  mse = jnp.array([0.0, 1e-6, 1.0])
  # alpha = 1: mse / (c sqrt(mse / (c^2 + 1e-8) + 1)), about mse / sqrt(mse + c^2).
  np.testing.assert_allclose(barron(mse, 1.0, 1e-3), mse / (1e-3 * jnp.sqrt(mse / (1e-6 + 1e-8) + 1)), rtol=1e-5)


def test_twinflow_one_step_sample_is_eps_minus_u():
  method = make('twinflow', target_ema=0.0)
  params = perturbed_params(method)
  key = jax.random.PRNGKey(3)
  eps = jax.random.normal(key, (8, 2))
  sample = method.sample_at(params, key, 8, 1)
  np.testing.assert_allclose(sample, eps - method.average_velocity(params, eps, jnp.zeros(8), jnp.ones(8)),
                             rtol=1e-5, atol=1e-6)


def test_a_planned_flow_map_sampler_compiles_once_and_takes_uniform_steps():
  method = make('twinflow', target_ema=0.0)
  params = perturbed_params(method)
  key = jax.random.PRNGKey(3)
  sampler = jax.jit(lambda params, plan: method.sample(params, key, 8, plan))
  for nfe in (1, 2, 5):
    # By hand: nfe steps z_r = z_t - (t - r) u(z_t, r, t) over the uniform grid from 1 to 0.
    z = jax.random.normal(key, (8, 2))
    for t, r in zip(np.linspace(1, 0, nfe + 1)[:-1], np.linspace(1, 0, nfe + 1)[1:]):
      z = z - (t - r) * method.average_velocity(params, z, jnp.full(8, r), jnp.full(8, t))
    np.testing.assert_allclose(sampler(params, method.sampling_plan(nfe, False)), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(method.sample_at(params, key, 8, nfe), z, rtol=1e-5, atol=1e-5)
  assert sampler._cache_size() == 1  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='no ODE solver'):
    method.sampling_plan(2, False, solver='heun')
  cfm = make('consistency_fm', two_times=False, num_segments=2)
  params = perturbed_params(cfm)
  cfm_sampler = jax.jit(lambda params, plan: cfm.sample(params, key, 8, plan))
  for nfe in (1, 3):
    np.testing.assert_allclose(cfm_sampler(params, cfm.sampling_plan(nfe, False)), cfm.sample_at(params, key, 8, nfe),
                               rtol=1e-5, atol=1e-6)
  assert cfm_sampler._cache_size() == 1  # pylint: disable=protected-access


def test_shortcut_cfg_applies_to_labelled_rows_of_the_finest_level_only():
  method = make('shortcut', target_ema=0.0, base_steps=8, bootstrap_fraction=1.0, bootstrap_guidance=1.5,
                num_classes=3)
  params = perturbed_params(method)
  t, step = method.sample_times(jax.random.PRNGKey(0), 12)
  half = step / 2
  z = jax.random.normal(jax.random.PRNGKey(1), (12, 2))
  y = jnp.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])  # 3 is the null label.
  start = method.finest_bootstrap_start(12)
  np.testing.assert_array_equal(half[start:], 1 / 8)
  assert bool(jnp.all(half[:start] > 1 / 8))
  got = method.bootstrap_target(params, z, t, half, y, start)

  def velocity(z, t):  # Independent: guidance on every labelled finest-level row, conditional elsewhere.
    cond = method.step_velocity(params, z, t, half, y)
    uncond = method.step_velocity(params, z, t, half, jnp.full_like(y, 3))
    use = ((half <= 1 / 8) & (y != 3))[:, None]
    return jnp.where(use, uncond + 1.5 * (cond - uncond), cond)

  s1 = velocity(z, t)
  s2 = velocity(jnp.clip(z - half[:, None] * s1, -4, 4), t - half)
  np.testing.assert_allclose(got, jnp.clip((s1 + s2) / 2, -4, 4), rtol=1e-5, atol=1e-6)
  # Guidance changes the labelled finest rows, so the test can tell it apart from no guidance.
  plain = method.bootstrap_target(params, z, t, half, None)
  assert float(jnp.max(jnp.abs(got - plain)[start:])) > 1e-4
