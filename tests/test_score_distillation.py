"""DMD2, DMD, Diff-Instruct, f-distill, SiD, SIM and TDM against independent math.

Gaussian data N(mu_r, S_r^2 I) and a Gaussian generator N(mu_g, S_g^2 I) have closed-form denoisers
D(x_sigma; sigma) = mu + S^2 / (S^2 + sigma^2) (x_sigma - mu). Plugged in as teacher and critic:
- each generator loss's gradient with respect to the samples equals the paper's formula, written out here by hand
  (for SiD and SIM differentiated by hand through the denoisers' inputs), and is zero when generator = data;
- SIM's surrogate has the gradient of its divergence E sigma^2 d(s_real - s_fake) (closed form when the variances
  agree);
- TDM's critic target averages, given the re-noised stage output, to Tweedie's denoiser of that distribution.
With a tiny trained teacher run: the schedule leaves the student's parameters, optimizer state and EMA untouched on
the steps it skips; backward simulation makes the drawn number of student calls, without gradient; every method
takes a step from an EDM and from a flow-matching teacher; and bad configs are clear errors.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, described_teachers
from fewstep_jax.config_base import base_config, load_config
from fewstep_jax.methods import build_method
from fewstep_jax.methods.base import StepContext

METHODS = ('dmd2', 'dmd', 'diff_instruct', 'f_distill', 'sid', 'sim', 'tdm')


def gaussian_denoiser(params):
  """(x_sigma [B, D], sigma [B]) -> the exact denoiser of N(mean, var I) data."""
  def denoise(x, sigma):
    shrink = params['var'] / (params['var'] + sigma**2)
    return params['mean'] + shrink[:, None] * (x - params['mean'])
  return denoise


def analytic_method(name, **hparams):
  """The method with the closed-form Gaussian denoisers as teacher (frozen['teacher']) and critic."""
  config = base_config(method=name, network='mlp', dataset='toy')
  config.method.update(hparams)
  method = build_method(config, data_shape=(2,), num_classes=0, inputs=described_teachers(config, (2,), 0))
  method.denoise = lambda params, x, sigma, y=None: gaussian_denoiser(params)(x, sigma)
  method.real_denoiser = lambda frozen, y: gaussian_denoiser(frozen['teacher'])
  return method


DATA = {'mean': jnp.array([0.5, -1.0]), 'var': jnp.array(0.3)}
GENERATOR = {'mean': jnp.array([1.5, 0.2]), 'var': jnp.array(0.6)}


def samples(params, n=6, seed=0):
  return params['mean'] + jnp.sqrt(params['var']) * jax.random.normal(jax.random.PRNGKey(seed), (n, 2))


def context(critic):
  """The generator loss's context: the data's denoiser as the teacher, `critic` as the critic."""
  return StepContext(frozen={'teacher': DATA}, nets={'critic': critic})


def loss_gradient(method, x, key, critic):
  loss = lambda x: method.generator_loss(x, None, key, context(critic))[0]
  return jax.grad(loss)(x)


def shrink(params, sigma):
  return (params['var'] / (params['var'] + sigma**2))[:, None]


@pytest.mark.parametrize('name', ['dmd2', 'dmd_like_diff_instruct_snr'])
def test_dmd_gradients_are_the_normalised_and_weighted_score_differences(name):
  method = (analytic_method('dmd2') if name == 'dmd2'
            else analytic_method('diff_instruct', weighting='snr'))
  x, key = samples(GENERATOR), jax.random.PRNGKey(3)
  sigma, n = method.matching_point(key, x)
  x_t = np.asarray(x + sigma[:, None] * n)
  d_real = DATA['mean'] + shrink(DATA, sigma) * (x_t - DATA['mean'])
  d_fake = GENERATOR['mean'] + shrink(GENERATOR, sigma) * (x_t - GENERATOR['mean'])
  p_real, p_fake = x - d_real, x - d_fake
  if name == 'dmd2':
    direction = (p_real - p_fake) / np.mean(np.abs(p_real), axis=1, keepdims=True)
  else:
    direction = (0.25 / sigma**2)[:, None] * (p_real - p_fake)
  np.testing.assert_allclose(loss_gradient(method, x, key, GENERATOR), direction / x.size, rtol=2e-3, atol=1e-9)
  assert np.all((sigma >= 0.002) & (sigma <= 80.0))
  np.testing.assert_allclose(loss_gradient(method, samples(DATA), key, DATA), 0.0, atol=1e-9)


def gaussian_log_ratio(x_t, sigma):
  """log p_data(x_t) - log q_generator(x_t) at level sigma [B]: both Gaussians noised, N(mean, (var + sigma^2) I)."""
  def log_density(params):
    var = params['var'] + sigma**2
    return -0.5 * jnp.sum((x_t - params['mean'])**2, axis=1) / var - 0.5 * x_t.shape[1] * jnp.log(var)
  return log_density(DATA) - log_density(GENERATOR)


def analytic_f_distill(**hparams):
  """f-distill with the closed-form denoisers and the exact log density ratio as the GAN head's logit."""
  method = analytic_method('f_distill', **hparams)
  method.logits_at = lambda nets, frozen, x_t, sigma, y=None: gaussian_log_ratio(x_t, sigma)
  return method


def f_distill_context(critic, bins):
  return StepContext(frozen={'teacher': DATA}, nets={'critic': critic}, extra={'ratio_bins': bins})


def test_f_distill_with_reverse_kl_is_dmd2():
  """h = 1 for reverse KL: without the GAN term the generator loss, and so its gradient, is DMD2's exactly."""
  levels = {'min_level': 0.02, 'max_level': 0.98}
  dmd2 = analytic_method('dmd2', **levels)
  f_distill = analytic_f_distill(divergence='reverse_kl', gan_generator_weight=0.0, **levels)
  x, key = samples(GENERATOR, n=16), jax.random.PRNGKey(3)
  ctx = f_distill_context(GENERATOR, jnp.ones(10))
  want = jax.grad(lambda x: dmd2.generator_loss(x, None, key, context(GENERATOR))[0])(x)
  got = jax.grad(lambda x: f_distill.generator_loss(x, None, key, ctx)[0])(x)
  # h = 1 / (1 + 1e-6): the official epsilon of h's normalisation is the only difference.
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
  assert np.max(np.abs(want)) > 1e-4


@pytest.mark.parametrize('divergence', ['js', 'kl'])
def test_f_distill_weights_the_dmd_gradient_by_h_of_the_binned_density_ratio(divergence):
  """The gradient with respect to the samples, written out: r = exp(l) clipped, divided by the running mean of r in
  its sigma bin (updated first, empty bins unchanged), h = H_f(r) over its batch mean, times DMD2's direction; plus
  the GAN's generator side d/dx mean softplus(-l(x + sigma n))."""
  gan_weight, ema = 3e-3, 0.5
  method = analytic_f_distill(divergence=divergence, ratio_ema=ema, gan_generator_weight=gan_weight)
  x, key = samples(GENERATOR, n=24), jax.random.PRNGKey(5)
  bins = jnp.linspace(0.5, 2.0, 10)
  loss = lambda x: method.generator_loss(x, None, key, f_distill_context(GENERATOR, bins))
  got, metrics = jax.grad(loss, has_aux=True)(x)
  sigma, n = method.matching_point(key, x)
  sigma, x, n = (np.asarray(v, np.float64) for v in (sigma, x, n))
  x_t = x + sigma[:, None] * n
  logit = np.asarray(gaussian_log_ratio(jnp.asarray(x_t), jnp.asarray(sigma)), np.float64)
  r = np.clip(np.exp(np.clip(logit, -10, 10)), 0.1, 20.0)
  k = np.clip(np.floor((sigma - 0.002) / ((80.0 - 0.002) / 10)).astype(int), 0, 9)
  new_bins = np.asarray(bins, np.float64).copy()
  for b in set(k):
    new_bins[b] = ema * new_bins[b] + (1 - ema) * r[k == b].mean()
  assert len(set(k)) < 10  # Some bins are empty and must stay as they were.
  np.testing.assert_allclose(metrics['ratio_bins'], new_bins, rtol=1e-5)
  r = r / new_bins[k]
  h = r / (1 + r) if divergence == 'js' else r
  h = h / h.mean()
  d_real = DATA['mean'] + shrink(DATA, sigma) * (x_t - DATA['mean'])
  d_fake = GENERATOR['mean'] + shrink(GENERATOR, sigma) * (x_t - GENERATOR['mean'])
  p_real, p_fake = x - d_real, x - d_fake
  matching = h[:, None] * (p_real - p_fake) / np.mean(np.abs(p_real), axis=1, keepdims=True) / x.size
  dlogit = (-(x_t - DATA['mean']) / (float(DATA['var']) + sigma[:, None]**2)
            + (x_t - GENERATOR['mean']) / (float(GENERATOR['var']) + sigma[:, None]**2))
  gan = -(1 / (1 + np.exp(logit)))[:, None] * dlogit / x.shape[0]
  np.testing.assert_allclose(got, matching + gan_weight * gan, rtol=2e-4, atol=1e-9)
  assert np.max(np.abs(h - 1)) > 0.05  # The weighting is not trivially 1 here.


@pytest.mark.parametrize('name, weighted', [('f_distill', False), ('dmd2', True)])
def test_critic_loss_is_weighted_as_each_methods_reference(name, weighted):
  """The critic's denoising loss on the student's samples, written out: f-distill's is FastGen's unweighted x0 mean
  squared error (denoising_score_matching_loss for EDM networks), DMD2's tianweiy/DMD2's lambda(sigma)-weighted
  one. The same draws: the student's one-step samples x, the critic's levels sigma and noise n of critic_loss."""
  method = analytic_f_distill(gan_weight=1e-30) if name == 'f_distill' else analytic_method(name)
  key, n = jax.random.PRNGKey(7), 12
  ctx = StepContext(frozen={'teacher': DATA}, nets={'student': GENERATOR})
  loss, _ = method.critic_loss({'critic': DATA, 'head': None}, {'x': samples(DATA, n)}, key, ctx)
  input_key, sigma_key, noise_key, _, _ = jax.random.split(key, 5)
  x_in, sigma_in = method.generator_input(GENERATOR, input_key, n, None)
  x = np.asarray(gaussian_denoiser(GENERATOR)(x_in, sigma_in), np.float64)
  sigma = np.asarray(method.critic_sigma(sigma_key, n), np.float64)
  x_noisy = x + sigma[:, None] * np.asarray(jax.random.normal(noise_key, x.shape), np.float64)
  denoised = DATA['mean'] + (float(DATA['var']) / (float(DATA['var']) + sigma**2))[:, None] * (x_noisy - DATA['mean'])
  weight = (sigma**2 + 0.25) / (0.5 * sigma)**2 if weighted else np.ones_like(sigma)
  want = np.mean(weight * np.mean((denoised - x)**2, axis=1))
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  assert np.max(weight) / np.min(weight) > 10 or not weighted  # The levels span a range where lambda matters.


def test_sid_gradient_flows_through_both_denoisers_inputs():
  alpha = 1.2
  method = analytic_method('sid', alpha=alpha)
  x, key = samples(GENERATOR), jax.random.PRNGKey(4)
  sigma, n = method.matching_point(key, x)
  x_t = x + sigma[:, None] * n
  a_r, a_f = shrink(DATA, sigma), shrink(GENERATOR, sigma)
  f_real = DATA['mean'] + a_r * (x_t - DATA['mean'])
  f_fake = GENERATOR['mean'] + a_f * (x_t - GENERATOR['mean'])
  delta, e = f_real - f_fake, f_real - x
  w = np.mean(np.abs(x - f_real), axis=1, keepdims=True)
  # d/dx of sum delta (e - alpha delta) / w, with d delta/dx = (a_r - a_f) I and d e/dx = (a_r - 1) I.
  want = ((a_r - a_f) * (e - alpha * delta) + delta * ((a_r - 1) - alpha * (a_r - a_f))) / w / x.shape[0]
  np.testing.assert_allclose(loss_gradient(method, x, key, GENERATOR), want, rtol=1e-5, atol=1e-9)
  assert np.all(sigma >= 0.002) and np.all(sigma <= 24.5)
  np.testing.assert_allclose(loss_gradient(method, samples(DATA), key, DATA), 0.0, atol=1e-9)


def karras_level(u, sigma_min=0.002, sigma_max=80.0, rho=7.0):
  """The Karras map counted from sigma_min upward: u = 0 -> sigma_min, u = 1 -> sigma_max."""
  lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  return (lo + np.asarray(u, np.float64) * (hi - lo)) ** rho


@pytest.mark.parametrize('name', ['sid', 'sim'])
def test_sid_levels_are_the_karras_map_from_sigma_min_up_to_level_800(name):
  """The official generator levels (SiD's training/sid_loss.py, `1 - rnd_t`): u ~ U[0, 0.8) with u = 0 at sigma_min,
  so sigma in [0.002, 24.4] with median at u = 0.4 (0.965): mapped back to u, 20,000 draws have U[0, 0.8)'s
  quantiles."""
  method = analytic_method(name)
  sigma, _ = method.matching_point(jax.random.PRNGKey(0), jnp.zeros((20_000, 2)))
  sigma = np.asarray(sigma, np.float64)
  lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
  u = (sigma ** (1 / 7) - lo) / (hi - lo)
  levels = np.linspace(0.05, 0.95, 19)
  np.testing.assert_allclose(np.quantile(u, levels), 0.8 * levels, atol=0.01)
  assert sigma.min() >= 0.002 and sigma.max() <= karras_level(0.8) * (1 + 1e-5)
  np.testing.assert_allclose(karras_level(0.8), 24.4, rtol=2e-3)
  np.testing.assert_allclose(np.median(sigma), karras_level(0.4), rtol=0.1)  # 0.965.


def test_sid_weight_is_clipped_as_the_official():
  """w = sg(max(mean |x_g - f_real|, 1e-5)): with a teacher whose prediction is x_g itself the loss stays finite,
  sum -alpha delta^2 / 1e-5 per sample."""
  method = analytic_method('sid', alpha=1.2)
  x = samples(GENERATOR)
  method.real_denoiser = lambda frozen, y: (lambda x_t, sigma: x)
  loss, _ = method.generator_loss(x, None, jax.random.PRNGKey(1), context(DATA))
  sigma, n = method.matching_point(jax.random.PRNGKey(1), x)
  delta = x - (DATA['mean'] + shrink(DATA, sigma) * (x + sigma[:, None] * n - DATA['mean']))
  np.testing.assert_allclose(loss, np.mean(np.sum(-1.2 * delta**2, axis=1) / 1e-5), rtol=1e-5)


def test_dmd2_matching_levels_are_the_official_indices_20_to_980():
  """DMD2's randint(min_step, min(max_step + 1, N)) over the ascending 1000-level Karras grid: 20..980, both ends
  drawn; the critic's levels: every index 0..999."""
  from fewstep_jax import timesteps
  from fewstep_jax.methods.score_distillation import karras_grid_sigma
  method = analytic_method('dmd2')
  hp = method.hparams
  grid = np.asarray(timesteps.karras_sigma_at(jnp.arange(1000), 1000, hp.sigma_min, hp.sigma_max, hp.rho,
                                              ascending=True))
  sigma, _ = method.matching_point(jax.random.PRNGKey(0), jnp.zeros((50_000, 2)))
  index = np.searchsorted(grid, np.asarray(sigma) * (1 - 1e-6))
  np.testing.assert_allclose(grid[index], sigma, rtol=1e-6)
  assert set(index.tolist()) == set(range(20, 981))
  critic = karras_grid_sigma(jax.random.PRNGKey(1), 50_000, hp)
  assert set(np.searchsorted(grid, np.asarray(critic) * (1 - 1e-6)).tolist()) == set(range(1000))


def test_sim_gradient_is_the_pseudo_huber_direction_through_the_teacher_input():
  c = 0.5
  method = analytic_method('sim', huber_c=c)
  x, key = samples(GENERATOR), jax.random.PRNGKey(5)
  sigma, n = method.matching_point(key, x)
  x_t = x + sigma[:, None] * n
  a_r = shrink(DATA, sigma)
  y = (DATA['mean'] + a_r * (x_t - DATA['mean'])) - (GENERATOR['mean'] + shrink(GENERATOR, sigma) * (
      x_t - GENERATOR['mean']))
  y = y / sigma[:, None]**2  # The score difference.
  d_prime = y / np.sqrt(np.sum(y**2, axis=1, keepdims=True) + c**2)
  np.testing.assert_allclose(loss_gradient(method, x, key, GENERATOR), d_prime * (a_r - 1) / x.shape[0],
                             rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(loss_gradient(method, samples(DATA), key, DATA), 0.0, atol=1e-9)


def test_sim_surrogate_has_the_gradient_of_its_divergence():
  """Generator x = m + S z with the data's variance: D_real - D_fake = (1 - a)(mu_r - m) whatever x_t, so the
  divergence is sigma^2 d((1 - a)(mu_r - m) / sigma^2) at each level; its m-gradient (central differences) equals
  the surrogate's."""
  c = 0.3
  method = analytic_method('sim', huber_c=c)
  z, key = jax.random.normal(jax.random.PRNGKey(6), (1, 2)), jax.random.PRNGKey(7)

  def surrogate(m):
    critic = {'mean': jax.lax.stop_gradient(m), 'var': DATA['var']}
    x = m + jnp.sqrt(DATA['var']) * z
    return method.generator_loss(x, None, key, context(critic))[0]

  def divergence(m):  # In float64: at low levels y is large and the central difference needs the precision.
    sigma = np.asarray(method.matching_point(key, m + 0 * z)[0], np.float64)
    data = {name: np.asarray(value, np.float64) for name, value in DATA.items()}
    y = (1 - shrink(data, sigma)) * (data['mean'] - m) / sigma[:, None]**2  # The score difference.
    return np.sum(sigma**2 * (np.sqrt(np.sum(y**2, axis=1) + c**2) - c))

  m = np.array([1.0, -0.4])
  h = 1e-3
  numeric = [(divergence(m + h * e) - divergence(m - h * e)) / (2 * h) for e in np.eye(2)]
  np.testing.assert_allclose(jax.grad(surrogate)(jnp.asarray(m)), numeric, rtol=1e-3)


def test_tdm_generator_gradient_is_the_teacher_minus_fake_prediction_at_the_renoised_stage_output():
  method = analytic_method('tdm')  # Stages 80 > 10 > 2 > 0.5 > 0.
  x_hat0, key = samples(GENERATOR), jax.random.PRNGKey(4)
  sigma_in = jnp.full((6,), 10.0)
  x_in = x_hat0 + 10.0 * jax.random.normal(jax.random.PRNGKey(5), x_hat0.shape)
  x_s, s, b, x_b = method.stage_output(x_hat0, x_in, sigma_in, key)
  np.testing.assert_allclose(b, 2.0)
  np.testing.assert_allclose(x_b, x_hat0 + 2.0 * (x_in - x_hat0) / 10.0, rtol=1e-5)  # DDIM: same noise, level b.
  assert np.all(s >= 2.0) and np.all(s <= 80.0)
  real, fake = gaussian_denoiser(DATA)(x_s, s), gaussian_denoiser(GENERATOR)(x_s, s)
  scale = jnp.mean(jnp.abs(x_hat0 - real), 1, keepdims=True)
  loss = lambda x, critic: method.generator_loss(x, None, key, context(critic), x_in=x_in, sigma_in=sigma_in)[0]
  np.testing.assert_allclose(jax.grad(loss)(x_hat0, GENERATOR), -2 * (real - fake) / (6 * scale),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jax.grad(loss)(x_hat0, DATA), 0.0, atol=1e-7)


@pytest.mark.parametrize('b', [0.0, 0.5])
def test_tdm_critic_target_averages_to_the_denoiser_of_the_renoised_stage_marginal(b):
  """Stage outputs x_b ~ N(m, v), x_s = x_b + sqrt(s^2 - b^2) n: the least-squares fit of the target on x_s is
  Tweedie's denoiser at level s of N(m, v + s^2 - b^2), x_s - s^2 (x_s - m) / (v + s^2 - b^2)."""
  from fewstep_jax.methods.tdm import TDM
  m, v, s, n = 0.7, 0.3, 1.2, 400_000
  x_b = m + np.sqrt(v) * jax.random.normal(jax.random.PRNGKey(0), (n, 1))
  x_s = x_b + np.sqrt(s**2 - b**2) * jax.random.normal(jax.random.PRNGKey(1), (n, 1))
  target = TDM.critic_target(x_s, x_b, jnp.full((n,), s), jnp.full((n,), b))
  slope, intercept = np.polyfit(np.asarray(x_s[:, 0]), np.asarray(target[:, 0]), 1)
  shrinkage = s**2 / (v + s**2 - b**2)
  np.testing.assert_allclose([slope, intercept], [1 - shrinkage, m * shrinkage], atol=0.01)
  if b == 0.0:
    np.testing.assert_allclose(target, x_b, rtol=1e-5, atol=1e-5)


# --- With a trained (tiny) teacher run. ---

SMALL = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 4, 'train.batch_size': 16,
         'train.log_every': 1, 'train.tensorboard': False, 'eval.at_end': False}


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
  """Workdirs of two tiny toy teachers: an EDM denoiser and a flow-matching velocity (2 steps each)."""
  from fewstep_jax import trainer
  runs = {}
  for name, time_scale in (('edm', 250.0), ('flow_matching', 1000.0)):
    workdir = str(tmp_path_factory.mktemp(name))
    trainer.train(load_config(os.path.join(REPO, f'configs/toy/{name}.py'),
                              dict(SMALL, **{'train.num_steps': 2, 'network.time_scale': time_scale})), workdir)
    runs[name] = (workdir, time_scale)
  return runs


def distiller(teachers, name, teacher='edm', **overrides):
  """(method, frozen) of `configs/toy/<name>.py` on a tiny teacher."""
  from fewstep_jax import trainer
  workdir, time_scale = teachers[teacher]
  settings = dict(SMALL, **{'method.teacher': workdir, 'network.time_scale': time_scale})
  settings.update(overrides)
  config = load_config(os.path.join(REPO, f'configs/toy/{name}.py'), settings)
  run = trainer.Run(config)
  return run.method, run.frozen


def tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# The static schedule (the trainer's step_options, about 40 s) is a slow test; the traced one stays by default.
@pytest.mark.parametrize('schedule', [pytest.param('static', marks=pytest.mark.slow), 'traced'])
def test_skipped_student_steps_leave_its_state_untouched(teachers, schedule):
  """Both ways of running the schedule: the trainer's static step_options, and lax.cond on state.step."""
  method, frozen = distiller(teachers, 'dmd2', **{'method.student_every': 3, 'method.gan_weight': 1e-2,
                                                  'method.gan_generator_weight': 3e-3})
  state = method.init(jax.random.PRNGKey(0), frozen)
  batch = {'x': jax.random.normal(jax.random.PRNGKey(1), (16, 2))}
  traced = jax.jit(method.step)
  static = {phase: jax.jit(lambda s, b, k, phase=phase: method.step(s, b, k, phase=phase)) for phase in (0, 1)}
  assert method.schedule.phases == (('student', 'critic'), ('critic',))  # DMD2: the generator first.
  for k in range(4):
    step = traced if schedule == 'traced' else static[method.step_options(k)['phase']]
    new, metrics = step(state, batch, jax.random.PRNGKey(10 + k))
    student_moved = not tree_equal(new.nets['student'], state.nets['student'])
    assert student_moved == (k % 3 == 0), k
    # The student's metrics are carried over the steps that skip it: every step reports them.
    assert {'loss', 'student_grad_norm', 'critic_loss', 'critic_grad_norm'} <= set(metrics)
    for role in ('critic', 'head'):
      assert not tree_equal(new.nets[role].params, state.nets[role].params), (role, k)
    assert np.all([np.isfinite(v) for v in metrics.values()])
    state = new
  # Step 0 starts the critic at the teacher, so the first matching gradient is exactly zero.
  assert int(state.step) == 4


def test_fastgens_schedule_updates_the_critic_only_on_the_steps_without_the_student(teachers):
  """critic_on_student_steps=False (FastGen's get_optimizers, f-distill's default): step 0 moves the student alone,
  steps 1..4 the critic (and head) alone; the critic's learning-rate schedule spans its 4 updates in 5 steps."""
  method, frozen = distiller(teachers, 'f_distill')
  assert not method.hparams.critic_on_student_steps
  assert [method.schedule.phases[method.schedule.phase(k)] for k in range(6)] == (
      [('student',)] + [('critic',)] * 4 + [('student',)])
  assert method.role_num_updates('critic') == method.config.train.num_steps * 4 // 5
  state = method.init(jax.random.PRNGKey(0), frozen)
  batch = {'x': jax.random.normal(jax.random.PRNGKey(1), (16, 2))}
  step = jax.jit(method.step)
  for k in range(2):
    new, _ = step(state, batch, jax.random.PRNGKey(k))
    moved = {role: not tree_equal(new.nets[role].params, state.nets[role].params) for role in new.nets}
    assert moved == {'student': k == 0, 'critic': k == 1, 'head': k == 1}, (k, moved)
    state = new
  with pytest.raises(ValueError, match='student_every >= 2'):
    distiller(teachers, 'f_distill', **{'method.student_every': 1})


@pytest.mark.parametrize('teacher', ['edm', 'flow_matching'])
def test_gan_head_reads_the_bottleneck_of_the_critics_preconditioned_call(teachers, teacher):
  """DMD2's discriminator (main/edm/edm_guidance.py, `compute_cls_logits`) calls the preconditioned fake score with
  return_bottleneck=True: the network sees what the critic's denoising pass gives it. EDM critic: c_in(sigma) x_sigma
  and ln(sigma) / 4; flow critic: z_t = x_sigma / (1 + sigma) at t = sigma / (1 + sigma)."""
  from fewstep_jax import nn
  method, frozen = distiller(teachers, 'dmd2', teacher, **{'method.gan_weight': 1e-2,
                                                           'method.gan_generator_weight': 3e-3})
  state = method.init(jax.random.PRNGKey(0), frozen)
  critic, head = state.nets['critic'].params, state.nets['head'].params
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  sigma = jnp.array([0.01, 0.5, 3.0, 60.0])
  features = nn.make_features(method.student.module)
  if teacher == 'edm':
    want = features(critic, x / jnp.sqrt(sigma**2 + 0.25)[:, None], jnp.log(sigma) / 4)
  else:
    want = features(critic, x / (1 + sigma)[:, None], sigma / (1 + sigma))
  np.testing.assert_allclose(method.discriminator.bottleneck(critic, x, sigma), want, rtol=1e-5, atol=1e-6)
  # The logits: the head on those features of x noised at a critic level.
  key = jax.random.PRNGKey(2)
  sigma_key, noise_key = jax.random.split(key)
  level = method.critic_sigma(sigma_key, 4)
  noisy = x + level[:, None] * jax.random.normal(noise_key, x.shape)
  x_net = (noisy / jnp.sqrt(level**2 + 0.25)[:, None], jnp.log(level) / 4) if teacher == 'edm' else (
      noisy / (1 + level)[:, None], level / (1 + level))
  np.testing.assert_allclose(method.gan_logits({'critic': critic, 'head': head}, frozen, x, None, key),
                             method.discriminator.head.apply({'params': head}, features(critic, *x_net)), rtol=1e-4,
                             atol=1e-6)


def test_f_distill_head_reads_the_frozen_teachers_bottleneck(teachers):
  """gan_features='teacher' (FastGen's discriminator on the teacher's features): after a step has moved the critic,
  the logits are still the head on the teacher's bottleneck, and the critic's GAN loss trains only the head."""
  method, frozen = distiller(teachers, 'f_distill')
  state = method.init(jax.random.PRNGKey(0), frozen)
  for k in range(2):  # Step 0 updates the student, step 1 the critic and head (FastGen's rule).
    state, _ = jax.jit(method.step)(state, {'x': jax.random.normal(jax.random.PRNGKey(1), (16, 2))},
                                    jax.random.PRNGKey(2 + k))
  nets = {role: state.nets[role].params for role in ('critic', 'head')}
  x, sigma = jax.random.normal(jax.random.PRNGKey(3), (4, 2)), jnp.array([0.01, 0.5, 3.0, 60.0])
  head = lambda params: method.discriminator.head.apply({'params': nets['head']},
                                                        method.discriminator.bottleneck(params, x, sigma))
  want = head(frozen['teacher'])
  np.testing.assert_allclose(method.logits_at(nets, frozen, x, sigma), want, rtol=1e-6, atol=1e-7)
  critic_logits = head(nets['critic'])
  assert np.max(np.abs(critic_logits - want)) > 1e-6  # The critic has moved away from the teacher.
  gan_only = lambda critic: jnp.mean(jax.nn.softplus(method.logits_at({'critic': critic, 'head': nets['head']},
                                                                      frozen, x, sigma)))
  assert all(np.all(g == 0) for g in jax.tree.leaves(jax.grad(gan_only)(nets['critic'])))
  assert state.extra['ratio_bins'].shape == (10,)


def test_backward_simulation_runs_the_drawn_number_of_student_calls_without_gradient(teachers):
  method, frozen = distiller(teachers, 'dmd2', **{'method.student_sigmas': (2.0, 0.5, 0.1)})
  state = method.init(jax.random.PRNGKey(0), frozen)
  params = state.nets['student'].params
  calls, inner = [], method.denoise

  def counting_denoise(params, x, sigma, y=None):
    jax.debug.callback(lambda: calls.append(1))
    return inner(params, x, sigma, y)

  method.denoise = counting_denoise
  seen = set()
  for seed in range(4):  # These four keys draw 2, 0, 3 and 1 student steps.
    key = jax.random.PRNGKey(seed)
    calls.clear()
    x_in, sigma_in = jax.jit(method.generator_input, static_argnums=2)(params, key, 5, None)
    jax.effects_barrier()
    steps = int(jax.random.randint(jax.random.split(key, 3)[1], (), 0, 4))
    seen.add(steps)
    assert len(calls) == steps
    np.testing.assert_allclose(sigma_in, [80.0, 2.0, 0.5, 0.1][steps])
    # The same chain by hand: D, then re-noise with fresh noise (sample_gamma = 1).
    noise_key, _, move_key = jax.random.split(key, 3)
    x = 80.0 * jax.random.normal(noise_key, (5, 2))
    levels = [80.0, 2.0, 0.5, 0.1]
    for i in range(steps):
      x = inner(params, x, jnp.full((5,), levels[i])) + levels[i + 1] * jax.random.normal(
          jax.random.fold_in(move_key, i), x.shape)
    np.testing.assert_allclose(x_in, x, rtol=1e-5, atol=1e-5)
  assert seen == {0, 1, 2, 3}
  gradient = jax.grad(lambda p: jnp.sum(method.generator_input(p, jax.random.PRNGKey(3), 5, None)[0]))(params)
  assert all(np.all(g == 0) for g in jax.tree.leaves(gradient))


@pytest.mark.parametrize('name,teacher', [(name, 'edm') for name in METHODS]
                         + [pytest.param('tdm', 'flow_matching', marks=pytest.mark.slow)])
def test_every_method_starts_at_the_teacher_and_takes_a_step(teachers, name, teacher, tmp_path):
  overrides = {}
  if name == 'dmd':
    from fewstep_jax.tools import generate_pairs as reflow
    pairs = str(tmp_path / 'pairs')
    reflow.generate_pairs(teachers[teacher][0], pairs, 8, nfe=2, batch=8)
    overrides['method.regression_pairs'] = pairs
  method, frozen = distiller(teachers, name, teacher, **overrides)
  state = method.init(jax.random.PRNGKey(0), frozen)
  x, sigma = jax.random.normal(jax.random.PRNGKey(1), (4, 2)), jnp.array([0.1, 1.0, 5.0, 40.0])
  teacher_x0 = method.real_denoiser(frozen, None)(x, sigma)
  for role in ('student', 'critic'):
    np.testing.assert_allclose(method.denoise(state.nets[role].params, x, sigma), teacher_x0, rtol=1e-5, atol=1e-5)
  step = jax.jit(method.step)
  new, metrics = step(*step(state, {'x': x}, jax.random.PRNGKey(2))[:1], {'x': x}, jax.random.PRNGKey(3))
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values()), metrics
  assert not tree_equal(new.nets['critic'].params, state.nets['critic'].params)  # In two steps, whatever the rule.
  samples = method.sample_at(method.sampling_params(new), jax.random.PRNGKey(3), 6, len(method.levels))
  assert samples.shape == (6, 2) and np.all(np.isfinite(samples))


def test_bad_configs_are_clear_errors(teachers, tmp_path):
  with pytest.raises(ValueError, match="has a different network: fields \\['depth'\\] differ"):
    distiller(teachers, 'dmd2', **{'network.depth': 2})
  with pytest.raises(ValueError, match='set --config.method.teacher=WORKDIR'):
    distiller(teachers, 'sid', **{'method.teacher': ''})
  with pytest.raises(FileNotFoundError, match='python -m fewstep_jax.tools.generate_pairs'):
    distiller(teachers, 'dmd', **{'method.regression_pairs': str(tmp_path / 'none')})
  with pytest.raises(ValueError, match='positive and descending'):
    distiller(teachers, 'dmd2', **{'method.student_sigmas': (90.0,)})
  with pytest.raises(ValueError, match='unknown method.critic_sigmas'):
    distiller(teachers, 'sid', **{'method.critic_sigmas': 'uniform'})
  with pytest.raises(ValueError, match='f_distill reads its density ratio from the GAN head'):
    distiller(teachers, 'f_distill', **{'method.gan_weight': 0.0})
  with pytest.raises(ValueError, match="unknown method.divergence 'tv'"):
    distiller(teachers, 'f_distill', **{'method.divergence': 'tv'})
  with pytest.raises(ValueError, match='TDM has no GAN head'):
    distiller(teachers, 'tdm', **{'method.gan_weight': 1e-2})


@pytest.mark.parametrize('name', ['dmd2', 'cd'])
def test_a_teacher_built_from_a_parameter_pytree_distils_as_its_run_does(teachers, name):
  """The Teacher interface without a workdir: the EDM teacher's parameters as a plain numpy pytree, its network
  config and its readout distil a toy student exactly as naming the teacher's workdir does (same final student)."""
  from fewstep_jax import paths, runs
  from fewstep_jax.inputs import Teacher
  from fewstep_jax import trainer
  workdir, time_scale = teachers['edm']
  settings = dict(SMALL, **{'network.time_scale': time_scale, 'train.num_steps': 3})
  opened = runs.open_run(workdir)
  teacher = Teacher(network=opened.config.network, readout=paths.readout('edm', 0.5), data_shape=(2,),
                    num_classes=0, params=jax.device_get(opened.params[opened.config.eval.params]))
  # The toy CD config also starts its student from the teacher's run: given in memory too, as its parameters.
  starts = ['method.teacher'] + (['method.init_from'] if name == 'cd' else [])
  config = lambda teacher_dir: load_config(os.path.join(REPO, f'configs/toy/{name}.py'),
                                           dict(settings, **{field: teacher_dir for field in starts}))
  given = {'teacher': teacher, **({'student_init': teacher.params} if name == 'cd' else {})}
  _, from_params, finished = trainer.train(config(''), None, inputs=given)
  _, from_run, _ = trainer.train(config(workdir), None)
  assert finished and int(from_params.step) == 3
  moved = not tree_equal(from_params.nets['student'].params, teacher.params)
  assert moved or name == 'dmd2'  # DMD2's student updates every 5th step: once in 3 steps, from the teacher.
  for got, want in zip(jax.tree.leaves(from_params.nets), jax.tree.leaves(from_run.nets)):
    np.testing.assert_array_equal(got, want)
  # A teacher on another network is refused like a run on another network.
  other = Teacher(network=opened.config.network.copy_and_resolve_references(), readout=teacher.readout,
                  data_shape=(3,), num_classes=0, params=teacher.params)
  with pytest.raises(ValueError, match='was trained on data of shape'):
    trainer.train(config(''), None, inputs={'teacher': other})
  if name == 'dmd2':  # The student starts from the teacher's parameters: their network config must be given.
    with pytest.raises(ValueError, match='has no network config'):
      trainer.train(config(''), None, inputs={'teacher': Teacher(network=None, readout=teacher.readout,
                                                                 data_shape=(2,), num_classes=0, params={})})
