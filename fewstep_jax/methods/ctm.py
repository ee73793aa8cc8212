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
without gradient (the adaptive weight), or w = 1 with adaptive_dsm=False. As the official computes it per
micro-batch (train_util.py's loop over `microbatch` samples into karras_diffusion.py, 16 a GPU on CIFAR-10, 18 on
ImageNet-64), the batch is split into groups of method.adaptive_group samples, each group's terms weighted by its own
gradient norms, and the groups' combined gradients averaged (0: one group, the whole batch); k is drawn once a step
for every group, as the official broadcasts it. Small groups' gradient norms are inflated by their noise, so the
weights depend on the group size.
Gamma-sampling on the (nfe + 1)-point Karras grid: x <- G(x, sigma_i, s) + sqrt(sigma_{i+1}^2 - s^2) z with
s = sqrt(1 - gamma^2)(sigma_{i+1} - sigma_min) + sigma_min (no noise after the last jump); gamma = 0 is the
deterministic G(x, sigma_i, sigma_{i+1}).

Followed: sony/ctm code/cm/karras_diffusion.py `KarrasDenoiser` (`get_denoised_and_G`: the parameterisation;
`ctm_losses`: t, u, s and k, the estimate and target, `heun_solver`; `get_DSM_loss`; `calculate_adaptive_weight`),
code/cm/resample.py (`HalfLogNormalHalfUniformSampler`, the weighted k), code/cm/sample_util.py
(`sample_gamma_multistep`, `sample_exact`) and code/cm/script_util.py with commands/*.sh (defaults).
GAN (gan_weight > 0, from step gan_start): a discriminator head (nn.GanHead) on the frozen teacher's bottleneck of
clean images (read at gan_sigma), hinge loss relu(1 + l(fake)) + relu(1 - l(real)) with the CTM estimate as the
fake, updated on odd steps; the student's even steps add gan_weight lambda grad(-mean l(estimate)),
lambda = clip(||grad L_CTM|| / (||grad L_GAN|| + 1e-4), 0.01, 10) (`get_GAN_loss`, g_learning_period = 2).
Deviations:
- the discriminator: one head on the frozen teacher's bottleneck (the official: projected discriminators on frozen
  DeiT and EfficientNet features with DiffAugment, which this codebase has no weights for); the generator's GAN
  term takes its own draw of the times (the official reuses the CTM term's estimate);
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

from fewstep_jax import distances, nn, paths, sampling, timesteps
from fewstep_jax.distances import edm_weight, per_sample_mean
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import (EDM_SIGMA_DEFAULTS, TEACHER_DEFAULTS, StepContext, accumulate,
                                     accumulate_gradients, check_eval_params, require_teacher,
                                     teacher_model)
from fewstep_jax.methods.consistency import distance_inputs, teacher_heun_step
from fewstep_jax.methods.gan import Discriminator
from fewstep_jax.methods.registry import register
from fewstep_jax.methods.roles import MultiNetworkMethod, Schedule, Update, loss_update
from fewstep_jax.methods.score_distillation import critic_optim_defaults
from fewstep_jax.train.optim import make_optimizer, spans_the_run
from fewstep_jax.train.trained import TrainedNetwork


def head_optim_defaults():
  """The discriminator head's optimizer: the official RAdam, lr 2e-3, betas (0.5, 0.9), constant; no EMA."""
  config = critic_optim_defaults()
  config.update(name='radam', lr=2e-3, b1=0.5, b2=0.9, schedule='constant', warmup_steps=0)
  return config


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
class CTM(MultiNetworkMethod):
  """CTM: the trajectory jump G(x_t, t, s), soft consistency through k teacher Heun steps, adaptive DSM; with the
  GAN term a second role, the discriminator head (methods/roles.py, methods/gan.py)."""

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        **TEACHER_DEFAULTS,
        **EDM_SIGMA_DEFAULTS,
        num_scales=18,            # N of the descending Karras grid (ImageNet-64: 40).
        heun_steps=17,            # k ~ p(k) ∝ k on {1..heun_steps} teacher Heun steps from t to u (<= N - 1).
        target_ema=0.999,         # The target network G_sg's EMA rate.
        distance='l2',            # 'l2' | 'pseudo_huber' | 'lpips' (the official's) (distances.py).
        huber_c=-1.0,
        lpips_weights='',
        lpips_resolution=224,
        dsm_weight=1.0,           # lambda_DSM.
        adaptive_dsm=True,        # Scale DSM by ||grad L_CTM|| / ||grad L_DSM||.
        adaptive_group=0,         # Samples per adaptive-weight group (the official micro-batch); 0: the batch.
        dsm_p_mean=-1.2,          # The log-normal half of DSM's levels.
        dsm_p_std=1.2,
        dsm_max_ramp=0.7,         # The Karras half: the map of U[0, dsm_max_ramp] from sigma_max down.
        label_dropout=0.0,
        guidance=1.0,             # Sampling CFG scale.
        sample_gamma=0.0,         # Gamma-sampling's stochasticity (0: deterministic jumps).
        gan_weight=0.0,           # > 0: the GAN term (its weight times the adaptive lambda_GAN; official 1).
        gan_start=0,              # The step from which the GAN term and the discriminator's updates run.
        gan_sigma=0.002,          # The level the frozen teacher's bottleneck reads the (clean) images at.
        gan_head_width=128,
        head_optim=head_optim_defaults(),  # The discriminator head's optimizer (official RAdam 2e-3, (0.5, 0.9)).
    ))

  @classmethod
  def run_defining_fields(cls, config):
    return ('train.num_steps',) if spans_the_run(config.method.head_optim) else ()

  @classmethod
  def inputs(cls, config):
    return {**distance_inputs(config), 'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    if not config.network.two_times:
      raise ValueError('ctm needs a network with two time inputs (t and the jump target s): set '
                       '--config.network.two_times=True')
    if not 1 <= hp.heun_steps <= hp.num_scales - 1:
      raise ValueError(f'method.heun_steps={hp.heun_steps} must lie in 1..num_scales - 1 = {hp.num_scales - 1}')
    batch = config.train.batch_size
    if hp.adaptive_group and (hp.adaptive_group < 0 or batch % hp.adaptive_group):
      raise ValueError(f'method.adaptive_group={hp.adaptive_group} must divide train.batch_size={batch} (0: one '
                       'group, the whole batch)')
    if hp.adaptive_group and hp.adaptive_group < batch and config.train.micro_batches > 1:
      raise ValueError('method.adaptive_group already takes the gradient group by group: set '
                       '--config.train.micro_batches=1')
    if config.network.get('logvar_head', False):
      raise ValueError("network.logvar_head=True, but method 'ctm' does not use a learned log-variance; set "
                       '--config.network.logvar_head=False.')
    check_eval_params(config)
    teacher = require_teacher(self.given_inputs, self.name)
    self.path = paths.EDMPath()
    self.teacher_x0 = teacher_model(teacher, self.path, 'x0', hp.teacher_guidance, self.conditioning)
    self.distance = distances.make_distance(hp.distance, self.data_shape, huber_c=hp.huber_c,
                                            lpips_weights=hp.lpips_weights, lpips_resolution=hp.lpips_resolution)
    self.use_gan = hp.gan_weight > 0
    # The student's updates: its loss's gradient (adaptive DSM: the two terms' gradients combined), with the GAN term
    # from gan_start on even steps; the discriminator head's on odd ones (the official g_learning_period = 2).
    student = lambda gan: Update(('student',), lambda params, batch, key, ctx: self.gradients(
        params, batch, key, ctx, gan), after=self.move_target)
    self.updates = {'student': student(False)}
    self.schedule = Schedule([('student',)])
    if self.use_gan:
      if teacher.network is None or teacher.readout.name not in paths.NETWORK_INPUTS:
        raise ValueError('the CTM GAN term reads the teacher\'s bottleneck: the teacher needs a network config and '
                         'an edm, flow or TrigFlow readout; or set --config.method.gan_weight=0')
      self.discriminator = Discriminator(nn.build_network(teacher.network, num_classes=self.num_classes), teacher.readout,
                                         self.path, hidden=hp.gan_head_width, loss='hinge')
      self.updates.update(student_gan=student(True), discriminator=loss_update(
          ('head',), self.discriminator_loss, config.train.micro_batches))
      # From gan_start: the student on even steps, the head on odd ones (the official `step % g_learning_period`).
      self.schedule = Schedule([('student',), ('student_gan',), ('discriminator',)],
                               pattern=(1, 2) if hp.gan_start % 2 == 0 else (2, 1), start=hp.gan_start, before=0)
    self.student = TrainedNetwork.from_config(config, num_classes=self.num_classes,
                                              num_updates=self.role_num_updates('student'))
    self.roles = {'student': self.student}
    if self.use_gan:
      self.roles['head'] = TrainedNetwork(self.discriminator.head,
                                          make_optimizer(hp.head_optim, self.role_num_updates('head')))
    self.apply = self.student.apply
    self.denoise = paths.edm_denoiser(self.apply, sigma_data=hp.sigma_data)

  def update_keys(self, key):
    """One update a step: each draws from the step's key itself."""
    return {name: key for name in self.updates}

  # --- The network. ---

  def g(self, params, x_t, t, s, y=None, key=None):
    """g(x_t, t, s) [B, ...]: the EDM-preconditioned output at level t [B] with the jump target s [B]."""
    return self.denoise(params, x_t, t, r=s, y=y, key=key)

  def jump(self, params, x_t, t, s, y=None, key=None):
    """G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s) [B, ...]."""
    ratio = paths.expand_to(s / t, x_t)
    return ratio * x_t + (1 - ratio) * self.g(params, x_t, t, s, y, key)

  def init_params(self, key, frozen):
    """The student from a fresh two-time initialisation with the teacher's weights wherever they fit; the head on
    the teacher's features."""
    params = {'student': self.student.init_params(key, self.data_shape)}
    if 'teacher' in frozen:
      params['student'] = merge_by_path(params['student'], frozen['teacher'])
    if self.use_gan and 'teacher' in frozen:  # Without the teacher (a description: eval, sample) no head.
      params['head'] = self.discriminator.init_head(jax.random.fold_in(key, 1), frozen['teacher'], self.data_shape,
                                                    self.conditioning)
    return params

  def init_extra(self, frozen, params):
    """The target network G_sg (an EMA of the student at rate target_ema), in float32."""
    del frozen
    return {'target': jax.tree.map(lambda p: p.astype(jnp.float32), params['student'])}

  def context(self, state):
    return super().context(state)._replace(target=state.extra['target'])

  def move_target(self, state, metrics):
    """After a student update: the target network moves to the updated student at rate target_ema."""
    rate = jnp.asarray(self.hparams.target_ema, jnp.float32)
    params = state.nets['student'].params
    target = jax.tree.map(lambda t, p: rate * t + (1.0 - rate) * p.astype(t.dtype), state.extra['target'], params)
    return state.replace(extra={**state.extra, 'target': target}), {**metrics, 'target_ema': rate}

  # --- The objective. ---

  def grid(self, index):
    hp = self.hparams
    return timesteps.karras_sigma_at(index, hp.num_scales, hp.sigma_min, hp.sigma_max, hp.rho)

  def draw_heun_steps(self, key):
    """k ~ p(k) ∝ k on {1..heun_steps}: the teacher Heun steps of a training step (one for the whole batch)."""
    steps = jnp.arange(1, self.hparams.heun_steps + 1)
    return jax.random.choice(key, steps, p=steps / jnp.sum(steps))

  def draw_times(self, key, batch, k=None):
    """(k, t index, u index, s index): k ~ p(k) ∝ k (one for the batch) unless given; per sample
    i ~ U{0..N-1-k}, u = i + k, s ~ U{u..N-1} on the descending grid."""
    hp = self.hparams
    k_key, t_key, s_key = jax.random.split(key, 3)
    k = self.draw_heun_steps(k_key) if k is None else k
    t_index = jax.random.randint(t_key, (batch,), 0, hp.num_scales - k)
    u_index = t_index + k
    s_index = jax.random.randint(s_key, (batch,), u_index, hp.num_scales)
    return k, t_index, u_index, s_index

  def teacher_solve(self, frozen, x_t, t_index, k, y):
    """x_u [B, ...]: k Heun steps of the teacher's ODE dx/dsigma = (x - D(x, sigma)) / sigma along the grid from
    index t_index [B]: 2k teacher calls (the grid ends at sigma_min > 0, so every step is a full Heun step)."""
    denoise = self.teacher_x0(frozen['teacher'], y)

    def heun(j, x):
      return teacher_heun_step(denoise, x, self.grid(t_index + j), self.grid(t_index + j + 1))

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, k, heun, x_t))

  def estimate(self, params, batch, key, ctx, k=None):
    """(estimate [B, ...], what the target needs): G_sg(G_theta(x_t, t, s), s, sigma_min) for one draw of the
    times (k Heun steps if given), with gradient into params (G_sg: the target network, gradient through its input
    only)."""
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    time_key, eps_key, label_key, net_key = jax.random.split(key, 4)
    y = self.conditioning.drop(label_key, y, hp.label_dropout)
    k, t_index, u_index, s_index = self.draw_times(time_key, x.shape[0], k)
    t, s = self.grid(t_index), self.grid(s_index)
    x_t = x + paths.expand_to(t, x) * jax.random.normal(eps_key, x.shape, x.dtype)
    target_params = jax.lax.stop_gradient(ctx.target if ctx.target is not None else params)
    sigma_min = jnp.full_like(s, hp.sigma_min)
    estimate = self.jump(target_params, self.jump(params, x_t, t, s, y, net_key), s, sigma_min, y)
    return estimate, (k, t_index, u_index, s, x_t, y, net_key, target_params)

  def ctm_loss(self, params, batch, key, ctx=StepContext(), k=None):
    hp = self.hparams
    estimate, (k, t_index, u_index, s, x_t, y, net_key, target_params) = self.estimate(params, batch, key, ctx, k)
    x_u = self.teacher_solve(ctx.frozen, x_t, t_index, k, y)
    inner = jax.lax.stop_gradient(self.jump(params, x_u, self.grid(u_index), s, y, net_key))
    reference = jax.lax.stop_gradient(self.jump(target_params, inner, s, jnp.full_like(s, hp.sigma_min), y))
    loss = jnp.mean(self.distance.fn(estimate, reference, (ctx.frozen or {}).get('distance')))
    return loss, {'ctm_loss': loss, 'heun_steps': k.astype(jnp.float32)}

  # --- The GAN term (gan_weight > 0). ---

  def logits(self, head, frozen, images, y=None):
    """The head on the frozen teacher's bottleneck of (clean) images [B, ...], read at level gan_sigma."""
    sigma = jnp.full(images.shape[:1], self.hparams.gan_sigma)
    return self.discriminator.logits(head, frozen['teacher'], images, sigma, y)

  def gan_generator_loss(self, params, batch, key, ctx):
    """The generator's side on the CTM estimate itself (the official `get_gan_fake`): -mean l(estimate)."""
    estimate, _ = self.estimate(params, batch, key, ctx)
    loss = self.discriminator.loss.generator(self.logits(ctx.nets['head'], ctx.frozen, estimate, batch.get('y')))
    return loss, {'gan_generator_loss': loss}

  def discriminator_loss(self, trained, batch, key, ctx):
    """Hinge: mean relu(1 + l(fake)) + mean relu(1 - l(real)), the fake a fresh CTM estimate without gradient."""
    fake, _ = self.estimate(ctx.nets['student'], batch, key, ctx)
    y = batch.get('y')
    l_fake = self.logits(trained['head'], ctx.frozen, jax.lax.stop_gradient(fake), y)
    l_real = self.logits(trained['head'], ctx.frozen, batch['x'], y)
    loss = self.discriminator.loss.discriminator(l_real, l_fake)
    return loss, {'discriminator_loss': loss, 'real_logit': jnp.mean(l_real), 'fake_logit': jnp.mean(l_fake)}

  def dsm_sigma(self, key, n):
    """DSM's levels [n]: the first half log-normal, the rest the Karras map of U[0, dsm_max_ramp] from sigma_max."""
    hp = self.hparams
    normal_key, ramp_key = jax.random.split(key)
    lognormal = timesteps.sample_log_normal(normal_key, n, hp.dsm_p_mean, hp.dsm_p_std)
    ramp = jax.random.uniform(ramp_key, (n,), maxval=hp.dsm_max_ramp)
    karras = timesteps.karras_map(1.0 - ramp, hp.sigma_min, hp.sigma_max, hp.rho)
    return jnp.where(jnp.arange(n) < n // 2, lognormal, karras)

  def dsm_loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    sigma_key, eps_key, label_key, net_key = jax.random.split(key, 4)
    y = self.conditioning.drop(label_key, y, hp.label_dropout)
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

  def gradients(self, params, batch, key, ctx, gan=False):
    """{'student': grad L_CTM + dsm_weight w grad L_DSM (+ gan_weight lambda grad L_GAN with `gan`)}, metrics; with
    the adaptive w = clip(||grad L_CTM|| / (||grad L_DSM|| + 1e-4), 0, 1e4) and lambda = clip(||grad L_CTM|| /
    (||grad L_GAN|| + 1e-4), 0.01, 10), each term's gradient taken on its own; per group of method.adaptive_group
    samples, the groups' results averaged (`accumulate`, one k for all). Without either: the gradient of `loss`."""
    hp, params = self.hparams, params['student']
    micro = self.config.train.micro_batches
    if not hp.adaptive_dsm and not gan:
      grads, metrics = accumulate_gradients(lambda p, b, k: self.loss(p, b, k, ctx), params, batch, key, micro)
      return {'student': grads}, metrics
    size = batch['x'].shape[0]
    groups = size // hp.adaptive_group if hp.adaptive_group else 1
    if groups == 1:
      grads, metrics = self.weighted_gradients(params, batch, key, ctx, gan, micro)
    else:
      k = self.draw_heun_steps(jax.random.fold_in(key, groups))
      grads, metrics = accumulate(lambda p, b, group_key: self.weighted_gradients(p, b, group_key, ctx, gan, 1, k),
                                  params, batch, key, groups)
    return {'student': grads}, metrics

  def weighted_gradients(self, params, batch, key, ctx, gan, micro, k=None):
    """`gradients` of one group: the terms' gradients (each over `micro` micro-batches) and their adaptive
    combination; k: the teacher's Heun steps, if drawn for several groups."""
    hp = self.hparams
    ctm_key, dsm_key, gan_key = jax.random.split(key, 3)
    term = lambda loss: lambda p, b, k: loss(p, b, k, ctx)
    ctm_grads, metrics = accumulate_gradients(lambda p, b, key: self.ctm_loss(p, b, key, ctx, k), params, batch,
                                              ctm_key, micro)
    dsm_grads, dsm_metrics = accumulate_gradients(term(self.dsm_loss), params, batch, dsm_key, micro)
    ctm_norm = optax.tree.norm(ctm_grads)
    weight = hp.dsm_weight * (jnp.clip(ctm_norm / (optax.tree.norm(dsm_grads) + 1e-4), 0.0, 1e4)
                              if hp.adaptive_dsm else 1.0)
    grads = jax.tree.map(lambda a, b: a + weight * b, ctm_grads, dsm_grads)
    loss = metrics['ctm_loss'] + weight * dsm_metrics['dsm_loss']
    metrics = {**metrics, **dsm_metrics, 'dsm_adaptive_weight': weight / hp.dsm_weight}
    if gan:
      # The official's gan_loss is the estimate's, sharing the CTM term's draw; here its own draw (gan_key).
      gan_grads, gan_metrics = accumulate_gradients(term(self.gan_generator_loss), params, batch, gan_key, micro)
      gan_weight = hp.gan_weight * jnp.clip(ctm_norm / (optax.tree.norm(gan_grads) + 1e-4), 0.01, 10.0)
      grads = jax.tree.map(lambda a, b: a + gan_weight * b, grads, gan_grads)
      loss = loss + gan_weight * gan_metrics['gan_generator_loss']
      metrics = {**metrics, **gan_metrics, 'gan_adaptive_weight': gan_weight / hp.gan_weight}
    return grads, {'loss': loss, **metrics}

  # --- Sampling. ---

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None, gamma=None):
    """The SamplingPlan of `sample` with `nfe` network calls: the jumps over the descending (jumps + 1)-point Karras
    grid from sigma_max as arrays (a jump calls twice under CFG), the CFG scale and gamma."""
    self.check_no_ode_options(solver, grid)
    hp = self.hparams
    guidance = hp.guidance if guidance is None else guidance
    jumps = sampling.drift_evaluations(nfe, True if conditional else None, guidance)
    if jumps < 1:
      raise ValueError(f'nfe must be at least 1, got {nfe}')
    gamma = hp.sample_gamma if gamma is None else gamma
    if not 0.0 <= gamma <= 1.0:
      raise ValueError(f'gamma must be in [0, 1], got {gamma}')
    steps = sampling.consistency_plan([timesteps.karras_map(1.0 - i / jumps, hp.sigma_min, hp.sigma_max, hp.rho)
                                       for i in range(jumps + 1)])
    return sampling.SamplingPlan(steps, guidance=guidance, gamma=gamma)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Gamma-sampling along `plan`: its jumps over the Karras grid from sigma_max (CFG: two calls a jump)."""
    hp = self.hparams
    gamma = plan.gamma
    noise_key, walk_key = jax.random.split(key)
    x = hp.sigma_max * (jax.random.normal(noise_key, (n,) + self.data_shape) if noise is None else noise)
    sigmas, jumps = jnp.asarray(plan.steps.times), plan.steps.count - 1
    g = self.conditioning.guided(lambda x, t, s, y: self.g(params, x, t, s, y), labels, plan.guidance)

    def jump(i, x):
      last = i == jumps - 1
      sigma, sigma_next = sigmas[i], sigmas[i + 1]
      # Jump to s, then (gamma > 0, not the last jump) re-noise from s up to the next grid level.
      s = jnp.where(last, sigma_next, (1 - gamma**2) ** 0.5 * (sigma_next - hp.sigma_min) + hp.sigma_min)
      ratio = s / sigma
      x = ratio * x + (1 - ratio) * g(x, jnp.full((n,), sigma), jnp.full((n,), s))
      if gamma > 0:
        fresh = jax.random.normal(jax.random.fold_in(walk_key, i), x.shape, x.dtype)
        x = x + jnp.where(last, 0.0, jnp.sqrt(jnp.maximum(sigma_next**2 - s**2, 0.0))) * fresh
      return x
    return jax.lax.fori_loop(0, jumps, jump, x)
