"""Continuous-time consistency models sCT and sCD (Lu & Song 2024).

TrigFlow: x_tau = cos(tau) x + sin(tau) z, z ~ N(0, sigma_d^2 I), tau in [0, pi/2]; the consistency function is
  f_theta(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F_theta(x_tau / sigma_d, tau),
so f(x, 0) = x exactly. The network's time input is tau itself (c_noise(tau) = tau).

Training signal (theta- = sg(theta), dx/dtau the path velocity: cos(tau) z - sin(tau) x for sCT, the teacher's
sigma_d F_teacher for sCD):
  (F-, J) = jvp(F_theta-, (x_tau, tau), (cos tau sin tau dx/dtau, cos tau sin tau))   J = cos tau sin tau dF-/dtau
  g = -cos^2(tau) (sigma_d F- - dx/dtau) - w (cos(tau) sin(tau) x_tau + sigma_d J),   w = min(1, step / warmup)
  g <- g / (||g|| + c)                                           (tangent normalisation, per sample)
  loss = prior(tau) / (exp(l(tau)) D) ||F_theta - sg(F_theta) - g||^2 + l(tau)
with l the network's learned log-variance head (0 without one) and prior(tau) = 1 / (sigma_d tan tau) when
`prior_weighting` is on. With w = 1, g = cos(tau) df-/dtau, the total derivative of the consistency function
along the path (tests/test_scm.py checks this against autodiff). One JVP gives both F_theta (its primal output,
through which the gradient flows) and J (under stop-gradient): one network evaluation per sample.

Proposal: tan(tau) = exp(n) / sigma_d, n ~ N(P_mean, P_std^2). Sampling: f(sigma_d z, pi/2) (1 NFE), then for
more NFE re-noise to the intermediate angles (`sample_taus`, default (1.1,) as in the paper) and apply f again;
`sample_gamma` < 1 gives TCD's stochastic sampler.

Student parameterisation (`parameterization`): 'trigflow', the paper's F_theta = raw(x_tau / sigma_d, tau); or
'edm', an EDM-preconditioned network (EDM's c_in, c_skip, c_out and c_noise = ln(sigma) / 4 at sigma = sigma_d tan
tau, `edm_student_F`) read exactly as TrigFlow's F, so that the student starts from a published EDM / EDM2 denoiser
(its readout is then 'edm', which init_from must match). Under the rearranged time tangent cos(tau) sin(tau), the
derivative of c_noise = ln(sigma_d tan tau) / 4 is the constant 1/4, so the JVP stays bounded near pi/2; the
network itself is not defined at pi/2 (sigma = inf), so an 'edm' student samples from tau(sigma_max) (EDM's 80)
instead of pi/2. With a log-variance head the network's own u(sigma) is l(tau) (EDM2's uncertainty).

Initialisation: as in the paper, sCT / sCD start from a pretrained TrigFlow diffusion model, `init_from=WORKDIR`
(same network config). `diffusion_only=True` trains that model with this very method (w = 0: g reduces to the
diffusion target; use tangent_norm='none'), as configs/digits/trigflow.py does. Without `init_from` training starts
from scratch, the tangent warmup training the diffusion target first: enough on toy data, not on digits.
Official-style code: NVlabs/FastGen fastgen/methods/consistency_model/sCM.py (`SCMModel`; the paper's authors
published none); an independent port of it agrees with sCT's and sCD's losses to float32 rounding.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths, timesteps
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import (TEACHER_DEFAULTS, ConsistencySampled, ConsistencySampler, SingleNetworkMethod,
                                     StepContext, check_choice, require_teacher, teacher_model)
from fewstep_jax.methods.registry import register
from fewstep_jax.nn.attention import require_forward_mode

HALF_PI = math.pi / 2


def tangent_normalizers():
  """g -> normalised g by config name: per-sample L2 norm (the paper), per-sample RMS, or none."""
  def per_sample(g, reduce):
    return reduce(g.reshape(g.shape[0], -1))
  return {
      'l2': lambda g, c: g / (paths.expand_to(per_sample(g, lambda a: jnp.linalg.norm(a, axis=1)), g) + c),
      'rms': lambda g, c: g / (paths.expand_to(
          per_sample(g, lambda a: jnp.sqrt(jnp.mean(a**2, axis=1))), g) + c),
      'none': lambda g, c: g,
  }


TANGENT_NORMALIZERS = tangent_normalizers()


def edm_student_F(raw_apply, sigma_data: float, has_logvar: bool):
  """F(params, x_tau, tau, r=None, y=None, key=None) of an EDM-preconditioned raw network, exactly TrigFlow's F:
  x_tau moves to EDM's path (x_sigma = x_tau / cos tau at sigma = sigma_d tan tau, `paths.change_path`), the
  denoiser D = c_skip x_sigma + c_out raw(c_in x_sigma, ln(sigma) / 4) is read as F = TrigFlowPath.F_from_x0. With
  has_logvar the raw network returns (out, logvar) and F returns (F, logvar)."""
  edm, trigflow = paths.EDMPath(), paths.TrigFlowPath(sigma_data)

  def F(params, x_tau, tau, r=None, y=None, key=None):
    del r  # One-time networks.
    tau = jnp.broadcast_to(jnp.asarray(tau, x_tau.dtype), x_tau.shape[:1])
    x_sigma, sigma = paths.change_path(x_tau, tau, trigflow, edm)
    c_skip, c_out, _ = (paths.expand_to(c, x_sigma) for c in paths.edm_coefficients(sigma, sigma_data))
    raw = raw_apply(params, *paths.edm_network_input(x_sigma, sigma, sigma_data), None, y, key)
    out, logvar = raw if has_logvar else (raw, None)
    F_tau = trigflow.F_from_x0(x_tau, c_skip * x_sigma + c_out * out, tau)
    return (F_tau, logvar) if has_logvar else F_tau

  return F


# The student by method.parameterization: (raw_apply x sigma_data x has_logvar -> F, hparams -> the sampler's
# first angle).
STUDENT_PARAMETERIZATIONS = {
    'trigflow': (lambda raw, sigma_data, has_logvar: paths.trigflow_F(raw, sigma_data=sigma_data),
                 lambda hp: HALF_PI),
    'edm': (edm_student_F, lambda hp: float(paths.tau_from_sigma(hp.sigma_max, hp.sigma_data))),
}


@register('sct')
class SCT(ConsistencySampled, SingleNetworkMethod):
  """Consistency training in continuous time: the path velocity cos(tau) z - sin(tau) x as dx/dtau."""
  uses_logvar = True
  starts_from_run = True
  teaches = True  # A diffusion_only run is a TrigFlow diffusion model; the readout is its F.

  @classmethod
  def readout_of(cls, config):
    return paths.readout(config.method.parameterization, config.method.sigma_data)

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        sigma_data=0.5,
        p_mean=-1.0,             # Proposal tan(tau) = exp(n) / sigma_d, n ~ N(p_mean, p_std^2) (CIFAR-10).
        p_std=1.4,
        tangent_warmup_steps=10000,  # w = min(1, step / tangent_warmup_steps).
        diffusion_only=False,    # w = 0 throughout: TrigFlow diffusion pretraining, the init of Algorithm 1.
        tangent_norm='l2',       # 'l2' (g / (||g|| + c), per sample) | 'rms' | 'none'.
        tangent_norm_c=0.1,
        prior_weighting=False,   # Multiply the loss by 1 / (sigma_d tan tau) (FastGen); off in Algorithm 1.
        label_dropout=0.1,
        guidance=1.0,            # Sampling CFG scale (two network calls a step when != 1).
        sample_taus=(1.1,),      # Intermediate angles of multistep sampling after pi/2.
        sample_gamma=1.0,        # TCD stochasticity: 1 = multistep consistency sampling, 0 = deterministic.
        init_from='',            # Workdir of a trained run (same network config) to initialise from.
        parameterization='trigflow',  # The student network's: 'trigflow' (F) | 'edm' (a denoiser; STUDENT_...).
        sigma_max=80.0,          # 'edm' students sample from tau(sigma_max), not pi/2.
    ))

  def __init__(self, config, **build):
    check_choice(config.method, 'parameterization', STUDENT_PARAMETERIZATIONS)
    super().__init__(config, **build)
    hp = self.hparams
    check_choice(hp, 'tangent_norm', TANGENT_NORMALIZERS)
    if 'attention' in config.network:
      require_forward_mode(config.network.attention)
    self.path = paths.TrigFlowPath(hp.sigma_data)
    self.has_logvar = bool(config.network.get('logvar_head', False))
    make_F, first_angle = STUDENT_PARAMETERIZATIONS[hp.parameterization]
    self.F = make_F(self.apply, hp.sigma_data, self.has_logvar)
    start = first_angle(hp)
    self.sampler = ConsistencySampler(self.consistency_fn, self.path, start_time=start,
                                      start_scale=hp.sigma_data * math.sin(start),
                                      intermediate_times=hp.sample_taus, data_shape=self.data_shape,
                                      conditioning=self.conditioning, guidance=hp.guidance, gamma=hp.sample_gamma)


  def F_only(self, params, x_tau, tau, r=None, y=None, key=None):
    """F_theta(x_tau / sigma_d, tau) [B, ...] without the log-variance."""
    out = self.F(params, x_tau, tau, r, y, key)
    return out[0] if self.has_logvar else out

  def consistency_fn(self, params, x_tau, tau, y=None):
    """f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F: the data prediction [B, ...]."""
    return self.path.x0_from_F(x_tau, self.F_only(params, x_tau, tau, y=y), tau)

  def sample_tau(self, key, n):
    """tau = arctan(exp(n) / sigma_d), n ~ N(p_mean, p_std^2): [n]."""
    sigma = timesteps.sample_log_normal(key, n, self.hparams.p_mean, self.hparams.p_std)
    return paths.tau_from_sigma(sigma, self.hparams.sigma_data)

  def path_velocity(self, frozen, x, z, x_tau, tau, y):
    """dx_tau/dtau [B, ...]: sCT's conditional velocity cos(tau) z - sin(tau) x."""
    del frozen, x_tau, y
    c, s = paths.expand_to(jnp.cos(tau), x), paths.expand_to(jnp.sin(tau), x)
    return c * z - s * x

  def tangent_warmup(self, step):
    if self.hparams.diffusion_only:
      return jnp.zeros((), jnp.float32)
    return jnp.minimum(1.0, step / max(self.hparams.tangent_warmup_steps, 1))

  def prediction_and_g(self, params, x_tau, tau, dx_dtau, y, w, key=None):
    """(F_theta, logvar, g): one JVP of the network along the path with the rearranged tangents.

    F_theta [B, ...] is the JVP's primal output and carries the gradient; g [B, ...] (stop-gradient, before
    normalisation) is -cos^2(tau) (sigma_d F- - dx/dtau) - w (cos(tau) sin(tau) x_tau + sigma_d J); logvar [B]
    (zeros without a log-variance head).
    """
    sd = self.hparams.sigma_data
    cos_sin = jnp.cos(tau) * jnp.sin(tau)

    def network(x, t):
      out = self.F(params, x, t, y=y, key=key)
      return out if self.has_logvar else (out, jnp.zeros(x.shape[:1], x.dtype))

    (F, logvar), (J, _) = jax.jvp(network, (x_tau, tau), (paths.expand_to(cos_sin, x_tau) * dx_dtau, cos_sin))
    F_minus, J = jax.lax.stop_gradient((F, J))
    cos2 = paths.expand_to(jnp.cos(tau) ** 2, x_tau)
    g = -cos2 * (sd * F_minus - dx_dtau) - w * (paths.expand_to(cos_sin, x_tau) * x_tau + sd * J)
    return F, logvar, g

  def loss(self, params, batch, key, ctx=StepContext()):
    step, frozen = ctx.step, ctx.frozen
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    z_key, tau_key, label_key, net_key = jax.random.split(key, 4)
    z = hp.sigma_data * jax.random.normal(z_key, x.shape, x.dtype)
    tau = self.sample_tau(tau_key, x.shape[0])
    x_tau = self.path.noisy(x, z / hp.sigma_data, tau)
    y = self.conditioning.drop(label_key, y, hp.label_dropout)
    dx_dtau = jax.lax.stop_gradient(self.path_velocity(frozen, x, z, x_tau, tau, y))
    w = self.tangent_warmup(step)
    F, logvar, g = self.prediction_and_g(params, x_tau, tau, dx_dtau, y, w, key=net_key)
    g = TANGENT_NORMALIZERS[hp.tangent_norm](g, hp.tangent_norm_c)
    dim = math.prod(x.shape[1:])
    squared = jnp.sum(jnp.square(F - jax.lax.stop_gradient(F) - g).reshape(x.shape[0], -1), axis=1)
    prior = 1.0 / (hp.sigma_data * jnp.tan(tau)) if hp.prior_weighting else 1.0
    per_sample = prior * jnp.exp(-logvar) * squared / dim + logvar
    loss = jnp.mean(per_sample)
    return loss, {'loss': loss, 'g_rms': jnp.sqrt(jnp.mean(g**2)), 'logvar': jnp.mean(logvar), 'warmup': w}


@register('scd')
class SCD(SCT):
  """Consistency distillation in continuous time: dx/dtau = sigma_d F_teacher(x_tau, tau), from any teacher
  with a velocity field or denoiser (flow matching, EDM, ...) converted exactly to TrigFlow; optionally guided."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(TEACHER_DEFAULTS)
    return config

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), 'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
    self.teacher_velocity = teacher_model(require_teacher(self.given_inputs, self.name), self.path, 'velocity',
                                          self.hparams.teacher_guidance, self.conditioning)

  def path_velocity(self, frozen, x, z, x_tau, tau, y):
    """dx_tau/dtau [B, ...] of the teacher's probability-flow ODE at (x_tau, tau), guided if configured."""
    del x, z
    return self.teacher_velocity(frozen['teacher'], y)(x_tau, tau)
