"""Discrete-time consistency models on the EDM noise level sigma: CT and CD (Song et al. 2023), iCT
(Song & Dhariwal 2023), multistep CT / CD (Heek et al. 2024), TCD (Zheng et al. 2024), ECT (Geng et al. 2024),
SCT (Wang et al. 2024) and TCM (Lee et al. 2024). sCT / sCD (continuous time, TrigFlow) are in scm.py.

CT / CD / iCT. Consistency function with the boundary-shifted EDM scalings (`paths.edm_coefficients`),
  f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in x, ln(sigma) / 4),   f(x, sigma_min) = x exactly.
Each step picks n in {0..N-2} on the ascending Karras grid of N = N(k) points (sigma_0 = sigma_min), z ~ N(0, I):
  x_{n+1} = x + sigma_{n+1} z,   x̂_n = x + sigma_n z (CT)  or  one Heun step of the teacher ODE from x_{n+1} (CD),
  loss = lambda(sigma_n, sigma_{n+1}) d(f_theta(x_{n+1}, sigma_{n+1}), sg f_theta-(x̂_n, sigma_n)).
The knobs that tell the three apart are registries below: the curriculum N(k) (`CURRICULA`), the target network
theta- and its EMA rate (`TARGET_EMA_RATES`), the index distribution (`INDEX_DISTRIBUTIONS`), the weighting
lambda (`WEIGHTINGS`) and the distance d (`distances.py`). The EMA target lives in state.extra['target'].

ECT. Continuous-time consistency tuning of a pretrained EDM (or flow) model: sigma t ~ exp(N(P_mean, P_std^2)),
r = max(0, t (1 - q^-(s+1) (1 + k sigmoid(-b t)))) at stage s = step // stage_steps, one eps for both points,
  loss = lambda(t, r) d(f_theta(x + t eps, t), sg f_theta(x + r eps, r)),   target x where r = 0,
with lambda = 1 / (t - r) (the CIFAR-10 setup) or EDM's weight (the paper's EDM2 / ImageNet-64 code), `ECT_WEIGHTINGS`.
Its consistency function is the init run's own parameterisation (EDM denoiser, or a flow velocity converted
exactly to x0), so tuning starts from the pretrained model's predictions.

Multistep CM and TCD change where the two outputs are compared (`ENDPOINTS`): at the start of the pair's segment
(multistep: K segments of the grid, each its own consistency model, via DDIM and its inverse) or at a common
random s <= sigma_n (TCD); both reduce to CM at sigma_end = 0. SCT replaces ECT's target point x + r eps by the
variance-reduced one of the batch's empirical denoiser (`ECT_TARGETS`); TCM tunes an ECT run on sigma >= t' only,
its frozen stage-1 model serving below t'.

Sampling (all): f at sigma_max, then re-noise to `sample_sigmas` (CIFAR-10's 0.821 for 2 steps; multistep CM: its
segment boundaries, with DDIM moves) and apply f again, with TCD's `sample_gamma` (`sampling.consistency_sample`
on the EDM path).

Choices where the papers leave room, all config: the same dropout key for the online and target passes (ECT's
rule, used for every method here, so that the loss vanishes at consistency); the target EMA divisor of CM
(`target_ema='cm'` is the paper's exp(s0 ln mu0 / N(k)); 'cm_code' divides by N(k) - 1 as the official code);
multistep sampling re-noises with x0 + sigma z (not sqrt(sigma^2 - sigma_min^2)).
Official code: CT / CD, openai/consistency_models_cifar10 jcm/losses.py `get_consistency_loss_fn` and
`get_ema_scales_fn` (an independent port agrees with CT's and CD's losses to float32 rounding); ECT, locuslab/ect
training/loss.py `ECMLoss.__call__` (the imgnet branch for ImageNet-64's settings).
"""
import math

import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import distances, paths, timesteps
from fewstep_jax.inputs import ArraysInput, InitInput, TeacherInput
from fewstep_jax.methods.base import (TEACHER_DEFAULTS, ConsistencySampler, SingleNetworkMethod, StepContext,
                                     check_choice, drop_labels, require_teacher, teacher_model)
from fewstep_jax.methods.registry import register, register_preset

# N(k): (step, hparams, total_steps) -> number of grid points (traced int32), and the largest it can reach.
CURRICULA = {
    'fixed': (lambda step, hp, total: jnp.asarray(hp.num_scales, jnp.int32), lambda hp: hp.num_scales),
    'cm': (lambda step, hp, total: timesteps.cm_num_scales(step, total, hp.s0, hp.s1), lambda hp: hp.s1 + 1),
    'ict': (lambda step, hp, total: timesteps.ict_num_scales(step, total, hp.s0, hp.s1), lambda hp: hp.s1 + 1),
    # Multistep CM (Heek et al. 2024, App. A.1): N - 1 = exp(ln s0 + clip(k / anneal_steps, 0, 1) ln(s1 / s0)).
    'log_linear': (lambda step, hp, total: timesteps.log_linear_num_scales(step, hp.anneal_steps, hp.s0, hp.s1),
                   lambda hp: hp.s1 + 1),
}

# theta-: (num_scales, hparams) -> EMA rate of the target network, or None for theta- = sg(theta) (iCT).
TARGET_EMA_RATES = {
    'none': None,
    'fixed': lambda num_scales, hp: jnp.asarray(hp.mu0, jnp.float32),
    'cm': lambda num_scales, hp: timesteps.cm_target_ema_rate(num_scales, hp.s0, hp.mu0, divisor_offset=0),
    'cm_code': lambda num_scales, hp: timesteps.cm_target_ema_rate(num_scales, hp.s0, hp.mu0, divisor_offset=1),
}

# lambda(sigma_n, sigma_{n+1}) [B].
WEIGHTINGS = {
    'uniform': lambda sigma_n, sigma_next: jnp.ones_like(sigma_n),
    'inverse_gap': lambda sigma_n, sigma_next: 1.0 / (sigma_next - sigma_n),  # iCT.
    'snr_plus_one': lambda sigma_n, sigma_next: 1.0 + 1.0 / sigma_next**2,   # Multistep CM's v-loss weight.
}


def _ddim(x0, x, sigma, sigma_to):
  """The DDIM move on the EDM path from x at sigma [B] with data prediction x0 to sigma_to [B]."""
  return x0 + paths.expand_to(sigma_to / sigma, x) * (x - x0)


def _segment_target(online, reference, x_next, x_hat, sigma_next, sigma_n, sigma_end):
  """Multistep CM (Heek et al. 2024, Algorithm 1): the reference's point at the segment start sigma_end,
  z_ref = DDIM_{sigma_n -> end}(x̂_ref, x̂_n), turned back into the data prediction that the DDIM move from x_{n+1}
  would need to land there, x_target = invDDIM_{sigma_{n+1} -> end}(z_ref, x_{n+1}); compared in data space."""
  z_ref = _ddim(reference, x_hat, sigma_n, sigma_end)
  rho = paths.expand_to(sigma_end / sigma_next, x_next)
  return online, (z_ref - rho * x_next) / (1.0 - rho)


# Where the consistency function's outputs are compared: (online f(x_{n+1}), reference f(x̂_n), x_{n+1}, x̂_n,
# sigma_{n+1}, sigma_n, sigma_end [B]) -> (a, b) for d(a, b). sigma_end = 0 gives CM's comparison of the x0's in all.
ENDPOINTS = {
    'data': lambda online, reference, *rest: (online, reference),   # CM: both map to the data (sigma_end = 0).
    'segment': _segment_target,                                     # Multistep CM: the segment's start.
    # TCD: both moved by DDIM to the same random s = sigma_end <= sigma_n and compared there.
    'tcd': lambda online, reference, x_next, x_hat, sigma_next, sigma_n, s: (
        _ddim(online, x_next, sigma_next, s), _ddim(reference, x_hat, sigma_n, s)),
}


def _uniform_index(key, batch, num_scales, grid, hp):
  del grid, hp
  u = jax.random.uniform(key, (batch,))
  return jnp.minimum(jnp.floor(u * (num_scales - 1)), num_scales - 2).astype(jnp.int32)


def _lognormal_index(key, batch, num_scales, grid, hp):
  probs = timesteps.lognormal_index_probs(grid, hp.p_mean, hp.p_std, num_sigmas=num_scales)
  return timesteps.sample_discrete_index(key, batch, probs)


# n in {0..N-2}: (key, batch, N, ascending grid buffer [max N], hparams) -> [B] int32.
INDEX_DISTRIBUTIONS = {'uniform': _uniform_index, 'lognormal': _lognormal_index}


def consistency_defaults() -> dict:
  """The hyperparameters every consistency model here shares (CT, iCT, CD, ECT)."""
  return dict(
      sigma_data=0.5,
      sigma_min=0.002,
      sigma_max=80.0,
      rho=7.0,
      distance='pseudo_huber',  # 'l2' | 'pseudo_huber' | 'lpips' (distances.py).
      huber_c=-1.0,             # Pseudo-Huber c; < 0: iCT's 0.00054 sqrt(D).
      lpips_weights='',         # Local .npz for distance='lpips' (nn/lpips.py); nothing is downloaded.
      lpips_resolution=224,     # Images are resized to this before VGG.
      label_dropout=0.0,
      guidance=1.0,             # Sampling CFG scale (two network calls a step when != 1).
      sample_sigmas=(0.821,),   # Intermediate noise levels of multistep sampling after sigma_max.
      sample_gamma=1.0,         # TCD stochasticity: 1 = multistep consistency sampling, 0 = deterministic.
      init_from='',             # Workdir of a trained run (same network and parameterisation) to start from.
  )


def distance_inputs(config) -> dict:
  """The distance's weights as a declared input (LPIPS), or none."""
  hp = config.method
  load = distances.weights_loader(hp.distance, lpips_weights=hp.lpips_weights)
  return {'distance': ArraysInput(lambda data_shape, num_classes: load(), 'method.lpips_weights')} if load else {}


def segment_starts(hp) -> tuple:
  """Multistep CM's K - 1 inner segment boundaries, descending: the Karras map at fractions (K - 1) / K, ..., 1 / K
  (grid indices (K - 1) M, ..., M of every (K M + 1)-point grid), where the K-step sampler moves."""
  return tuple(float(timesteps.karras_map(i / hp.segments, hp.sigma_min, hp.sigma_max, hp.rho))
               for i in range(hp.segments - 1, 0, -1))


def setup_consistency(method):
  """The pieces every consistency model here builds in __init__: the EDM path, the distance and the sampler (its
  consistency function is method.consistency_fn; a multistep CM samples at its segment boundaries)."""
  hp = method.hparams
  method.path = paths.EDMPath()
  method.distance = distances.make_distance(hp.distance, method.data_shape, huber_c=hp.huber_c,
                                            lpips_weights=hp.lpips_weights, lpips_resolution=hp.lpips_resolution)
  intermediate = segment_starts(hp) if hp.get('endpoint') == 'segment' else hp.sample_sigmas
  method.sampler = ConsistencySampler(method.consistency_fn, method.path, start_time=hp.sigma_max,
                                      start_scale=hp.sigma_max, intermediate_times=intermediate,
                                      data_shape=method.data_shape, num_classes=method.num_classes,
                                      guidance=hp.guidance, gamma=hp.sample_gamma)


def teacher_heun_step(denoise, x, sigma, sigma_to):
  """One Heun step of dx/dsigma = (x - D(x, sigma)) / sigma from sigma to sigma_to (both [B], > 0), for a
  denoiser D(x, sigma): CD's teacher step, and each of CTM's."""
  s, s_to = paths.expand_to(sigma, x), paths.expand_to(sigma_to, x)
  slope = (x - denoise(x, sigma)) / s
  euler = x + (s_to - s) * slope
  slope_end = (euler - denoise(euler, sigma_to)) / s_to
  return x + (s_to - s) * 0.5 * (slope + slope_end)


@register('ct')
class ConsistencyTraining(SingleNetworkMethod):
  """CT (Song et al. 2023): x̂_n = x + sigma_n z, EMA target with the adaptive rate mu(k), N(k) from 2 to 151.
  The base of the discrete consistency models: the consistency function on EDM sigma, the grid, the curriculum,
  the target network and the sampler; iCT is a preset of it and CD replaces x̂_n."""
  starts_from_run = True
  target_network = 'own_ema'  # theta-, at the rate TARGET_EMA_RATES[method.target_ema] (none for iCT).

  @classmethod
  def readout_of(cls, config):
    return paths.readout('edm', config.method.sigma_data)

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        consistency_defaults(),
        curriculum='cm',          # N(k): 'cm' (CM's square-root growth) | 'ict' (doubling) | 'fixed'.
        num_scales=18,            # N for curriculum='fixed'.
        s0=2,                     # Curriculum start and end (N grows from s0 to s1 + 1).
        s1=150,
        target_ema='cm',          # theta-: 'cm' (mu(k), paper) | 'cm_code' | 'fixed' (mu0) | 'none' (sg theta).
        mu0=0.9,
        index_distribution='uniform',  # n: 'uniform' | 'lognormal' (iCT's erf distribution).
        p_mean=-1.1,              # iCT's log-normal index distribution.
        p_std=2.0,
        weighting='uniform',      # lambda: 'uniform' | 'inverse_gap' (iCT) | 'snr_plus_one' (multistep CM).
        distance='l2',
        endpoint='data',          # Where f is compared: 'data' (CM) | 'segment' (multistep CM) | 'tcd' (ENDPOINTS).
        segments=1,               # K of endpoint='segment': the grid in K equal runs of its Karras points.
        anneal_steps=100_000,     # curriculum='log_linear': steps over which N - 1 grows from s0 to s1.
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    hp = self.hparams
    for field, registry in (('curriculum', CURRICULA), ('target_ema', TARGET_EMA_RATES),
                            ('index_distribution', INDEX_DISTRIBUTIONS), ('weighting', WEIGHTINGS),
                            ('endpoint', ENDPOINTS)):
      check_choice(hp, field, registry)
    if hp.segments < 1 or (hp.segments > 1 and hp.endpoint != 'segment'):
      raise ValueError(f'method.segments={hp.segments}: multistep consistency needs segments >= 1 with '
                       "method.endpoint='segment' (it is 1 otherwise)")
    self._num_scales, max_scales = CURRICULA[hp.curriculum]
    self.max_scales = int(max_scales(hp))
    if self.max_scales < 2:
      raise ValueError(f'the grid needs at least 2 points; the curriculum reaches only {self.max_scales}')
    self.target_rate = TARGET_EMA_RATES[hp.target_ema]
    self.denoise = self.build_consistency_fn()
    setup_consistency(self)

  def build_consistency_fn(self):
    """f(params, x_sigma, sigma, r, y, key) -> x0 [B, ...], with f(x, sigma_min) = x exactly."""
    return paths.edm_denoiser(self.apply, sigma_data=self.hparams.sigma_data, sigma_min=self.hparams.sigma_min)

  def consistency_fn(self, params, x, sigma, y=None, key=None):
    """The data prediction f(x_sigma, sigma) [B, ...]."""
    return self.denoise(params, x, sigma, y=y, key=key)

  def sampling_plan(self, nfe, conditional, **options):
    return self.sampler.sampling_plan(nfe, conditional, **options)

  def trained_nfes(self, conditional):
    """A multistep model (segments > 1): one call a segment (two under CFG); else any NFE."""
    if self.hparams.segments == 1:
      return None
    return (self.hparams.segments * (2 if conditional and self.hparams.guidance != 1.0 else 1),)

  def sample(self, params, key, n, nfe, labels=None, **options):
    return self.sampler.sample(params, key, n, nfe, labels=labels, **options)

  def own_target_rate(self, step):
    if self.target_rate is None:
      return None
    return self.target_rate(self.num_scales(step), self.hparams)

  def num_scales(self, step):
    """N(k): the number of grid points at training step `step` (traced int32)."""
    return self._num_scales(step, self.hparams, self.config.train.num_steps)

  def previous_point(self, frozen, x, z, x_next, sigma_next, sigma_n, y):
    """x̂_n [B, ...]: CT's unbiased estimate x + sigma_n z (the same z as x_{n+1})."""
    del frozen, x_next, sigma_next, y
    return x + paths.expand_to(sigma_n, x) * z

  def grid_pair(self, key, batch, step):
    """(sigma_n, sigma_{n+1}, sigma_end) [B] each, n drawn from the index distribution on the N(step)-point
    ascending grid; sigma_end is where method.endpoint compares: 0 (CM); the start of n's segment (multistep CM:
    the grid has K M + 1 points, M = max(1, round((N - 1) / K)), so segment i spans indices i M .. (i + 1) M, equal
    runs of the Karras map, and the first one starts at 0); a uniform grid index j in 0..n, 0 for j = 0 (TCD)."""
    hp = self.hparams
    num = self.num_scales(step)
    if hp.endpoint == 'segment':
      per_segment = jnp.maximum(jnp.round((num - 1) / hp.segments).astype(jnp.int32), 1)
      num = hp.segments * per_segment + 1
    index_key, end_key = jax.random.split(key)
    max_scales = self.max_scales if hp.endpoint != 'segment' else self.max_scales + hp.segments
    grid = timesteps.karras_sigma_at(jnp.arange(max_scales), num, hp.sigma_min, hp.sigma_max, hp.rho,
                                     ascending=True)
    n = INDEX_DISTRIBUTIONS[hp.index_distribution](index_key, batch, num, grid, hp)
    at = lambda i: timesteps.karras_sigma_at(i, num, hp.sigma_min, hp.sigma_max, hp.rho, ascending=True)
    if hp.endpoint == 'segment':
      end = (n // per_segment) * per_segment
    elif hp.endpoint == 'tcd':
      end = jax.random.randint(end_key, (batch,), 0, n + 1)
    else:
      end = jnp.zeros_like(n)
    return at(n), at(n + 1), jnp.where(end > 0, at(end), 0.0)

  def pair_loss(self, params, target, frozen, x, y, z, sigma_n, sigma_next, key=None, sigma_end=None):
    """lambda d(f_theta(x_{n+1}, sigma_{n+1}), sg f_theta-(x̂_n, sigma_n)) [B] for given noise z [B, ...] and
    levels sigma_n < sigma_next [B], both outputs taken to sigma_end [B] (default 0: the data) as method.endpoint
    says; target None means theta- = sg(theta). Both passes share the dropout key."""
    x_next = x + paths.expand_to(sigma_next, x) * z
    x_hat = jax.lax.stop_gradient(self.previous_point(frozen, x, z, x_next, sigma_next, sigma_n, y))
    online = self.consistency_fn(params, x_next, sigma_next, y=y, key=key)
    target_params = params if target is None else target
    reference = jax.lax.stop_gradient(self.consistency_fn(target_params, x_hat, sigma_n, y=y, key=key))
    sigma_end = jnp.zeros_like(sigma_n) if sigma_end is None else sigma_end
    a, b = ENDPOINTS[self.hparams.endpoint](online, reference, x_next, x_hat, sigma_next, sigma_n, sigma_end)
    weight = WEIGHTINGS[self.hparams.weighting](sigma_n, sigma_next)
    return weight * self.distance.fn(a, jax.lax.stop_gradient(b), (frozen or {}).get('distance'))

  def loss(self, params, batch, key, ctx=StepContext()):
    step, target, frozen = ctx.step, ctx.target, ctx.frozen
    x, y = batch['x'], batch.get('y')
    z_key, index_key, label_key, net_key = jax.random.split(key, 4)
    z = jax.random.normal(z_key, x.shape, x.dtype)
    y = drop_labels(label_key, y, self.hparams.label_dropout, self.num_classes)
    sigma_n, sigma_next, sigma_end = self.grid_pair(index_key, x.shape[0], step)
    loss = jnp.mean(self.pair_loss(params, target, frozen, x, y, z, sigma_n, sigma_next, net_key, sigma_end))
    return loss, {'loss': loss, 'num_scales': self.num_scales(step), 'sigma_next': jnp.mean(sigma_next)}


# iCT (Song & Dhariwal 2023): CT without an EMA target (theta- = sg theta), pseudo-Huber with c = 0.00054 sqrt(D),
# weight 1 / (sigma_{n+1} - sigma_n), the erf log-normal index distribution and the doubling curriculum 11 -> 1281.
register_preset('ict', ConsistencyTraining, curriculum='ict', s0=10, s1=1280, target_ema='none',
                index_distribution='lognormal', weighting='inverse_gap', distance='pseudo_huber', huber_c=-1.0)


@register('cd')
class ConsistencyDistillation(ConsistencyTraining):
  """CD (Song et al. 2023): x̂_n is one Heun step of the teacher's probability-flow ODE dx/dsigma = (x - D) / sigma
  from sigma_{n+1} to sigma_n, on a fixed 18-point grid with a fixed-rate EMA target. Any teacher with a velocity
  field or denoiser (flow matching, EDM, ...) serves, converted exactly to an EDM denoiser; optionally guided."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(curriculum='fixed', num_scales=18, target_ema='fixed', mu0=0.95, distance='l2',
                       **TEACHER_DEFAULTS))
    return config

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), 'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    self.teacher_x0 = teacher_model(require_teacher(inputs, self.name), self.path, 'x0',
                                    self.hparams.teacher_guidance, self.num_classes)

  def previous_point(self, frozen, x, z, x_next, sigma_next, sigma_n, y):
    """x̂_n [B, ...]: one Heun step of the teacher's ODE from sigma_{n+1} to sigma_n."""
    del x, z
    return teacher_heun_step(self.teacher_x0(frozen['teacher'], y), x_next, sigma_next, sigma_n)


# Multistep consistency models (Heek et al. 2024, Algorithms 1 and 2): K segments, each consistency model mapping to
# its segment's start, compared in data space through DDIM and its inverse (ENDPOINTS['segment']), the v-loss
# weight 1 + 1 / sigma^2, the un-squared L2 norm (pseudo-Huber, c = 1e-4), theta- = sg(theta), the teacher-step
# curriculum N - 1 = 64 -> 1280 over 100k steps; K deterministic DDIM steps between the boundaries.
# Followed: the paper (no official code is public). Deviations: EDM sigma instead of the paper's VP cosine time,
# with the segments equal runs of the Karras map; CD's teacher step is CD's Heun step (the paper's aDDIM adds a
# variance correction to a DDIM step from the teacher's x0).
MULTISTEP = dict(endpoint='segment', segments=4, weighting='snr_plus_one', distance='pseudo_huber', huber_c=1e-4,
                 target_ema='none', curriculum='log_linear', s0=64, s1=1280, anneal_steps=100_000,
                 sample_gamma=0.0)
register_preset('multistep_ct', ConsistencyTraining, **MULTISTEP)
register_preset('multistep_cd', ConsistencyDistillation, **MULTISTEP)

# TCD (trajectory consistency distillation, Zheng et al. 2024): CD whose two outputs are both moved by DDIM to one
# random s on the grid at or below sigma_n (s = 0 with probability 1 / (n + 1)) and compared there; sampled with
# TCD's gamma (0.3, its TCDScheduler's default eta). Followed: jabir-zheng/TCD scheduling_tcd.py `TCDScheduler.step`
# (the sampler); no official training code is public: the grid of s, the squared L2 and the EMA target 0.95 follow
# the paper's algorithm and the community trainer built on it. Deviation: CD's 18-point Karras grid and Heun teacher
# step on EDM sigma (TCD's: 50 DDIM steps of a 1000-step DDPM schedule).
register_preset('tcd', ConsistencyDistillation, endpoint='tcd', sample_gamma=0.3)


# ECT's consistency function, by the init run's parameterisation: raw network -> f(params, x_sigma, sigma, r, y,
# key) on EDM sigma. Both give f(x, 0) = x in the limit; the loss never evaluates sigma = 0.
ECT_PARAMETERIZATIONS = {
    'edm': lambda apply, hp: paths.edm_denoiser(apply, sigma_data=hp.sigma_data),
    'flow': lambda apply, hp: paths.reparameterize(paths.flow_velocity(apply), paths.LinearFlowPath(), 'velocity',
                                                   paths.EDMPath(), 'x0'),
}


# ECT's lambda(t, r) [B]: 1 / (t - r) (the CIFAR-10 setup) or EDM's (t^2 + sigma_d^2) / (t sigma_d)^2
# (the paper's ImageNet-64 / EDM2 code; = 1 / c_out(t)^2, TCM's ImageNet-64 'cout_sq').
ECT_WEIGHTINGS = {
    'inverse_gap': lambda t, r, sigma_data: 1.0 / (t - r),
    'edm': lambda t, r, sigma_data: (t**2 + sigma_data**2) / (t * sigma_data) ** 2,
}


def batch_denoiser(x_t, t, x, y=None, null_label=None):
  """x̂0 [B, ...]: the posterior mean E[x | x_t] of the batch's empirical distribution, sum_j w_ij x_j with
  w_ij = softmax_j(-||x_t,i - x_j||^2 / (2 t_i^2)) over the batch (sample i included), restricted to sample i's
  class when labels y are given (all samples for the null label). The score identity's estimate of the denoiser
  (Xu et al. 2023, stable target field), which SCT's variance-reduced target uses.

  With x_t,i = x_i + t_i eps_i, ||x_t,i - x_j||^2 = ||x_i - x_j||^2 + 2 t_i eps_i (x_i - x_j) + const_i, so the
  logits are formed from data differences (exactly 0 for j = i) and never from ||x_t||^2, which would cancel
  catastrophically at small t."""
  flat_x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  eps = (x_t.reshape(x_t.shape[0], -1).astype(jnp.float32) - flat_x) / t[:, None]
  sq = jnp.sum(flat_x**2, axis=1)
  gram = flat_x @ flat_x.T
  pair = jnp.maximum(sq[:, None] - 2 * gram + sq[None, :], 0.0) * (1.0 - jnp.eye(x.shape[0]))
  cross = jnp.sum(eps * flat_x, axis=1)[:, None] - eps @ flat_x.T   # eps_i (x_i - x_j).
  logits = -(pair + 2 * t[:, None] * cross) / (2 * t[:, None] ** 2)
  if y is not None:
    same = (y[:, None] == y[None, :]) | (y[:, None] == null_label)
    logits = jnp.where(same, logits, -jnp.inf)
  weights = jax.nn.softmax(logits, axis=1)
  return (weights @ flat_x).reshape(x.shape).astype(x.dtype)


# ECT's target point at r: (x, eps, t, r [B], y, null label) -> (x_r, the target where r = 0) [B, ...] each.
ECT_TARGETS = {
    # The conditional estimate of the ODE point: x + r eps (same eps as x_t), the data at r = 0 (ECT).
    'conditional': lambda x, eps, t, r, y, null: (x + paths.expand_to(r, x) * eps, x),
    # SCT's variance-reduced point: one Euler step of the ODE with the batch denoiser x̂0 from x_t to r,
    # x_r = (r / t) x_t + (1 - r / t) x̂0 (= x + r eps when x̂0 = x), and x̂0 itself at r = 0.
    'stable': lambda x, eps, t, r, y, null: _stable_point(x, eps, t, r, y, null),
}


def _stable_point(x, eps, t, r, y, null_label):
  x_t = x + paths.expand_to(t, x) * eps
  denoised = batch_denoiser(x_t, t, x, y, null_label)
  ratio = paths.expand_to(r / t, x)
  return ratio * x_t + (1 - ratio) * denoised, denoised


@register('ect')
class ECT(SingleNetworkMethod):
  """ECT (Geng et al. 2024): consistency tuning from a pretrained EDM or flow model with the continuous t -> r
  mapping, shared noise and dropout key, and d / (t - r)."""
  starts_from_run = True

  @classmethod
  def readout_of(cls, config):
    return paths.readout(config.method.parameterization, config.method.sigma_data)

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        consistency_defaults(),
        parameterization='edm',   # The init run's: 'edm' (a denoiser) | 'flow' (a velocity field).
        p_mean=-1.1,              # t = exp(n), n ~ N(p_mean, p_std^2).
        p_std=2.0,
        q=2.0,                    # The t -> r mapping and its stages.
        k=8.0,
        b=1.0,
        stage_steps=25_000,       # Steps per stage s (the gap t - r shrinks by q each stage).
        weighting='inverse_gap',  # lambda(t, r): 'inverse_gap' (1 / (t - r)) | 'edm' (ECT_WEIGHTINGS).
        huber_c=0.0,              # c = 0: the un-squared L2 norm.
        target='conditional',     # The point at r: 'conditional' (x + r eps) | 'stable' (SCT; ECT_TARGETS).
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    check_choice(config.method, 'parameterization', ECT_PARAMETERIZATIONS)
    check_choice(config.method, 'weighting', ECT_WEIGHTINGS)
    check_choice(config.method, 'target', ECT_TARGETS)
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    self.denoise = self.build_consistency_fn()
    setup_consistency(self)

  def build_consistency_fn(self):
    return ECT_PARAMETERIZATIONS[self.hparams.parameterization](self.apply, self.hparams)

  def consistency_fn(self, params, x, sigma, y=None, key=None):
    """The data prediction f(x_sigma, sigma) [B, ...]."""
    return self.denoise(params, x, sigma, y=y, key=key)

  def sampling_plan(self, nfe, conditional, **options):
    return self.sampler.sampling_plan(nfe, conditional, **options)

  def sample(self, params, key, n, nfe, labels=None, **options):
    return self.sampler.sample(params, key, n, nfe, labels=labels, **options)

  def stage(self, step):
    """s = step // stage_steps, from 0 (traced int32)."""
    return jnp.asarray(step, jnp.int32) // max(int(self.hparams.stage_steps), 1)

  def t_and_r(self, key, batch, step):
    """(t, r) [B] each: t log-normal, r from ECT's mapping at stage s."""
    hp = self.hparams
    t = timesteps.sample_log_normal(key, batch, hp.p_mean, hp.p_std)
    return t, timesteps.ect_r_from_t(t, self.stage(step), hp.q, hp.k, hp.b)

  def target_fn(self, params, frozen, x_r, r, y, key):
    """The target's consistency function at (x_r, r): the live network (stopped by the caller)."""
    del frozen
    return self.consistency_fn(params, x_r, r, y=y, key=key)

  def pair_loss(self, params, frozen, x, y, eps, t, r, key=None):
    """lambda(t, r) d(f_theta(x + t eps, t), sg f_theta(x_r, r)) [B] for given eps [B, ...] and 0 <= r < t [B],
    x_r from method.target (x + r eps; the target is x where r = 0). Both passes share eps and the dropout key."""
    hp = self.hparams
    online = self.consistency_fn(params, x + paths.expand_to(t, x) * eps, t, y=y, key=key)
    x_r, at_zero = ECT_TARGETS[hp.target](x, eps, t, jnp.maximum(r, 0.0), y, self.num_classes)
    # At r = 0 the target is `at_zero` (x itself for ECT); the network is evaluated at a positive stand-in level
    # there and the result discarded, so that c_noise = ln(r) / 4 never sees 0.
    r_safe = jnp.where(r > 0, r, hp.sigma_min)
    at_r = self.target_fn(params, frozen, x_r, r_safe, y, key)
    reference = jax.lax.stop_gradient(jnp.where(paths.expand_to(r > 0, x), at_r, at_zero))
    weight = ECT_WEIGHTINGS[hp.weighting](t, r, hp.sigma_data)
    return weight * self.distance.fn(online, reference, (frozen or {}).get('distance'))

  def loss(self, params, batch, key, ctx=StepContext()):
    step, frozen = ctx.step, ctx.frozen
    x, y = batch['x'], batch.get('y')
    eps_key, t_key, label_key, net_key = jax.random.split(key, 4)
    eps = jax.random.normal(eps_key, x.shape, x.dtype)
    y = drop_labels(label_key, y, self.hparams.label_dropout, self.num_classes)
    t, r = self.t_and_r(t_key, x.shape[0], step)
    loss = jnp.mean(self.pair_loss(params, frozen, x, y, eps, t, r, net_key))
    return loss, {'loss': loss, 'r_zero_fraction': jnp.mean(r == 0), 'stage': self.stage(step)}


# SCT (stable consistency tuning, Wang et al. 2024): ECT with the variance-reduced target point, x_r from the batch
# denoiser's Euler step (ECT_TARGETS['stable']); everything else ECT's.
register_preset('stable_ct', ECT, target='stable')


@register('tcm')
class TruncatedConsistency(ECT):
  """TCM (truncated consistency models, Lee et al. 2024), stage 2: ECT tuning on the truncated range
  sigma >= t' = transition_sigma only, starting from a stage-1 ECT run (method.stage1) that stays frozen below t'.

  The model is piecewise: f(x, sigma) = f_theta(x, sigma) for sigma >= t', f_stage1(x, sigma) below, so a target
  point r < t' reads the frozen stage-1 model. Each step draws ln t from a Student-t(df, mean, std) truncated to
  [ln t', ln sigma_max] and sets a fixed int(boundary_fraction B) of the batch to t = t': the boundary
  samples, whose targets come from stage 1 just below t'. r = t - t (1 - ratio) (1 + k sigmoid(-b t)) with the ECT
  ratio held at stage 1's final `ratio`. Loss = mean over the rest + boundary_weight x mean over the boundary
  samples, each lambda(t, r) d(f_theta(x + t eps, t), sg f(x_r, r)) as ECT's. Stage 1 is an `ect` run.

  Followed: NVlabs/TCM training/loss.py `ECMLoss.__call__` (the boundary count, the two means, the r mapping of
  `delta_sigmoid`), training/networks_tcm.py `TCMPrecond` (the piecewise model, both parts plain EDM
  preconditioning), torch_utils/misc.py `truncated_t` (the Student-t time law), ct_train.py and the README's
  commands (defaults and the paper-row configs).
  Counters: stage 2 continues stage 1's (ct_training_loop.py: cur_nimg = resume_tick x kimg_per_tick x 1000, i.e.
  the stage-1 iteration R = resume_tick x 100 it resumes from), so its learning-rate schedule reads iteration R + k
  and its power-function EMA rate is beta(R + k + 1): method.stage1_steps = R (`update_count_offset`); ImageNet-64's
  inverse-sqrt schedule then starts stage 2 at lr 5e-4 / sqrt(R / 8000), 5e-5 for R = 800k rather than 5e-4. The
  official stage 2 stops when that combined counter reaches --duration; here it runs train.num_steps of its own.
  Deviations: the stage-1 model is evaluated deterministically (the official keeps its dropout on, a deepcopy in
  train mode); the ECT ratio is fixed at the stage-1 limit rather than carried through the resumed tick counter
  (the same value once stage 1 has reached its limit, as its runs do); 2-step sampling re-noises to t' = 1.0 by
  default (the official's inherited 0.821 lies below t', a range stage 2 never trains; FastGen's TCM configs
  use 1.0 for CIFAR-10 and 1.526 for ImageNet-64).
  """

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        stage1='',                # Workdir of the stage-1 run (an `ect` run on this network); frozen below t'.
        transition_sigma=1.0,     # t': stage 2 trains sigma >= t'.
        boundary_fraction=0.25,   # int(fraction B) samples at t = t' each step.
        boundary_weight=0.1,      # The boundary samples' mean loss, relative to the rest's.
        t_df=0.01,                # ln t ~ Student-t(t_df, t_mean, t_std) truncated to [ln t', ln sigma_max].
        t_mean=0.0,
        t_std=0.2,
        ratio=0.999,              # ECT's 1 - q^-(s+1) at stage 1's limit: r = t - t (1 - ratio)(1 + k sigmoid(-b t)).
        sample_sigmas=(1.0,),
        stage1_steps=0,           # R: the stage-1 iteration the lr schedule and power EMA continue from (the
                                  # official --resume_tick x 100; its default 0 restarts them).
    ))
    return config

  @classmethod
  def inputs(cls, config):
    hp = config.method
    if not hp.stage1:
      raise ValueError("method 'tcm' is stage 2 of truncated consistency training: set "
                       '--config.method.stage1=WORKDIR (a finished ect run on this network; the student starts from '
                       'it unless --config.method.init_from names another run).')
    specs = super().inputs(config)
    readout = cls.readout_of(config).name
    specs['student_init'] = InitInput(hp.init_from or hp.stage1, readout=readout,
                                      field='method.init_from' if hp.init_from else 'method.stage1')
    specs['stage1'] = InitInput(hp.stage1, readout=readout, field='method.stage1')
    return specs

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    hp = self.hparams
    if not hp.sigma_min < hp.transition_sigma < hp.sigma_max:
      raise ValueError(f'method.transition_sigma={hp.transition_sigma} must lie inside (sigma_min, sigma_max) = '
                       f'({hp.sigma_min}, {hp.sigma_max})')
    if not 0 < hp.ratio < 1:
      raise ValueError(f'method.ratio={hp.ratio} must lie in (0, 1)')
    if hp.stage1_steps < 0:
      raise ValueError(f'method.stage1_steps={hp.stage1_steps} must be the stage-1 run\'s step count (>= 0)')
    self.log_t_quantiles = timesteps.truncated_student_t_quantiles(
        hp.t_df, hp.t_mean, hp.t_std, math.log(hp.transition_sigma), math.log(hp.sigma_max))

  def update_count_offset(self) -> int:
    return int(self.hparams.stage1_steps)

  def t_and_r(self, key, batch, step):
    """(t, r) [B] each: ln t from the truncated Student-t, t = t' on the boundary samples (`boundary_mask` of the
    same key), r by ECT's mapping at the fixed ratio (at least 1e-6, as the official clamp)."""
    del step
    hp = self.hparams
    t_key, pick_key = jax.random.split(key)
    t = jnp.exp(timesteps.sample_from_quantiles(t_key, batch, self.log_t_quantiles))
    # The official's t' + 1e-8 is t' itself in float32; t' belongs to the trained range (sigma >= t').
    t = jnp.where(self.boundary_mask(pick_key, batch), hp.transition_sigma, t)
    return t, jnp.maximum(timesteps.ect_r_at_gap(t, 1 - hp.ratio, hp.k, hp.b), 1e-6)

  def boundary_mask(self, key, batch):
    """[B] bool: exactly int(boundary_fraction B) samples, at random positions (the key's second split, as
    t_and_r draws it)."""
    rank = jnp.argsort(jax.random.uniform(key, (batch,)))  # A random permutation of 0..B-1.
    return rank < int(batch * self.hparams.boundary_fraction)

  def target_fn(self, params, frozen, x_r, r, y, key):
    """The piecewise model at the target point: the live network at r >= t', the frozen stage-1 model below."""
    live = self.consistency_fn(params, x_r, r, y=y, key=key)
    stage1 = self.consistency_fn(frozen['stage1'], x_r, r, y=y)
    return jnp.where(paths.expand_to(r >= self.hparams.transition_sigma, x_r), live, stage1)

  def loss(self, params, batch, key, ctx=StepContext()):
    frozen = ctx.frozen
    x, y = batch['x'], batch.get('y')
    eps_key, t_key, label_key, net_key = jax.random.split(key, 4)
    eps = jax.random.normal(eps_key, x.shape, x.dtype)
    y = drop_labels(label_key, y, self.hparams.label_dropout, self.num_classes)
    t, r = self.t_and_r(t_key, x.shape[0], ctx.step)
    per_sample = self.pair_loss(params, frozen, x, y, eps, t, r, net_key)
    boundary = self.boundary_mask(jax.random.split(t_key)[1], x.shape[0])
    count = jnp.sum(boundary)
    boundary_loss = jnp.sum(jnp.where(boundary, per_sample, 0.0)) / jnp.maximum(count, 1)
    rest_loss = jnp.sum(jnp.where(boundary, 0.0, per_sample)) / jnp.maximum(x.shape[0] - count, 1)
    loss = rest_loss + self.hparams.boundary_weight * boundary_loss
    return loss, {'loss': loss, 'boundary_loss': boundary_loss, 'truncated_loss': rest_loss,
                  'stage1_target_fraction': jnp.mean(r < self.hparams.transition_sigma)}
