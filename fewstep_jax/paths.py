"""Noise paths, and exact conversions between their times, noisy samples and predictions.

The one convention of the codebase, with eps ~ N(0, I) in every path:

  linear flow  z_t     = (1 - t) x + t eps            t in [0, 1], t = 0 data, t = 1 noise
  EDM          x_sigma = x + sigma eps                sigma in [0, inf), sigma_data = 0.5
  TrigFlow     x_tau   = cos(tau) x + sin(tau) z      tau in [0, pi/2], z = sigma_d eps ~ N(0, sigma_d^2 I)

Each is a Gaussian path `z = alpha(time) x + beta(time) eps`, and all three are one family: a noisy sample of
any of them is `alpha(time) x_sigma` with the EDM noise level `sigma = beta / alpha`. Hence

  sigma = t / (1 - t),  z_t = (1 - t) x_sigma;      sigma = sigma_d tan(tau),  x_tau = cos(tau) x_sigma.

Predictions at a noisy input (z, time) are conditional expectations, all exact functions of one another:

  'x0'        E[x | z], the denoised sample (an EDM denoiser D)
  'eps'       E[eps | z]
  'velocity'  E[dz/dtime | z] = alpha' x0 + beta' eps: flow v = eps - x; EDM dx_sigma/dsigma = eps;
              TrigFlow dx_tau/dtau = cos(tau) z - sin(tau) x = sigma_d F
  'score'     grad_z log p_time(z) = -eps / beta
  'F'         (TrigFlow only) the network output F = velocity / sigma_d, so that the data prediction is
              f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F (sCM).

Times are scalars or [B] vectors and broadcast against [B, ...] data via `expand_to`. Conversions are exact in
the interior of each time range. The pure-noise end (t = 1, tau = pi/2) is sigma = inf: the time conversions, the
flow and TrigFlow samples, `change_path` between them and x0 from velocity / F stay finite there (x0 = eps - v,
f = -sigma_d F); anything through EDM does not. Conversions that divide by beta (eps, score, velocity from x0)
are undefined at the data end.

The second half of the module wraps a raw network `raw(params, x, c_noise, r, y, key)` into the model of one path
(its preconditioning), and turns the model of one path into the model of another (`reparameterize`).
"""
import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

SIGMA_DATA = 0.5


def expand_to(time, x):
  """Appends unit axes to `time` (scalar or [B]) so that it broadcasts against x: [B, ...] -> [B, 1, ..., 1]."""
  time = jnp.asarray(time)
  return time.reshape(time.shape + (1,) * (jnp.ndim(x) - time.ndim))


def _per_example(time, x):
  """A scalar or [B] time as a [B] vector for the batch x: [B, ...]; networks always receive one time per example."""
  return jnp.broadcast_to(jnp.asarray(time, jnp.result_type(float)), jnp.shape(x)[:1])


# ---------------------------------------------------------------------------------------------------------------
# Time variables. Elementwise; each accepts scalars or arrays.
# ---------------------------------------------------------------------------------------------------------------

def sigma_from_t(t):
  """Flow time t in [0, 1] -> EDM sigma = t / (1 - t) in [0, inf]."""
  t = jnp.asarray(t)
  return t / (1.0 - t)


def t_from_sigma(sigma):
  """EDM sigma -> flow time t = sigma / (1 + sigma), written so that sigma = inf gives t = 1 (not nan)."""
  return 1.0 / (1.0 + 1.0 / jnp.asarray(sigma))


def sigma_from_tau(tau, sigma_data=SIGMA_DATA):
  """TrigFlow angle tau in [0, pi/2] -> EDM sigma = sigma_d tan(tau).

  Ill-conditioned near pi/2 (d sigma / d tau = sigma_d / cos^2): in float32 the relative error of sigma there is
  about 1e-7 / cos(tau), e.g. 2e-5 at sigma = 100, inherited from the rounding of tau itself.
  """
  # float32(pi / 2) lies just above pi/2, where cos is -4e-8: clamping keeps sigma at +inf instead of -2e7.
  return sigma_data * jnp.sin(tau) / jnp.maximum(jnp.cos(tau), 0.0)


def tau_from_sigma(sigma, sigma_data=SIGMA_DATA):
  """EDM sigma -> TrigFlow angle tau = arctan(sigma / sigma_d); sigma = inf gives pi/2."""
  return jnp.arctan2(sigma, sigma_data)


def t_from_tau(tau, sigma_data=SIGMA_DATA):
  """TrigFlow angle tau -> flow time t = sigma_d sin(tau) / (cos(tau) + sigma_d sin(tau)); finite at both ends."""
  scaled_sin = sigma_data * jnp.sin(tau)
  return scaled_sin / (jnp.cos(tau) + scaled_sin)


def tau_from_t(t, sigma_data=SIGMA_DATA):
  """Flow time t -> TrigFlow angle tau = arctan(t / (sigma_d (1 - t))); finite at both ends."""
  return jnp.arctan2(t, sigma_data * (1.0 - t))


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GaussianPath:
  """The path `z = alpha(time) x + beta(time) eps`; subclasses give alpha, beta and their time derivatives.

  Every method takes data-shaped arrays [B, ...] and a time that is a scalar or [B]; `z` is a noisy sample of this
  path at that time. Prediction conversions go through x0, the one prediction shared by every path.
  """
  name = None

  def coefficients(self, time):
    """(alpha, beta, d alpha / d time, d beta / d time), each shaped like time."""
    raise NotImplementedError

  def sigma(self, time):
    """The EDM noise level beta / alpha of this path at `time`."""
    raise NotImplementedError

  def time_from_sigma(self, sigma):
    """This path's time at EDM noise level sigma (inverse of `sigma`)."""
    raise NotImplementedError

  def _coefficients_like(self, time, x):
    return tuple(expand_to(c, x) for c in self.coefficients(jnp.asarray(time, jnp.result_type(float))))

  def noisy(self, x, noise, time):
    """The noisy sample alpha x + beta noise; x, noise: [B, ...] with noise ~ N(0, I)."""
    alpha, beta, _, _ = self._coefficients_like(time, x)
    return alpha * x + beta * noise

  def velocity(self, x, noise, time):
    """The conditional velocity d noisy / d time = alpha' x + beta' noise: the flow-matching target."""
    _, _, d_alpha, d_beta = self._coefficients_like(time, x)
    return d_alpha * x + d_beta * noise

  def eps_from_x0(self, z, x0, time):
    alpha, beta, _, _ = self._coefficients_like(time, z)
    return (z - alpha * x0) / beta

  def x0_from_eps(self, z, eps, time):
    alpha, beta, _, _ = self._coefficients_like(time, z)
    return (z - beta * eps) / alpha

  def velocity_from_x0(self, z, x0, time):
    _, _, d_alpha, d_beta = self._coefficients_like(time, z)
    return d_alpha * x0 + d_beta * self.eps_from_x0(z, x0, time)

  def x0_from_velocity(self, z, velocity, time):
    # Solves velocity = alpha' x0 + beta' (z - alpha x0) / beta for x0. The denominator is the Wronskian
    # alpha' beta - beta' alpha: -1 for the flow and EDM paths, -sigma_d for TrigFlow, so never zero.
    alpha, beta, d_alpha, d_beta = self._coefficients_like(time, z)
    return (beta * velocity - d_beta * z) / (d_alpha * beta - d_beta * alpha)

  def score_from_x0(self, z, x0, time):
    """Tweedie: grad log p_time(z) = (alpha x0 - z) / beta^2."""
    alpha, beta, _, _ = self._coefficients_like(time, z)
    return (alpha * x0 - z) / beta**2

  def x0_from_score(self, z, score, time):
    alpha, beta, _, _ = self._coefficients_like(time, z)
    return (z + beta**2 * score) / alpha

  def _converters(self):
    """kind -> (to_x0, from_x0), each a function (z, prediction, time) -> prediction."""
    return {
        'x0': (lambda z, x0, time: x0, lambda z, x0, time: x0),
        'eps': (self.x0_from_eps, self.eps_from_x0),
        'velocity': (self.x0_from_velocity, self.velocity_from_x0),
        'score': (self.x0_from_score, self.score_from_x0),
    }

  @property
  def prediction_kinds(self):
    """The prediction kinds this path converts: 'x0', 'eps', 'velocity', 'score' (and 'F' for TrigFlow)."""
    return tuple(self._converters())

  def check_kind(self, kind):
    """Raises ValueError if this path cannot convert predictions of `kind`."""
    if kind not in self._converters():
      raise ValueError(f'{type(self).__name__} has no prediction kind {kind!r}; use one of {self.prediction_kinds}')

  def _converter(self, kind):
    self.check_kind(kind)
    return self._converters()[kind]

  def to_x0(self, kind, prediction, z, time):
    """Converts a prediction of `kind` (one of `prediction_kinds`) at (z, time) into the x0 prediction."""
    return self._converter(kind)[0](z, prediction, time)

  def from_x0(self, kind, x0, z, time):
    """Converts an x0 prediction at (z, time) into the prediction of `kind`."""
    return self._converter(kind)[1](z, x0, time)


@dataclasses.dataclass(frozen=True)
class LinearFlowPath(GaussianPath):
  """Rectified-flow path z_t = (1 - t) x + t eps, t in [0, 1]; velocity v = eps - x."""
  name = 'linear_flow'

  def coefficients(self, t):
    return 1.0 - t, t, -jnp.ones_like(t), jnp.ones_like(t)

  def sigma(self, t):
    return sigma_from_t(t)

  def time_from_sigma(self, sigma):
    return t_from_sigma(sigma)


@dataclasses.dataclass(frozen=True)
class EDMPath(GaussianPath):
  """Variance-exploding path x_sigma = x + sigma eps, time = sigma; velocity dx_sigma/dsigma = eps."""
  name = 'edm'

  def coefficients(self, sigma):
    return jnp.ones_like(sigma), sigma, jnp.zeros_like(sigma), jnp.ones_like(sigma)

  def sigma(self, sigma):
    return sigma

  def time_from_sigma(self, sigma):
    return sigma


@dataclasses.dataclass(frozen=True)
class TrigFlowPath(GaussianPath):
  """TrigFlow path x_tau = cos(tau) x + sin(tau) sigma_d eps, tau in [0, pi/2]; velocity sigma_d F."""
  sigma_data: float = SIGMA_DATA
  name = 'trigflow'

  def coefficients(self, tau):
    sin, cos = jnp.sin(tau), jnp.cos(tau)
    return cos, self.sigma_data * sin, -sin, self.sigma_data * cos

  def sigma(self, tau):
    return sigma_from_tau(tau, self.sigma_data)

  def time_from_sigma(self, sigma):
    return tau_from_sigma(sigma, self.sigma_data)

  def F_from_x0(self, x_tau, x0, tau):
    """F = (dx_tau/dtau) / sigma_d; with x0 = x it is sCT's target (cos(tau) z - sin(tau) x) / sigma_d."""
    return self.velocity_from_x0(x_tau, x0, tau) / self.sigma_data

  def x0_from_F(self, x_tau, F, tau):
    """The sCM consistency function f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F."""
    return self.x0_from_velocity(x_tau, self.sigma_data * F, tau)

  def _converters(self):
    return {**super()._converters(), 'F': (self.x0_from_F, self.F_from_x0)}


PATHS = {cls.name: cls for cls in (LinearFlowPath, EDMPath, TrigFlowPath)}


def make_path(name: str, **kwargs) -> GaussianPath:
  """The path registered as `name` ('linear_flow', 'edm', 'trigflow'), built with kwargs (e.g. sigma_data)."""
  if name not in PATHS:
    raise ValueError(f'unknown path {name!r}; use one of {sorted(PATHS)}')
  return PATHS[name](**kwargs)


def change_path(z, time, src: GaussianPath, dst: GaussianPath):
  """The same noisy sample expressed on another path: (z_src [B, ...], time_src) -> (z_dst, time_dst).

  The two samples share the EDM sigma, and z_dst = (alpha_dst / alpha_src) z_src. The scale is computed as the ratio
  of sqrt(alpha^2 + beta^2), equal to alpha_dst / alpha_src at equal sigma but finite at the noise end of the flow
  and TrigFlow paths (t = 1 <-> tau = pi/2), where both alphas vanish.
  """
  time_dst = dst.time_from_sigma(src.sigma(time))
  alpha_src, beta_src, _, _ = src.coefficients(jnp.asarray(time, jnp.result_type(float)))
  alpha_dst, beta_dst, _, _ = dst.coefficients(time_dst)
  scale = jnp.sqrt(alpha_dst**2 + beta_dst**2) / jnp.sqrt(alpha_src**2 + beta_src**2)
  return expand_to(scale, z) * z, time_dst


# ---------------------------------------------------------------------------------------------------------------
# Preconditioning: raw network -> the model of one path
# ---------------------------------------------------------------------------------------------------------------
# A raw network is called as raw(params, x, c_noise, r, y, key) with c_noise: [B] (and r: [B] or None). Each
# wrapper returns model(params, z, time, r=None, y=None, key=None) that takes this path's noisy sample and time
# (scalar or [B]); a second time r, when given, goes through the same c_noise map as time.

RawApply = Callable[..., Any]


def edm_c_noise(sigma):
  """EDM's network time input ln(sigma) / 4."""
  return jnp.log(sigma) / 4.0


def edm_coefficients(sigma, sigma_data=SIGMA_DATA, sigma_min=0.0):
  """EDM preconditioning (c_skip, c_out, c_in) for D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

  With sigma_min > 0 it is the consistency-model form (Song et al. 2023) shifted so that D(x; sigma_min) = x
  exactly: c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2), c_out = sigma_d (sigma - sigma_min) /
  sqrt(sigma^2 + sigma_d^2). sigma_min = 0 is EDM itself. c_in = 1 / sqrt(sigma^2 + sigma_d^2) in both.
  """
  shifted = sigma - sigma_min
  c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
  total_std = jnp.sqrt(sigma**2 + sigma_data**2)
  return c_skip, sigma_data * shifted / total_std, 1.0 / total_std


def edm_network_input(x_sigma, sigma, sigma_data=SIGMA_DATA):
  """(c_in x_sigma [B, ...], c_noise [B]): what EDM's preconditioning hands its raw network."""
  sigma = _per_example(sigma, x_sigma)
  c_in = edm_coefficients(sigma, sigma_data)[2]
  return expand_to(c_in, x_sigma) * x_sigma, edm_c_noise(sigma)


def edm_denoiser(raw_apply: RawApply, sigma_data=SIGMA_DATA, sigma_min=0.0):
  """Wraps a raw network into the EDM denoiser D(params, x_sigma, sigma, r, y, key) -> x0 prediction [B, ...]."""

  def denoise(params, x_sigma, sigma, r=None, y=None, key=None):
    sigma = _per_example(sigma, x_sigma)
    c_skip, c_out, _ = (expand_to(c, x_sigma) for c in edm_coefficients(sigma, sigma_data, sigma_min))
    r_noise = None if r is None else edm_c_noise(_per_example(r, x_sigma))
    output = raw_apply(params, *edm_network_input(x_sigma, sigma, sigma_data), r_noise, y, key)
    return c_skip * x_sigma + c_out * output

  return denoise


def trigflow_network_input(x_tau, tau, sigma_data=SIGMA_DATA, c_noise=lambda tau: tau):
  """(x_tau / sigma_d [B, ...], c_noise(tau) [B]): what TrigFlow's preconditioning hands its raw network."""
  return x_tau / sigma_data, c_noise(_per_example(tau, x_tau))


def trigflow_F(raw_apply: RawApply, sigma_data=SIGMA_DATA, c_noise=lambda tau: tau):
  """Wraps a raw network into TrigFlow's F(params, x_tau, tau, r, y, key) = raw(x_tau / sigma_d, c_noise(tau)).

  The default c_noise(tau) = tau is sCM's choice (EDM's ln(sigma_d tan tau) / 4 diverges as tau -> pi/2).
  The data prediction is `TrigFlowPath(sigma_data).x0_from_F(x_tau, F, tau)`.
  """

  def F(params, x_tau, tau, r=None, y=None, key=None):
    r_noise = None if r is None else c_noise(_per_example(r, x_tau))
    return raw_apply(params, *trigflow_network_input(x_tau, tau, sigma_data, c_noise), r_noise, y, key)

  return F


def flow_network_input(z_t, t, sigma_data=SIGMA_DATA):
  """(z_t [B, ...], t [B]): what the flow velocity hands its raw network (sigma_data unused: a common signature)."""
  del sigma_data
  return z_t, _per_example(t, z_t)


def flow_velocity(raw_apply: RawApply):
  """Wraps a raw network into the flow velocity v(params, z_t, t, r, y, key): input z_t, c_noise = t, output v."""

  def velocity(params, z_t, t, r=None, y=None, key=None):
    r = None if r is None else _per_example(r, z_t)
    return raw_apply(params, *flow_network_input(z_t, t), r, y, key)

  return velocity


def sit_network_input(z_t, t, sigma_data=SIGMA_DATA):
  """(z_t [B, ...], 1 - t [B]): SiT's time runs the other way (1 data, 0 noise); sigma_data unused."""
  del sigma_data
  return z_t, 1.0 - _per_example(t, z_t)


def sit_velocity(raw_apply: RawApply):
  """Wraps a SiT network into the flow velocity v(params, z_t, t, r, y, key). SiT's path is x_s = s x + (1 - s) eps
  with s = 1 - t, and its network predicts dx_s/ds = x - eps = -v: input (z_t, 1 - t), output negated."""

  def velocity(params, z_t, t, r=None, y=None, key=None):
    r = None if r is None else 1.0 - _per_example(r, z_t)
    return -raw_apply(params, *sit_network_input(z_t, t), r, y, key)

  return velocity


def _ddpm_sigmas(betas):
  """The EDM noise levels sqrt((1 - abar_j) / abar_j) of a DDPM beta schedule, abar_j = prod_{i <= j} (1 - beta_i)."""
  import numpy as np
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, np.float64))
  return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def ddpm_linear_sigmas(steps: int = 1000):
  """The EDM noise levels sqrt((1 - abar_j) / abar_j) of DDPM's linear schedule (betas from 1e-4 to 0.02 over
  1000 steps, scaled for other step counts), j = 0 .. steps - 1, increasing: DiT's training schedule
  (get_named_beta_schedule('linear'))."""
  import numpy as np
  scale = 1000 / steps
  return _ddpm_sigmas(np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64))


# Stable Diffusion's training schedule (SD 1.x, 2.x, SDXL) in the keys of diffusers' scheduler_config.json: what the
# readouts 'sd' and 'sd_v' assume (ddpm_scaled_linear_sigmas' defaults).
SD_SCHEDULE = {'beta_schedule': 'scaled_linear', 'beta_start': 0.00085, 'beta_end': 0.012, 'num_train_timesteps': 1000}


def ddpm_scaled_linear_sigmas(steps: int = SD_SCHEDULE['num_train_timesteps'],
                              beta_start: float = SD_SCHEDULE['beta_start'], beta_end: float = SD_SCHEDULE['beta_end']):
  """The EDM noise levels of Stable Diffusion's schedule (diffusers' beta_schedule='scaled_linear': betas whose
  square roots are linear from sqrt(0.00085) to sqrt(0.012) over 1000 steps), j = 0 .. steps - 1, increasing:
  the training schedule of SD 1.x, 2.x and SDXL."""
  import numpy as np
  return _ddpm_sigmas(np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float64)**2)


def ddpm_timestep(sigma, sigmas):
  """The (fractional) DDPM timestep of noise level sigma on the increasing schedule `sigmas`: interpolated in log
  sigma between its steps and clamped to them; exact at the schedule's own float32 values."""
  table = jnp.asarray(sigmas, jnp.float32)
  return jnp.interp(jnp.log(sigma), jnp.log(table), jnp.arange(len(sigmas), dtype=jnp.float32))


def dit_network_input(x_sigma, sigma, sigma_data=SIGMA_DATA, sigmas=None):
  """(x_sigma / sqrt(1 + sigma^2) [B, ...], DDPM timestep [B]): DiT sees the variance-preserving sample and the
  (fractional) timestep whose noise level is sigma, interpolated in log sigma between its 1000 steps and clamped to
  them; sigma_data unused. `sigmas` is the schedule (default DiT's, ddpm_linear_sigmas)."""
  del sigma_data
  sigmas = ddpm_linear_sigmas() if sigmas is None else sigmas
  sigma = _per_example(sigma, x_sigma)
  timestep = ddpm_timestep(sigma, sigmas)
  return x_sigma / expand_to(jnp.sqrt(1.0 + sigma**2), x_sigma), timestep


def sd_network_input(x_sigma, sigma, sigma_data=SIGMA_DATA):
  """dit_network_input on SD's scaled-linear schedule: (the variance-preserving sample, SD's timestep)."""
  return dit_network_input(x_sigma, sigma, sigma_data, ddpm_scaled_linear_sigmas())


def ddpm_eps(raw_apply: RawApply, sigmas, prediction: str = 'epsilon'):
  """Wraps a network of DDPM's parameterisation (the variance-preserving sample x_sigma / sqrt(1 + sigma^2) at the
  timestep of sigma on the schedule `sigmas`, as dit_network_input) into eps(params, x_sigma, sigma, r, y, key) on
  the EDM path. `prediction` is what the network returns, diffusers' prediction_type: 'epsilon' (the same eps: the
  variance-preserving sample has the same noise) or 'v_prediction' (v = a eps - b x0 for the sample a x0 + b eps,
  a = 1 / sqrt(1 + sigma^2), b = sigma a; so eps = a v + b (a x_sigma))."""
  if prediction not in ('epsilon', 'v_prediction'):
    raise ValueError(f"unknown DDPM prediction {prediction!r}; use 'epsilon' or 'v_prediction'")

  def eps(params, x_sigma, sigma, r=None, y=None, key=None):
    del r  # One time input.
    x_vp, timestep = dit_network_input(x_sigma, sigma, sigmas=sigmas)
    output = raw_apply(params, x_vp, timestep, None, y, key)
    if prediction == 'epsilon':
      return output
    a = expand_to(1.0 / jnp.sqrt(1.0 + _per_example(sigma, x_sigma)**2), x_sigma)
    b = jnp.sqrt(1.0 - a**2)
    return a * output + b * x_vp

  return eps


def dit_eps(raw_apply: RawApply):
  """Wraps a DiT network (an epsilon prediction at DDPM's timesteps; its learned-variance half already dropped by
  the network) into eps(params, x_sigma, sigma, r, y, key) on the EDM path: the same eps, since the
  variance-preserving sample x_sigma / sqrt(1 + sigma^2) has the same noise."""
  return ddpm_eps(raw_apply, ddpm_linear_sigmas())


def sd_eps(raw_apply: RawApply):
  """Wraps an SD U-Net of epsilon prediction (SD 1.x, SD 2.x-base, SDXL) into eps on the EDM path, as dit_eps does
  on SD's scaled-linear schedule; the text condition is y."""
  return ddpm_eps(raw_apply, ddpm_scaled_linear_sigmas())


def sd_v_eps(raw_apply: RawApply):
  """Wraps an SD U-Net of v-prediction (SD 2.x at 768 px, `sd21_v`) into eps on the EDM path (ddpm_eps)."""
  return ddpm_eps(raw_apply, ddpm_scaled_linear_sigmas(), 'v_prediction')


# The training noise levels (increasing, one per DDPM timestep) of the readouts whose networks take DDPM timesteps:
# the grids of samplers that step on those timesteps (diffusers' schedulers) are read off them.
DDPM_SCHEDULES = {'dit': ddpm_linear_sigmas, 'sd': ddpm_scaled_linear_sigmas, 'sd_v': ddpm_scaled_linear_sigmas}

PRECONDITIONINGS = {'edm': edm_denoiser, 'trigflow': trigflow_F, 'flow': flow_velocity, 'sit': sit_velocity,
                    'dit': dit_eps, 'sd': sd_eps, 'sd_v': sd_v_eps}


def flow_map_velocity(raw_apply: RawApply):
  """Wraps a two-time flow-map network u(z_t, r, t), which sees (t, t - r), into its velocity v(z_t, t) = u(z_t, t, t):
  the raw network at interval 0."""

  def velocity(params, z_t, t, r=None, y=None, key=None):
    del r
    t = _per_example(t, z_t)
    return raw_apply(params, z_t, t, jnp.zeros_like(t), y, key)

  return velocity


@dataclasses.dataclass(frozen=True)
class Readout:
  """How a network's raw output is read: `model(raw_apply)` is the model (params, z, time, r, y, key) that predicts
  `kind` on `path`. A run records its readout (`to_json`), so that a run which starts from it, or distils it, reads
  its network exactly as it was trained, whatever produced the parameters."""
  name: str           # A key of READOUTS.
  sigma_data: float
  path: Any           # A GaussianPath.
  kind: str           # What the model predicts on `path` ('x0', 'velocity', 'F').
  wrap: Callable      # raw_apply -> model.

  def model(self, raw_apply: RawApply):
    return self.wrap(raw_apply)

  def to_json(self) -> dict:
    return {'name': self.name, 'sigma_data': float(self.sigma_data)}


# name -> (path from sigma_data, prediction kind, raw_apply x sigma_data -> model); the wrappers are
# PRECONDITIONINGS' (flow_map, a two-time network read at interval 0, is the one addition).
READOUTS = {
    'edm': (lambda sigma_data: EDMPath(), 'x0', lambda raw, sigma_data: PRECONDITIONINGS['edm'](raw, sigma_data)),
    'trigflow': (TrigFlowPath, 'F', lambda raw, sigma_data: PRECONDITIONINGS['trigflow'](raw, sigma_data)),
    'flow': (lambda sigma_data: LinearFlowPath(), 'velocity', lambda raw, sigma_data: PRECONDITIONINGS['flow'](raw)),
    'flow_map': (lambda sigma_data: LinearFlowPath(), 'velocity', lambda raw, sigma_data: flow_map_velocity(raw)),
    'sit': (lambda sigma_data: LinearFlowPath(), 'velocity', lambda raw, sigma_data: PRECONDITIONINGS['sit'](raw)),
    'dit': (lambda sigma_data: EDMPath(), 'eps', lambda raw, sigma_data: PRECONDITIONINGS['dit'](raw)),
    'sd': (lambda sigma_data: EDMPath(), 'eps', lambda raw, sigma_data: PRECONDITIONINGS['sd'](raw)),
    'sd_v': (lambda sigma_data: EDMPath(), 'eps', lambda raw, sigma_data: PRECONDITIONINGS['sd_v'](raw)),
}


def readout(name: str, sigma_data: float = SIGMA_DATA) -> Readout:
  """The readout `name` (a key of READOUTS): 'edm' (an EDM denoiser), 'trigflow' (sCM's F), 'flow' (a linear-flow
  velocity), 'flow_map' (the velocity u(z, t, t) of a two-time flow map), 'sit' (SiT's velocity, in its reversed
  time), 'dit' (DiT's epsilon at DDPM's timesteps), 'sd' or 'sd_v' (an SD U-Net's epsilon or v at the timesteps of
  SD's scaled-linear schedule)."""
  if name not in READOUTS:
    raise ValueError(f'unknown readout {name!r}; use one of {sorted(READOUTS)}')
  make_path, kind, wrap = READOUTS[name]
  return Readout(name, float(sigma_data), make_path(sigma_data), kind, lambda raw: wrap(raw, sigma_data))


def readout_from_json(description: dict) -> Readout:
  return readout(description['name'], description.get('sigma_data', SIGMA_DATA))

# Each preconditioning's own path (built from sigma_data) and its map (z, time, sigma_data) -> the raw network's
# (x, c_noise), as its wrapper above computes them.
NETWORK_INPUTS = {
    'edm': (lambda sigma_data: EDMPath(), edm_network_input),
    'trigflow': (TrigFlowPath, trigflow_network_input),
    'flow': (lambda sigma_data: LinearFlowPath(), flow_network_input),
    'sit': (lambda sigma_data: LinearFlowPath(), sit_network_input),
    'dit': (lambda sigma_data: EDMPath(), dit_network_input),
    'sd': (lambda sigma_data: EDMPath(), sd_network_input),
    'sd_v': (lambda sigma_data: EDMPath(), sd_network_input),
}


def network_input(parameterization: str, z, time, path: GaussianPath, sigma_data=SIGMA_DATA):
  """(x [B, ...], c_noise [B]): the raw network's input for the noisy sample z [B, ...] at `time` on `path`, as the
  preconditioning `parameterization` (a key of PRECONDITIONINGS) computes it, after moving z exactly to that
  preconditioning's own path. E.g. the features of a network at the very input its denoiser call sees."""
  if parameterization not in NETWORK_INPUTS:
    raise ValueError(f'unknown parameterisation {parameterization!r}; use one of {sorted(NETWORK_INPUTS)}')
  make_own_path, own_input = NETWORK_INPUTS[parameterization]
  z_own, time_own = change_path(z, time, path, make_own_path(sigma_data))
  return own_input(z_own, time_own, sigma_data)


def reparameterize(model, src: GaussianPath, src_kind: str, dst: GaussianPath, dst_kind: str):
  """The model of one path and prediction kind seen as a model of another path and kind, exactly.

  model(params, z_src, time_src, r, y, key) predicts `src_kind` on path `src`; the result takes (z_dst, time_dst)
  on path `dst` and returns `dst_kind`. E.g. an EDM teacher as a TrigFlow F (sCD):
  `reparameterize(edm_denoiser(raw), EDMPath(), 'x0', TrigFlowPath(), 'F')`. A second time r is mapped to the
  source path's time variable; the output conversion treats the prediction as one at (z, time), so it is meant for
  one-time models (denoisers, velocity fields), not for two-time flow maps.
  """
  # Fail when wrapping, not at the first traced call.
  src.check_kind(src_kind)
  dst.check_kind(dst_kind)

  def converted(params, z, time, r=None, y=None, key=None):
    z_src, time_src = change_path(z, time, dst, src)
    r_src = None if r is None else src.time_from_sigma(dst.sigma(r))
    x0 = src.to_x0(src_kind, model(params, z_src, time_src, r_src, y, key), z_src, time_src)
    return dst.from_x0(dst_kind, x0, z, time)

  return converted
