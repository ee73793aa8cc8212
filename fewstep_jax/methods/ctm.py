"""CTM (consistency trajectory models, Kim et al. 2024): a network G(x_t, t, s) that jumps from noise level t to any
s <= t along the teacher's probability-flow ODE, trained by soft consistency through a teacher ODE segment plus
denoising score matching; sampled with gamma-sampling.

Parameterisation (EDM sigma; the second time s enters the network as a second embedding, network.two_times):
  g(x_t, t, s) = c_skip(t) x_t + c_out(t) F(c_in(t) x_t, c_noise(t), c_noise(s)),
  G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s),   so G(x_t, t, t) = x_t; the denoiser is g(x_t, t, t).
Soft consistency (one draw per step, on the descending N-point Karras grid sigma_0 = sigma_max):
  k ~ p(k) ∝ k on {1..heun_steps}, one k for the batch; t index i ~ U{0..N-1-k}; u = index i + k;
  s index ~ U{i + k..N-1} (s = u possible); x_u = k Heun steps of the teacher ODE from x_t = x + t eps;
  L_CTM = d(G_sg(G_theta(x_t, t, s), s, sigma_min), G_sg(sg G_theta(x_u, u, s), s, sigma_min)),
where G_sg is the target network (an EMA of theta, rate target_ema) with gradient through its input only, and the
inner jump of the target uses the live parameters without gradient.
DSM: L_DSM = lambda(sigma) ||g(x_sigma, sigma, sigma) - x||^2 (mean over elements), sigma half log-normal
(N(-1.2, 1.2^2)) and half the Karras map of U[0, 0.7] counted from sigma_max down (sigma in [0.318, 80]).
Total gradient: grad L_CTM + dsm_weight w grad L_DSM, w = clip(||grad L_CTM|| / (||grad L_DSM|| + 1e-4), 0, 1e4)
without gradient (the adaptive weight), or w = 1 with adaptive_dsm=False.
Gamma-sampling on the (nfe + 1)-point Karras grid: x <- G(x, sigma_i, s) + sqrt(sigma_{i+1}^2 - s^2) z with
s = sqrt(1 - gamma^2)(sigma_{i+1} - sigma_min) + sigma_min (no noise after the last jump); gamma = 0 is the
deterministic G(x, sigma_i, sigma_{i+1}).

Followed: sony/ctm code/cm/karras_diffusion.py `KarrasDenoiser` (`get_denoised_and_G`: the parameterisation;
`ctm_losses`: t, u, s and k, the estimate and target, `heun_solver`; `get_DSM_loss`; `calculate_adaptive_weight`),
code/cm/resample.py (`HalfLogNormalHalfUniformSampler`, the weighted k), code/cm/sample_util.py
(`sample_gamma_multistep`, `sample_exact`) and code/cm/script_util.py with commands/*.sh (defaults).
Deviations:
- no GAN term: the official's projected discriminator on frozen DeiT / EfficientNet features is not available
  here (issue-level follow-up: reuse the score-distillation GAN head);
- the adaptive weight compares the gradient norms over all parameters (the official: over the last layer only),
  which costs nothing extra here since the two terms' gradients are taken separately anyway;
- the student starts from the teacher's weights where the names and shapes agree and keeps its fresh
  initialisation elsewhere (the s embedding), as the official copies by name;
- the teacher ODE steps run deterministically (the official teacher is in eval mode too); the target network is
  evaluated without dropout.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fewstep_jax import distances, paths, timesteps
from fewstep_jax.distances import edm_weight, per_sample_mean
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import (TEACHER_DEFAULTS, SingleNetworkMethod, StepContext, accumulate_gradients,
                                     drop_labels, require_teacher, teacher_model)
from fewstep_jax.methods.consistency import distance_inputs
from fewstep_jax.methods.registry import register


def merge_by_path(fresh, source):
  """`fresh` with every leaf of `source` put at its path (cast to fresh's dtype): a two-time student starts from a
  one-time teacher's weights, its second time embedding fresh. Every source leaf must have a place of its shape
  in fresh (the same network but for the second time), else a clear error."""
  places = {jax.tree_util.keystr(path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(fresh)}
  found = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
  misfits = sorted(path for path, leaf in found.items() if places.get(path) != leaf.shape)
  if misfits:
    raise ValueError(f'the teacher\'s parameters do not fit the student: {misfits[:3]} have no place of their shape '
                     'in it; the student must be the teacher\'s network with network.two_times=True.')

  def take(path, leaf):
    other = found.get(jax.tree_util.keystr(path))
    return leaf if other is None else jnp.asarray(other, leaf.dtype)
  return jax.tree_util.tree_map_with_path(take, fresh)


@register('ctm')
class CTM(SingleNetworkMethod):
  """CTM: the trajectory jump G(x_t, t, s), soft consistency through k teacher Heun steps, adaptive DSM."""
  target_network = 'own_ema'

  @classmethod
  def readout_of(cls, config):
    return None  # G is a jump, not a denoiser or velocity another method reads.

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        **TEACHER_DEFAULTS,
        sigma_data=0.5,
        sigma_min=0.002,
        sigma_max=80.0,
        rho=7.0,
        num_scales=18,            # N of the descending Karras grid (ImageNet-64: 40).
        heun_steps=17,            # k ~ p(k) ∝ k on {1..heun_steps} teacher Heun steps from t to u (<= N - 1).
        target_ema=0.999,         # The target network G_sg's EMA rate.
        distance='l2',            # 'l2' | 'pseudo_huber' | 'lpips' (the official's) (distances.py).
        huber_c=-1.0,
        lpips_weights='',
        lpips_resolution=224,
        dsm_weight=1.0,           # lambda_DSM.
        adaptive_dsm=True,        # Scale DSM by ||grad L_CTM|| / ||grad L_DSM||.
        dsm_p_mean=-1.2,          # The log-normal half of DSM's levels.
        dsm_p_std=1.2,
        dsm_max_ramp=0.7,         # The Karras half: the map of U[0, dsm_max_ramp] from sigma_max down.
        label_dropout=0.0,
        guidance=1.0,             # Sampling CFG scale.
        sample_gamma=0.0,         # Gamma-sampling's stochasticity (0: deterministic jumps).
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), **distance_inputs(config),
            'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, *, data_shape, num_classes, inputs=None):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs)
    hp = self.hparams
    if not config.network.two_times:
      raise ValueError('ctm needs a network with two time inputs (t and the jump target s): set '
                       '--config.network.two_times=True')
    if not 1 <= hp.heun_steps <= hp.num_scales - 1:
      raise ValueError(f'method.heun_steps={hp.heun_steps} must lie in 1..num_scales - 1 = {hp.num_scales - 1}')
    teacher = require_teacher(inputs, self.name)
    self.path = paths.EDMPath()
    self.teacher_x0 = teacher_model(teacher, self.path, 'x0', hp.teacher_guidance, num_classes)
    self.denoise = paths.edm_denoiser(self.apply, sigma_data=hp.sigma_data)
    self.distance = distances.make_distance(hp.distance, self.data_shape, huber_c=hp.huber_c,
                                            lpips_weights=hp.lpips_weights, lpips_resolution=hp.lpips_resolution)

  # --- The network. ---

  def g(self, params, x_t, t, s, y=None, key=None):
    """g(x_t, t, s) [B, ...]: the EDM-preconditioned output at level t [B] with the jump target s [B]."""
    return self.denoise(params, x_t, t, r=s, y=y, key=key)

  def jump(self, params, x_t, t, s, y=None, key=None):
    """G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s) [B, ...]."""
    ratio = paths.expand_to(s / t, x_t)
    return ratio * x_t + (1 - ratio) * self.g(params, x_t, t, s, y, key)

  def own_target_rate(self, step):
    del step
    return jnp.asarray(self.hparams.target_ema, jnp.float32)

  def init(self, key, frozen=None):
    """The student from a fresh two-time initialisation with the teacher's weights wherever they fit."""
    frozen = dict(frozen or {})
    state = super().init(key, frozen)
    if 'teacher' not in frozen:
      return state
    params = merge_by_path(state.nets['student'].params, frozen['teacher'])
    extra = dict(state.extra, target=jax.tree.map(lambda p: p.astype(jnp.float32), params))
    return state.replace(nets={'student': self.student.init(params)}, extra=extra)

  # --- The objective. ---

  def grid(self, index):
    hp = self.hparams
    return timesteps.karras_sigma_at(index, hp.num_scales, hp.sigma_min, hp.sigma_max, hp.rho)

  def draw_times(self, key, batch):
    """(k, t index, u index, s index): k ~ p(k) ∝ k (one for the batch); per sample i ~ U{0..N-1-k}, u = i + k,
    s ~ U{u..N-1} on the descending grid."""
    hp = self.hparams
    k_key, t_key, s_key = jax.random.split(key, 3)
    steps = jnp.arange(1, hp.heun_steps + 1)
    k = jax.random.choice(k_key, steps, p=steps / jnp.sum(steps))
    t_index = jax.random.randint(t_key, (batch,), 0, hp.num_scales - k)
    u_index = t_index + k
    s_index = jax.random.randint(s_key, (batch,), u_index, hp.num_scales)
    return k, t_index, u_index, s_index

  def teacher_solve(self, frozen, x_t, t_index, k, y):
    """x_u [B, ...]: k Heun steps of the teacher's ODE dx/dsigma = (x - D(x, sigma)) / sigma along the grid from
    index t_index [B] (exactly k teacher-pair calls; the last step to sigma_min ends with Euler, as EDM's)."""
    denoise = self.teacher_x0(frozen['teacher'], y)

    def heun(j, x):
      sigma, sigma_next = self.grid(t_index + j), self.grid(t_index + j + 1)
      s, s_next = paths.expand_to(sigma, x), paths.expand_to(sigma_next, x)
      slope = (x - denoise(x, sigma)) / s
      euler = x + (s_next - s) * slope
      slope_next = (euler - denoise(euler, sigma_next)) / s_next
      return x + (s_next - s) * 0.5 * (slope + slope_next)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, k, heun, x_t))

  def ctm_loss(self, params, batch, key, ctx=StepContext()):
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    time_key, eps_key, label_key, net_key = jax.random.split(key, 4)
    y = drop_labels(label_key, y, hp.label_dropout, self.num_classes)
    k, t_index, u_index, s_index = self.draw_times(time_key, x.shape[0])
    t, u, s = self.grid(t_index), self.grid(u_index), self.grid(s_index)
    x_t = x + paths.expand_to(t, x) * jax.random.normal(eps_key, x.shape, x.dtype)
    x_u = self.teacher_solve(ctx.frozen, x_t, t_index, k, y)
    target_params = jax.lax.stop_gradient(ctx.target if ctx.target is not None else params)
    sigma_min = jnp.full_like(s, hp.sigma_min)
    estimate = self.jump(target_params, self.jump(params, x_t, t, s, y, net_key), s, sigma_min, y)
    inner = jax.lax.stop_gradient(self.jump(params, x_u, u, s, y, net_key))
    reference = jax.lax.stop_gradient(self.jump(target_params, inner, s, sigma_min, y))
    loss = jnp.mean(self.distance.fn(estimate, reference, (ctx.frozen or {}).get('distance')))
    return loss, {'ctm_loss': loss, 'heun_steps': k.astype(jnp.float32)}

  def dsm_sigma(self, key, n):
    """DSM's levels [n]: the first half log-normal, the rest the Karras map of U[0, dsm_max_ramp] from sigma_max."""
    hp = self.hparams
    normal_key, ramp_key = jax.random.split(key)
    lognormal = timesteps.sample_log_normal(normal_key, n, hp.dsm_p_mean, hp.dsm_p_std)
    ramp = jax.random.uniform(ramp_key, (n,), maxval=hp.dsm_max_ramp)
    karras = (hp.sigma_max ** (1 / hp.rho) + ramp * (hp.sigma_min ** (1 / hp.rho) - hp.sigma_max ** (1 / hp.rho))
              ) ** hp.rho
    return jnp.where(jnp.arange(n) < n // 2, lognormal, karras)

  def dsm_loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    sigma_key, eps_key, label_key, net_key = jax.random.split(key, 4)
    y = drop_labels(label_key, y, hp.label_dropout, self.num_classes)
    sigma = self.dsm_sigma(sigma_key, x.shape[0])
    x_sigma = x + paths.expand_to(sigma, x) * jax.random.normal(eps_key, x.shape, x.dtype)
    denoised = self.g(params, x_sigma, sigma, sigma, y, net_key)
    loss = jnp.mean(edm_weight(sigma, hp.sigma_data) * per_sample_mean(jnp.square(denoised - x)))
    return loss, {'dsm_loss': loss}

  def loss(self, params, batch, key, ctx=StepContext()):
    """L_CTM + dsm_weight L_DSM (unit adaptive weight; `gradients` applies the adaptive one)."""
    ctm_key, dsm_key = jax.random.split(key)
    ctm, ctm_metrics = self.ctm_loss(params, batch, ctm_key, ctx)
    dsm, dsm_metrics = self.dsm_loss(params, batch, dsm_key, ctx)
    loss = ctm + self.hparams.dsm_weight * dsm
    return loss, {'loss': loss, **ctm_metrics, **dsm_metrics}

  def gradients(self, state, batch, key):
    """grad L_CTM + dsm_weight w grad L_DSM with the adaptive w (each term's gradient taken on its own)."""
    hp = self.hparams
    if not hp.adaptive_dsm:
      return super().gradients(state, batch, key)
    ctx = self.context(state)
    params, micro = state.nets['student'].params, self.config.train.micro_batches
    ctm_key, dsm_key = jax.random.split(key)
    ctm_grads, ctm_metrics = accumulate_gradients(lambda p, b, k: self.ctm_loss(p, b, k, ctx), params, batch,
                                                  ctm_key, micro)
    dsm_grads, dsm_metrics = accumulate_gradients(lambda p, b, k: self.dsm_loss(p, b, k, ctx), params, batch,
                                                  dsm_key, micro)
    adaptive = jnp.clip(optax.tree.norm(ctm_grads) / (optax.tree.norm(dsm_grads) + 1e-4), 0.0, 1e4)
    weight = hp.dsm_weight * adaptive
    grads = jax.tree.map(lambda a, b: a + weight * b, ctm_grads, dsm_grads)
    loss = ctm_metrics['ctm_loss'] + weight * dsm_metrics['dsm_loss']
    return grads, {'loss': loss, **ctm_metrics, **dsm_metrics, 'dsm_adaptive_weight': adaptive}

  # --- Sampling. ---

  def sample(self, params, key, n, nfe, labels=None, guidance=None, gamma=None, noise=None):
    """Gamma-sampling with nfe jumps over the (nfe + 1)-point Karras grid from sigma_max (CFG: two calls a jump)."""
    hp = self.hparams
    guidance = hp.guidance if guidance is None else guidance
    gamma = hp.sample_gamma if gamma is None else gamma
    if not 0.0 <= gamma <= 1.0:
      raise ValueError(f'gamma must be in [0, 1], got {gamma}')
    noise_key, walk_key = jax.random.split(key)
    x = hp.sigma_max * (jax.random.normal(noise_key, (n,) + self.data_shape) if noise is None else noise)
    sigmas = [float(v) for v in timesteps.karras_sigmas(nfe + 1, hp.sigma_min, hp.sigma_max, hp.rho)]
    g = self.g
    if labels is not None and guidance != 1.0:
      null = jnp.full_like(labels, self.num_classes)
      g = lambda p, x, t, s, y: (self.g(p, x, t, s, null)
                                 + guidance * (self.g(p, x, t, s, y) - self.g(p, x, t, s, null)))
    for i in range(nfe):
      last = i == nfe - 1
      s = sigmas[i + 1] if last else (1 - gamma**2) ** 0.5 * (sigmas[i + 1] - hp.sigma_min) + hp.sigma_min
      t_vec, s_vec = jnp.full((n,), sigmas[i]), jnp.full((n,), s)
      ratio = s / sigmas[i]
      x = ratio * x + (1 - ratio) * g(params, x, t_vec, s_vec, labels)
      if not last and gamma > 0:
        fresh = jax.random.normal(jax.random.fold_in(walk_key, i), x.shape, x.dtype)
        x = x + (max(sigmas[i + 1]**2 - s**2, 0.0)) ** 0.5 * fresh
    return x
