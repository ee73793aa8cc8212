"""Discrete-time consistency models on the EDM noise level sigma: CT and CD (Song et al. 2023), iCT
(Song & Dhariwal 2023), multistep CT / CD (Heek et al. 2024) and TCD (Zheng et al. 2024). The continuous-time
tuning family (ECT, SCT, TCM) is in ect.py; sCT / sCD (TrigFlow) in scm.py.

CT / CD / iCT. Consistency function with the boundary-shifted EDM scalings (`paths.edm_coefficients`),
  f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in x, ln(sigma) / 4),   f(x, sigma_min) = x exactly.
Each step picks n in {0..N-2} on the ascending Karras grid of N = N(k) points (sigma_0 = sigma_min), z ~ N(0, I):
  x_{n+1} = x + sigma_{n+1} z,   x̂_n = x + sigma_n z (CT)  or  one Heun step of the teacher ODE from x_{n+1} (CD),
  loss = lambda(sigma_n, sigma_{n+1}) d(f_theta(x_{n+1}, sigma_{n+1}), sg f_theta-(x̂_n, sigma_n)).
The knobs that tell the three apart are registries below: the curriculum N(k) (`CURRICULA`), the target network
theta- and its EMA rate (`TARGET_EMA_RATES`), the index distribution (`INDEX_DISTRIBUTIONS`), the weighting
lambda (`WEIGHTINGS`) and the distance d (`distances.py`). The EMA target lives in state.extra['target'].

Multistep CM and TCD change where the two outputs are compared (`ENDPOINTS`): at the start of the pair's segment
(multistep: K segments of the grid, each its own consistency model, via DDIM and its inverse) or at a common
random s <= sigma_n (TCD); both reduce to CM at sigma_end = 0.

Sampling: f at sigma_max, then re-noise to `sample_sigmas` (CIFAR-10's 0.821 for 2 steps; multistep CM: its
segment boundaries, with DDIM moves) and apply f again, with TCD's `sample_gamma` (`sampling.consistency_sample`
on the EDM path).

Choices where the papers leave room, all config: the same dropout key for the online and target passes (ECT's
rule, used for every method here, so that the loss vanishes at consistency); the target EMA divisor of CM
(`target_ema='cm'` is the paper's exp(s0 ln mu0 / N(k)); 'cm_code' divides by N(k) - 1 as the official code);
multistep sampling re-noises with x0 + sigma z (not sqrt(sigma^2 - sigma_min^2)).
Official code: CT / CD, openai/consistency_models_cifar10 jcm/losses.py `get_consistency_loss_fn` and
`get_ema_scales_fn` (an independent port agrees with CT's and CD's losses to float32 rounding).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import distances, paths, timesteps
from fewstep_jax.inputs import ArraysInput, TeacherInput
from fewstep_jax.methods.base import (EDM_SIGMA_DEFAULTS, TEACHER_DEFAULTS, ConsistencySampled, ConsistencySampler,
                                     SingleNetworkMethod, StepContext, check_choice, require_teacher,
                                     teacher_model)
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
      **EDM_SIGMA_DEFAULTS,
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
                                      data_shape=method.data_shape, conditioning=method.conditioning,
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
class ConsistencyTraining(ConsistencySampled, SingleNetworkMethod):
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
  def run_defining_fields(cls, config):
    """The CM and iCT curricula run over train.num_steps."""
    return ('train.num_steps',) if config.method.curriculum in ('cm', 'ict') else ()

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
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

  def trained_nfes(self, conditional):
    """A multistep model (segments > 1): one call a segment (two under CFG); else any NFE."""
    if self.hparams.segments == 1:
      return None
    return (self.hparams.segments * (2 if conditional and self.hparams.guidance != 1.0 else 1),)

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
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
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

  def __init__(self, config, **build):
    super().__init__(config, **build)
    self.teacher_x0 = teacher_model(require_teacher(self.given_inputs, self.name), self.path, 'x0',
                                    self.hparams.teacher_guidance, self.conditioning)

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
