"""CTM (consistency trajectory models) against independent math: the jump's parameterisation, the official draws of
k, t, u and s, the loss against a hand-written Gaussian case, gamma-sampling with the exact jump, the start from a
tiny toy EDM run's weights, and the GAN term's alternating updates and adaptive weights."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, described_teachers, perturbed_params
from fewstep_jax.config_base import base_config, load_config
from fewstep_jax.methods import build_method
from fewstep_jax.methods.base import StepContext
from test_consistency import S, data


def make_ctm(**hparams):
  config = base_config(method='ctm', network='mlp', dataset='toy')
  config.network.update(hidden=32, depth=2, time_scale=250.0, two_times=True)
  config.method.update(hparams)
  return build_method(config, data_shape=(2,), num_classes=0, inputs=described_teachers(config, (2,), 0))


def exact_g(params, x_t, t, s, y=None, key=None):
  """For N(0, S^2 I) data: the g whose jump G(x_t, t, s) is the exact ODE map x_t sqrt((S^2 + s^2) / (S^2 + t^2))."""
  jumped = x_t * jnp.sqrt((S**2 + s**2) / (S**2 + t**2))[:, None]
  ratio = (s / t)[:, None]
  return jnp.where(ratio < 1, (jumped - ratio * x_t) / jnp.maximum(1 - ratio, 1e-12), S**2 / (S**2 + t[:, None]**2) * x_t)


def test_ctm_jump_is_the_papers_parameterisation():
  method = make_ctm()
  params = perturbed_params(method)
  x, _ = data()
  t, s = jnp.linspace(0.5, 40.0, 8), jnp.linspace(0.002, 0.4, 8)
  g = method.g(params, x, t, s)
  np.testing.assert_allclose(method.jump(params, x, t, s), (s / t)[:, None] * x + (1 - s / t)[:, None] * g,
                             rtol=1e-6)
  np.testing.assert_allclose(method.jump(params, x, t, t), x, rtol=1e-6)
  # g = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t), c_noise(s)): the EDM denoiser with s as the second time.
  raw = method.apply(params, x / jnp.sqrt(t**2 + 0.25)[:, None], jnp.log(t) / 4, jnp.log(s) / 4, None, None)
  want = (0.25 / (t**2 + 0.25))[:, None] * x + (t * 0.5 / jnp.sqrt(t**2 + 0.25))[:, None] * raw
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_ctm_times_are_the_officials_draws():
  method = make_ctm(num_scales=18, heun_steps=17)
  ks, ok = [], True
  for seed in range(600):
    k, t_index, u_index, s_index = method.draw_times(jax.random.PRNGKey(seed), 32)
    ks.append(int(k))
    ok &= bool(jnp.all((u_index == t_index + k) & (s_index >= u_index) & (s_index <= 17) & (t_index >= 0)))
  assert ok
  counts = np.bincount(ks, minlength=18)[1:]
  want = np.arange(1, 18) / np.arange(1, 18).sum()
  assert np.max(np.abs(counts / len(ks) - want)) < 0.03   # p(k) ∝ k.


def test_ctm_loss_is_the_jumped_estimate_against_the_jumped_target():
  """With the exact Gaussian teacher, the estimate G_sg(G(x_t, t, s), s, sigma_min) and the target
  G_sg(sg G(x_u, u, s), s, sigma_min) with x_u from k Heun steps written out here; at the exact jump model the loss
  is only the Heun steps' error (small)."""
  method = make_ctm(num_scales=18, heun_steps=17, distance='l2')
  teacher = lambda frozen, y: (lambda x, sigma: S**2 / (S**2 + sigma[:, None]**2) * x)
  method.teacher_x0 = teacher
  x, _ = data(n=64)
  key = jax.random.PRNGKey(7)
  time_key, eps_key, _, _ = jax.random.split(key, 4)
  k, t_index, u_index, s_index = method.draw_times(time_key, 64)
  grid = lambda i: np.asarray(method.grid(i), np.float64)
  x_t = np.asarray(x + method.grid(t_index)[:, None] * jax.random.normal(eps_key, x.shape), np.float64)
  x_u = x_t.copy()
  for j in range(int(k)):
    a, b = grid(t_index + j)[:, None], grid(t_index + j + 1)[:, None]
    slope = (x_u - S**2 / (S**2 + a**2) * x_u) / a
    euler = x_u + (b - a) * slope
    x_u = x_u + (b - a) * 0.5 * (slope + (euler - S**2 / (S**2 + b**2) * euler) / b)
  np.testing.assert_allclose(method.teacher_solve({'teacher': None}, jnp.asarray(x_t, jnp.float32), t_index, k, None),
                             x_u, rtol=2e-4, atol=1e-5)
  method.g = exact_g
  loss, _ = method.ctm_loss(None, {'x': x}, key, StepContext(frozen={'teacher': None}, target=None))
  to_min = lambda z, sigma: z * np.sqrt((S**2 + 0.002**2) / (S**2 + sigma[:, None]**2))
  want = np.mean((to_min(x_t, grid(t_index)) - to_min(x_u, grid(u_index))) ** 2)
  np.testing.assert_allclose(float(loss), want, rtol=2e-3)
  # The online jump from x_t and the target's from x_u land at sigma_min on the same ODE solution only if the teacher
  # steps are exact: swap in a wrong teacher and the loss grows.
  method.teacher_x0 = lambda frozen, y: (lambda x, sigma: 0.5 * x)
  wrong, _ = method.ctm_loss(None, {'x': x}, key, StepContext(frozen={'teacher': None}, target=None))
  assert float(wrong) > 10 * float(loss) + 1e-3


def test_ctm_adaptive_weights_are_computed_per_group_as_the_officials_micro_batches():
  """adaptive_group = G: the batch splits into groups (examples m, m + M, ...; key fold_in(key, m)) with one k for
  all, each group's gradient is grad L_CTM + w_m grad L_DSM with its own w_m = ||grad L_CTM|| / ||grad L_DSM||
  (written out here from the two terms' gradients on the group), and the student's gradient is their mean."""
  group, batch = 4, 12
  method = make_ctm(num_scales=18, heun_steps=17, distance='l2', adaptive_group=group)
  method.teacher_x0 = lambda frozen, y: (lambda x, sigma: S**2 / (S**2 + sigma[:, None]**2) * x)
  method.config.train.batch_size = batch
  state = method.init(jax.random.PRNGKey(0))
  params = perturbed_params(method)
  state = state.replace(nets={'student': method.student.init(params)}, extra={'target': params},
                        frozen={'teacher': jnp.zeros(())})  # The analytic teacher reads no parameters.
  x, _ = data(n=batch)
  key = jax.random.PRNGKey(9)
  ctx = method.context(state)
  grads, metrics = jax.jit(lambda p, b, k: method.gradients(p, b, k, ctx))({'student': params}, {'x': x}, key)
  grads = grads['student']
  groups = batch // group
  k = method.draw_heun_steps(jax.random.fold_in(key, groups))
  norm = lambda g: math.sqrt(sum(float(jnp.sum(np.asarray(v, np.float64)**2)) for v in jax.tree.leaves(g)))
  terms = jax.jit(lambda part, ctm_key, dsm_key: (
      jax.grad(lambda p: method.ctm_loss(p, part, ctm_key, ctx, k)[0])(params),
      jax.grad(lambda p: method.dsm_loss(p, part, dsm_key, ctx)[0])(params)))
  want, weights = None, []
  for m in range(groups):
    ctm_key, dsm_key, _ = jax.random.split(jax.random.fold_in(key, m), 3)
    g_ctm, g_dsm = terms({'x': x[m::groups]}, ctm_key, dsm_key)
    w = norm(g_ctm) / (norm(g_dsm) + 1e-4)
    weights.append(w)
    combined = jax.tree.map(lambda a, b: (np.asarray(a, np.float64) + w * np.asarray(b, np.float64)) / groups,
                            g_ctm, g_dsm)
    want = combined if want is None else jax.tree.map(np.add, want, combined)
  for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-6)
  np.testing.assert_allclose(float(metrics['dsm_adaptive_weight']), np.mean(weights), rtol=1e-4)
  assert max(weights) > 1.05 * min(weights)  # Each group's own weight: they differ.
  with pytest.raises(ValueError, match='must divide train.batch_size'):
    make_ctm(adaptive_group=5)


def test_ctm_gamma_sampling_with_the_exact_jump_solves_the_ode():
  method = make_ctm()
  method.g = exact_g
  noise = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
  want = 80.0 * noise * math.sqrt((S**2 + 0.002**2) / (S**2 + 80.0**2))
  # As evaluation runs it: one compiled sampler, the plan of each NFE its argument.
  sample = jax.jit(lambda key, noise, plan: method.sample(None, key, 16, plan, noise=noise))
  for nfe in (1, 2, 4):
    np.testing.assert_allclose(sample(jax.random.PRNGKey(4), noise, method.sampling_plan(nfe, False)), want,
                               rtol=1e-4, atol=1e-6)
  assert sample._cache_size() == 1  # pylint: disable=protected-access
  many = method.sample_at(None, jax.random.PRNGKey(5), 20000, 3, gamma=0.5)
  np.testing.assert_allclose(np.var(np.asarray(many), axis=0), S**2 + 0.002**2, rtol=0.05)


def test_ctm_starts_from_the_teacher_and_takes_a_step(toy_edm_run):
  from fewstep_jax import trainer
  from fewstep_jax import runs
  workdir, small = toy_edm_run
  config = load_config(os.path.join(REPO, 'configs/toy/ctm.py'), dict(small, **{'method.teacher': workdir}))
  run = trainer.Run(config)
  state = jax.jit(run.method.init)(run.init_key, run.frozen)
  opened = runs.open_run(workdir)
  teacher = opened.params[opened.config.eval.params]
  student = state.nets['student'].params
  for path, leaf in jax.tree_util.tree_leaves_with_path(teacher):
    got = student
    for part in path:
      got = got[part.key]
    np.testing.assert_array_equal(got, leaf)
  assert 'embed_r' in student['cond'] and 'embed_r' not in teacher['cond']
  method = run.method
  batch = {'x': jax.random.normal(jax.random.PRNGKey(1), (16, 2))}
  key = jax.random.PRNGKey(2)
  # The adaptive combination of the terms' gradients: test_ctm_gan_alternates_student_and_discriminator_updates.
  new, metrics = jax.jit(method.step)(state, batch, key)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
  assert np.all(np.isfinite(method.sample_at(method.sampling_params(new), jax.random.PRNGKey(3), 8, 2)))
  bad = load_config(os.path.join(REPO, 'configs/toy/ctm.py'),
                    dict(small, **{'method.teacher': workdir, 'network.hidden': 16}))
  with pytest.raises(ValueError, match='do not fit the student'):
    r = trainer.Run(bad)
    r.method.init(r.init_key, r.frozen)


@pytest.mark.slow  # About 55 s; CTM without the GAN stays in the default run.
def test_ctm_gan_alternates_student_and_discriminator_updates(toy_edm_run):
  """gan_weight > 0: the head reads the frozen teacher's bottleneck; from gan_start the student (its gradient
  grad L_CTM + w grad L_DSM + lambda grad L_GAN with the adaptive w = ||grad L_CTM|| / ||grad L_DSM|| and
  lambda = clip(||grad L_CTM|| / ||grad L_GAN||, 0.01, 10), each written out here) and the head update on
  alternate steps, each leaving the other untouched, and every step reports the same metrics."""
  from fewstep_jax import nn
  from fewstep_jax import trainer
  workdir, small = toy_edm_run
  config = load_config(os.path.join(REPO, 'configs/toy/ctm.py'), dict(
      small, **{'method.teacher': workdir, 'method.gan_weight': 1.0, 'method.gan_start': 2,
                'optim.warmup_steps': 0}))  # So that step 0's update moves the student.
  run = trainer.Run(config)
  method = run.method
  state = jax.jit(method.init)(run.init_key, run.frozen)
  assert [method.schedule.phases[method.step_options(k)['phase']] for k in range(5)] == [
      ('student',), ('student',), ('student_gan',), ('discriminator',), ('student_gan',)]
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  teacher_features = nn.make_features(nn.build_network(run.inputs['teacher'].network, num_classes=0))
  sigma = jnp.full((4,), 0.002)
  want = method.discriminator.head.apply({'params': state.nets['head'].params}, teacher_features(
      run.frozen['teacher'], images / jnp.sqrt(sigma**2 + 0.25)[:, None], jnp.log(sigma) / 4))
  np.testing.assert_allclose(method.logits(state.nets['head'].params, run.frozen, images), want, rtol=1e-5, atol=1e-6)
  batch = {'x': jax.random.normal(jax.random.PRNGKey(2), (16, 2))}
  names = None
  for update in ('student_gan', 'discriminator'):  # 'student' (no GAN term): the step of the test above.
    phase = method.schedule.phases.index((update,))
    new, metrics = jax.jit(lambda s, b, k: method.step(s, b, k, phase))(state, batch, jax.random.PRNGKey(3))
    names = names or set(metrics)
    assert set(metrics) == names and all(np.isfinite(v) for v in jax.device_get(metrics).values())
    moved = lambda role: not tree_equal(new.nets[role].params, state.nets[role].params)
    assert moved('student') == (update != 'discriminator') and moved('head') == (update == 'discriminator'), update
  ctx = method.context(state)
  grads, metrics = jax.jit(lambda p, b, k: method.gradients(p, b, k, ctx, gan=True))(
      {'student': state.nets['student'].params}, batch, jax.random.PRNGKey(4))
  grads = grads['student']
  ctm_key, dsm_key, gan_key = jax.random.split(jax.random.PRNGKey(4), 3)
  params = state.nets['student'].params
  terms = ((method.ctm_loss, ctm_key), (method.dsm_loss, dsm_key), (method.gan_generator_loss, gan_key))
  g_ctm, g_dsm, g_gan = jax.jit(lambda p: tuple(jax.grad(lambda p, f=f, k=k: f(p, batch, k, ctx)[0])(p)
                                                for f, k in terms))(params)  # One compilation for the three.
  norm = lambda g: math.sqrt(sum(float(jnp.sum(v**2)) for v in jax.tree.leaves(g)))
  w = min(norm(g_ctm) / (norm(g_dsm) + 1e-4), 1e4)
  lam = min(max(norm(g_ctm) / (norm(g_gan) + 1e-4), 0.01), 10.0)
  np.testing.assert_allclose(float(metrics['gan_adaptive_weight']), lam, rtol=1e-4)
  for got, a, b, c in zip(*(jax.tree.leaves(g) for g in (grads, g_ctm, g_dsm, g_gan))):
    np.testing.assert_allclose(got, a + w * b + lam * c, rtol=1e-4, atol=1e-7)


def tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
