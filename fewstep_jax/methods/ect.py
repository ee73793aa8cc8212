"""The continuous-time consistency tuning family on the EDM noise level sigma: ECT (Geng et al. 2024), SCT (Wang et
al. 2024) and TCM (Lee et al. 2024). Discrete-time CT / CD / iCT / multistep / TCD are in consistency.py, whose
consistency-function setup, distances and sampler these share.

ECT. Continuous-time consistency tuning of a pretrained EDM (or flow) model: sigma t ~ exp(N(P_mean, P_std^2)),
r = max(0, t (1 - q^-(s+1) (1 + k sigmoid(-b t)))) at stage s = step // stage_steps, one eps for both points,
  loss = lambda(t, r) d(f_theta(x + t eps, t), sg f_theta(x + r eps, r)),   target x where r = 0,
with lambda = 1 / (t - r) (the CIFAR-10 setup) or EDM's weight (the paper's EDM2 / ImageNet-64 code), `ECT_WEIGHTINGS`.
Its consistency function is the init run's own parameterisation (EDM denoiser, or a flow velocity converted
exactly to x0), so tuning starts from the pretrained model's predictions.

SCT replaces ECT's target point x + r eps by the variance-reduced one of the batch's empirical denoiser
(`ECT_TARGETS`); TCM tunes an ECT run on sigma >= t' only, its frozen stage-1 model serving below t'.

Official code: ECT, locuslab/ect training/loss.py `ECMLoss.__call__` (the imgnet branch for ImageNet-64's
settings); TCM, NVlabs/TCM (the class's docstring).
"""
import math

import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths, timesteps
from fewstep_jax.inputs import InitInput
from fewstep_jax.methods.base import ConsistencySampled, SingleNetworkMethod, StepContext, check_choice
from fewstep_jax.methods.consistency import consistency_defaults, distance_inputs, setup_consistency
from fewstep_jax.methods.registry import register, register_preset

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
class ECT(ConsistencySampled, SingleNetworkMethod):
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

  def __init__(self, config, **build):
    check_choice(config.method, 'parameterization', ECT_PARAMETERIZATIONS)
    check_choice(config.method, 'weighting', ECT_WEIGHTINGS)
    check_choice(config.method, 'target', ECT_TARGETS)
    super().__init__(config, **build)
    if self.hparams.target == 'stable':
      self.conditioning.require_classes("method.target='stable' (the batch's posterior within each class)")
    self.denoise = self.build_consistency_fn()
    setup_consistency(self)

  def build_consistency_fn(self):
    return ECT_PARAMETERIZATIONS[self.hparams.parameterization](self.apply, self.hparams)

  def consistency_fn(self, params, x, sigma, y=None, key=None):
    """The data prediction f(x_sigma, sigma) [B, ...]."""
    return self.denoise(params, x, sigma, y=y, key=key)


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
    x_r, at_zero = ECT_TARGETS[hp.target](x, eps, t, jnp.maximum(r, 0.0), y, self.conditioning.num_classes)
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
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
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
        frozen_dtype=None,        # 'bfloat16': the stage-1 model stored in it, used in float32 (docs/scaling.md).
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
    specs['stage1'] = InitInput(hp.stage1, readout=readout, field='method.stage1', frozen=True)
    return specs

  def __init__(self, config, **build):
    super().__init__(config, **build)
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
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    t, r = self.t_and_r(t_key, x.shape[0], ctx.step)
    per_sample = self.pair_loss(params, frozen, x, y, eps, t, r, net_key)
    boundary = self.boundary_mask(jax.random.split(t_key)[1], x.shape[0])
    count = jnp.sum(boundary)
    boundary_loss = jnp.sum(jnp.where(boundary, per_sample, 0.0)) / jnp.maximum(count, 1)
    rest_loss = jnp.sum(jnp.where(boundary, 0.0, per_sample)) / jnp.maximum(x.shape[0] - count, 1)
    loss = rest_loss + self.hparams.boundary_weight * boundary_loss
    return loss, {'loss': loss, 'boundary_loss': boundary_loss, 'truncated_loss': rest_loss,
                  'stage1_target_fraction': jnp.mean(r < self.hparams.transition_sigma)}
