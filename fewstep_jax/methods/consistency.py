"""Discrete-time consistency models on the EDM noise level sigma: CT and CD (Song et al. 2023), iCT
(Song & Dhariwal 2023) and ECT (Geng et al. 2024). sCT / sCD (continuous time, TrigFlow) are in scm.py.

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

Sampling (all four): f at sigma_max, then re-noise to `sample_sigmas` (CIFAR-10's 0.821 for 2 steps) and apply f
again, with TCD's `sample_gamma` (`sampling.consistency_sample` on the EDM path).

Choices where the papers leave room, all config: the same dropout key for the online and target passes (ECT's
rule, used for every method here, so that the loss vanishes at consistency); the target EMA divisor of CM
(`target_ema='cm'` is the paper's exp(s0 ln mu0 / N(k)); 'cm_code' divides by N(k) - 1 as the official code);
multistep sampling re-noises with x0 + sigma z (not sqrt(sigma^2 - sigma_min^2)).
Official code: CT / CD, openai/consistency_models_cifar10 jcm/losses.py `get_consistency_loss_fn` and
`get_ema_scales_fn` (an independent port agrees with CT's and CD's losses to float32 rounding); ECT, locuslab/ect
training/loss.py `ECMLoss.__call__` (the imgnet branch for ImageNet-64's settings).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import distances, paths, timesteps
from fewstep_jax.inputs import ArraysInput, TeacherInput
from fewstep_jax.methods.base import (TEACHER_DEFAULTS, ConsistencySampler, SingleNetworkMethod, StepContext,
                                     check_choice, drop_labels, require_teacher, teacher_model)
from fewstep_jax.methods.registry import register, register_preset

# N(k): (step, hparams, total_steps) -> number of grid points (traced int32), and the largest it can reach.
CURRICULA = {
    'fixed': (lambda step, hp, total: jnp.asarray(hp.num_scales, jnp.int32), lambda hp: hp.num_scales),
    'cm': (lambda step, hp, total: timesteps.cm_num_scales(step, total, hp.s0, hp.s1), lambda hp: hp.s1 + 1),
    'ict': (lambda step, hp, total: timesteps.ict_num_scales(step, total, hp.s0, hp.s1), lambda hp: hp.s1 + 1),
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


def setup_consistency(method):
  """The pieces every consistency model here builds in __init__: the EDM path, the distance and the sampler (its
  consistency function is method.consistency_fn)."""
  hp = method.hparams
  method.path = paths.EDMPath()
  method.distance = distances.make_distance(hp.distance, method.data_shape, huber_c=hp.huber_c,
                                            lpips_weights=hp.lpips_weights, lpips_resolution=hp.lpips_resolution)
  method.sampler = ConsistencySampler(method.consistency_fn, method.path, start_time=hp.sigma_max,
                                      start_scale=hp.sigma_max, intermediate_times=hp.sample_sigmas,
                                      data_shape=method.data_shape, num_classes=method.num_classes,
                                      guidance=hp.guidance, gamma=hp.sample_gamma)


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
        weighting='uniform',      # lambda: 'uniform' | 'inverse_gap' (1 / (sigma_{n+1} - sigma_n), iCT).
        distance='l2',
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    hp = self.hparams
    for field, registry in (('curriculum', CURRICULA), ('target_ema', TARGET_EMA_RATES),
                            ('index_distribution', INDEX_DISTRIBUTIONS), ('weighting', WEIGHTINGS)):
      check_choice(hp, field, registry)
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
    """(sigma_n, sigma_{n+1}) [B] each, n drawn from the index distribution on the N(step)-point ascending grid."""
    hp = self.hparams
    num = self.num_scales(step)
    grid = timesteps.karras_sigma_at(jnp.arange(self.max_scales), num, hp.sigma_min, hp.sigma_max, hp.rho,
                                     ascending=True)
    n = INDEX_DISTRIBUTIONS[hp.index_distribution](key, batch, num, grid, hp)
    at = lambda i: timesteps.karras_sigma_at(i, num, hp.sigma_min, hp.sigma_max, hp.rho, ascending=True)
    return at(n), at(n + 1)

  def pair_loss(self, params, target, frozen, x, y, z, sigma_n, sigma_next, key=None):
    """lambda d(f_theta(x_{n+1}, sigma_{n+1}), sg f_theta-(x̂_n, sigma_n)) [B] for given noise z [B, ...] and
    levels sigma_n < sigma_next [B]; target None means theta- = sg(theta). Both passes share the dropout key."""
    x_next = x + paths.expand_to(sigma_next, x) * z
    x_hat = jax.lax.stop_gradient(self.previous_point(frozen, x, z, x_next, sigma_next, sigma_n, y))
    online = self.consistency_fn(params, x_next, sigma_next, y=y, key=key)
    target_params = params if target is None else target
    reference = jax.lax.stop_gradient(self.consistency_fn(target_params, x_hat, sigma_n, y=y, key=key))
    weight = WEIGHTINGS[self.hparams.weighting](sigma_n, sigma_next)
    return weight * self.distance.fn(online, reference, (frozen or {}).get('distance'))

  def loss(self, params, batch, key, ctx=StepContext()):
    step, target, frozen = ctx.step, ctx.target, ctx.frozen
    x, y = batch['x'], batch.get('y')
    z_key, index_key, label_key, net_key = jax.random.split(key, 4)
    z = jax.random.normal(z_key, x.shape, x.dtype)
    y = drop_labels(label_key, y, self.hparams.label_dropout, self.num_classes)
    sigma_n, sigma_next = self.grid_pair(index_key, x.shape[0], step)
    loss = jnp.mean(self.pair_loss(params, target, frozen, x, y, z, sigma_n, sigma_next, net_key))
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
    """x̂_n [B, ...]: one Heun step of dx/dsigma = (x - D_teacher(x, sigma)) / sigma from sigma_{n+1} to sigma_n."""
    del x, z
    denoise = self.teacher_x0(frozen['teacher'], y)
    sn, snext = paths.expand_to(sigma_n, x_next), paths.expand_to(sigma_next, x_next)
    slope = (x_next - denoise(x_next, sigma_next)) / snext
    euler = x_next + (sn - snext) * slope
    slope_end = (euler - denoise(euler, sigma_n)) / sn
    return x_next + (sn - snext) * 0.5 * (slope + slope_end)


# ECT's consistency function, by the init run's parameterisation: raw network -> f(params, x_sigma, sigma, r, y,
# key) on EDM sigma. Both give f(x, 0) = x in the limit; the loss never evaluates sigma = 0.
ECT_PARAMETERIZATIONS = {
    'edm': lambda apply, hp: paths.edm_denoiser(apply, sigma_data=hp.sigma_data),
    'flow': lambda apply, hp: paths.reparameterize(paths.flow_velocity(apply), paths.LinearFlowPath(), 'velocity',
                                                   paths.EDMPath(), 'x0'),
}


# ECT's lambda(t, r) [B]: 1 / (t - r) (the CIFAR-10 setup) or EDM's (t^2 + sigma_d^2) / (t sigma_d)^2
# (the paper's ImageNet-64 / EDM2 code).
ECT_WEIGHTINGS = {
    'inverse_gap': lambda t, r, sigma_data: 1.0 / (t - r),
    'edm': lambda t, r, sigma_data: (t**2 + sigma_data**2) / (t * sigma_data) ** 2,
}


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
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    check_choice(config.method, 'parameterization', ECT_PARAMETERIZATIONS)
    check_choice(config.method, 'weighting', ECT_WEIGHTINGS)
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    self.denoise = self.build_consistency_fn()
    setup_consistency(self)

  def build_consistency_fn(self):
    return ECT_PARAMETERIZATIONS[self.hparams.parameterization](self.apply, self.hparams)

  def consistency_fn(self, params, x, sigma, y=None, key=None):
    """The data prediction f(x_sigma, sigma) [B, ...]."""
    return self.denoise(params, x, sigma, y=y, key=key)

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

  def pair_loss(self, params, frozen, x, y, eps, t, r, key=None):
    """lambda(t, r) d(f_theta(x + t eps, t), sg f_theta(x + r eps, r)) [B] for given eps [B, ...] and 0 <= r < t
    [B]; the target is x where r = 0. Both passes share eps and the dropout key."""
    hp = self.hparams
    online = self.consistency_fn(params, x + paths.expand_to(t, x) * eps, t, y=y, key=key)
    # At r = 0 the target is x itself; the network is evaluated at a positive stand-in level there and the result
    # discarded, so that c_noise = ln(r) / 4 never sees 0.
    r_safe = jnp.where(r > 0, r, hp.sigma_min)
    at_r = self.consistency_fn(params, x + paths.expand_to(r_safe, x) * eps, r_safe, y=y, key=key)
    reference = jax.lax.stop_gradient(jnp.where(paths.expand_to(r > 0, x), at_r, x))
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
