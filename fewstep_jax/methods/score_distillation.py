"""Distribution matching and score distillation: what DMD2, DMD, Diff-Instruct, SiD, SIM, TDM and f-distill share.
The objectives themselves are in dmd.py, sid.py, tdm.py and f_distill.py.

Three roles (methods/roles.py), each its own network state:
  student G   the few-step generator (its own optimizer, config.optim, and EMA copies);
  critic      the fake score: a denoiser of G's samples (its own optimizer, method.critic_optim);
  head        with method.gan_weight > 0, a GAN discriminator (methods/gan.py) on the bottleneck features of the critic
              (DMD2's official code) or of the frozen teacher (gan_features='teacher', FastGen's), updated with the
              critic by the same optimizer;
  teacher     state.frozen['teacher'], the real score, frozen.
All three are the teacher's network read through the teacher's readout (inputs.Teacher), as EDM denoisers
D(x_sigma; sigma, y) through the exact conversions of paths.py: an EDM teacher as is, a flow-matching teacher's
velocity converted. So the student and the critic start from the teacher's weights (at step 0 the critic equals the
teacher and every matching gradient is zero), and any teacher serves, a trained run or imported parameters. The
network config must be the teacher's.

Generator. One step: x = D_student(sigma_init z; sigma_init, y), z ~ N(0, I). A k-step student (student_sigmas,
descending, after sigma_init) alternates D_student with `sampling.consistency_step` (fresh noise with
sample_gamma = 1, DMD2's multistep generator; the deterministic DDIM move with 0, TDM's). With
backward_simulation a training step draws j ~ U{0..k-1}, runs the student j steps from noise without gradient and
trains its prediction at the j-th level, so it learns on its own intermediate states (DMD2).

Critic. The denoising loss w(sigma) ||D_critic(sg(x) + sigma n; sigma) - sg(x)||^2 on G's samples, with sigma over
the 1000-level Karras grid (DMD2) or log-normal (SiD) and w from CRITIC_WEIGHTS (`method.critic_weighting`: EDM's
lambda(sigma), as tianweiy/DMD2's fake-score loss, or 1, the plain x0 mean squared error of FastGen's
`denoising_score_matching_loss` for EDM networks; each method takes its own reference's), plus with a GAN head the
critic-side losses softplus(l(fake)) + softplus(-l(real)) on real and generated images noised at a critic level.

Schedule. The critic (and head) update every step and the student on steps where step % student_every == 0
(DMD2's two time-scale rule with 5; 1:1 elsewhere), in the order critic_first says: roles.Schedule.every; with
critic_on_student_steps=False (FastGen's rule) the critic updates only on the steps the student does not. The
student's learning-rate schedule and EMA count its own updates. `student_update` and `critic_update` (one update's
new state) are the units experiments/bench.py compiles and counts network passes for.
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.distances import edm_weight, per_sample_mean
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import (EDM_SIGMA_DEFAULTS, TEACHER_DEFAULTS, ConsistencySampled, ConsistencySampler,
                                     StepContext, batch_rows, check_choice, check_eval_params, require_teacher,
                                     teacher_model)
from fewstep_jax.methods.gan import Discriminator
from fewstep_jax.methods.roles import MultiNetworkMethod, Schedule, loss_update
from fewstep_jax.train.optim import make_optimizer, optim_defaults, spans_the_run
from fewstep_jax.train.trained import TrainedNetwork


def karras_grid_sigma(key, n: int, hp, lo_fraction: float = 0.0, hi_fraction: float = 1.0):
  """sigma [n]: a uniform index among int(lo_fraction N) .. int(hi_fraction N), both included and at most N - 1, of
  the ascending N-level Karras grid (N = hp.num_train_sigmas), as DMD2 picks its levels (main/edm/edm_guidance.py:
  randint(min_step, min(max_step + 1, N)); 20..980 for the matching levels, 0..999 for the critic's)."""
  num = hp.num_train_sigmas
  lo = int(lo_fraction * num)
  index = jax.random.randint(key, (n,), lo, max(min(int(hi_fraction * num) + 1, num), lo + 1))
  return timesteps.karras_sigma_at(index, num, hp.sigma_min, hp.sigma_max, hp.rho, ascending=True)


# Whose bottleneck the GAN head reads: (critic parameters, frozen) -> the parameters of that network.
GAN_FEATURES = {
    'critic': lambda critic, frozen: critic,
    'teacher': lambda critic, frozen: frozen['teacher'],
}

# Noise levels of the critic's denoising loss (and of the GAN's noised inputs): (key, n, hparams) -> sigma [n].
CRITIC_SIGMAS = {
    'karras_grid': lambda key, n, hp: karras_grid_sigma(key, n, hp),                        # DMD2: all levels.
    'lognormal': lambda key, n, hp: timesteps.sample_log_normal(key, n, hp.p_mean, hp.p_std),  # SiD: EDM's.
}


# The per-sample weight of the critic's denoising loss: (sigma [B], hparams) -> w [B].
CRITIC_WEIGHTS = {
    'edm': lambda sigma, hp: edm_weight(sigma, hp.sigma_data),   # lambda(sigma): tianweiy/DMD2, SiD.
    'uniform': lambda sigma, hp: jnp.ones_like(sigma),           # The x0 MSE: FastGen's DMD2 / f-distill.
}


def critic_optim_defaults() -> ml_collections.ConfigDict:
  """The critic's optimizer block: config.optim's fields without EMA (the critic is never sampled from)."""
  config = optim_defaults()
  del config['ema_rates']
  del config['ema_stds']
  return config


class ScoreDistillation(ConsistencySampled, MultiNetworkMethod):
  """Student, critic (and GAN head) trained against a frozen teacher; subclasses write `generator_loss`.

  Subclass interface:
    generator_loss(x, y, key, ctx, x_in=None, sigma_in=None) -> (scalar, metrics): the student's loss on its
      samples x [B, ...] (with gradient into the student) generated from x_in at sigma_in [B], labels y;
      ctx.frozen holds the teacher, ctx.nets['critic'] the critic's parameters (no gradient flows into them).
    critic_sigma(key, n) and critic_weight(sigma) may be overridden for another fake-score loss.
    gan_in_generator_loss: True where generator_loss adds the GAN's generator side itself (at its own points).
    running_statistics(): {name: initial array} kept in state.extra across student updates; the generator loss
      reads them from ctx.extra and returns their new values among its metrics under the same names.
  """
  gan_in_generator_loss = False

  def running_statistics(self) -> dict:
    return {}

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        **TEACHER_DEFAULTS,
        **EDM_SIGMA_DEFAULTS,
        num_train_sigmas=1000,     # The Karras grid of the matching and critic levels (DMD2).
        sigma_init=80.0,           # The generator's input noise level: x = G(sigma_init z).
        student_sigmas=(),         # Later levels of a multi-step student (descending, below sigma_init).
        sample_gamma=1.0,          # Multi-step moves: 1 re-noises x0 with fresh noise, 0 is the DDIM move.
        backward_simulation=True,  # Multi-step: train on the student's own intermediate states.
        student_every=1,           # The student updates on steps where step % student_every == 0.
        critic_first=True,         # Within a step: critic update, then student update (False: the reverse).
        critic_on_student_steps=True,  # False: the critic skips the student's steps (FastGen's get_optimizers).
        critic_optim=critic_optim_defaults(),
        critic_sigmas='karras_grid',  # Levels of the critic's denoising loss: CRITIC_SIGMAS.
        critic_weighting='edm',    # The critic's per-sample loss weight: CRITIC_WEIGHTS.
        p_mean=-1.2,               # ln sigma ~ N(p_mean, p_std^2) for critic_sigmas='lognormal'.
        p_std=1.2,
        gan_weight=0.0,            # > 0: a GAN head on the critic; its critic-side loss weight (DMD2: 1e-2).
        gan_generator_weight=0.0,  # The generator-side GAN loss weight (DMD2: 3e-3).
        gan_head_width=128,
        gan_features='critic',     # The head reads the bottleneck of: 'critic' (DMD2) | 'teacher' (frozen).
        guidance=1.0,              # Sampling CFG of the student (the teacher's guidance is distilled in).
    ))

  @classmethod
  def run_defining_fields(cls, config):
    return ('train.num_steps',) if spans_the_run(config.method.critic_optim) else ()

  @classmethod
  def reads_data_images(cls, config) -> bool:
    """Only the critic's GAN term (gan_weight > 0) sees data; the rest reads the teacher and the student's samples."""
    return config.method.gan_weight > 0

  @classmethod
  def inputs(cls, config):
    # The student and critic start from the teacher's parameters, so the network must be the teacher's.
    return {'teacher': TeacherInput(config.method.teacher, same_network=True)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    check_choice(hp, 'critic_sigmas', CRITIC_SIGMAS)
    if 'critic_weighting' in hp:  # TDM weights its own critic target and has no such field.
      check_choice(hp, 'critic_weighting', CRITIC_WEIGHTS)
    check_choice(hp, 'gan_features', GAN_FEATURES)
    if hp.student_every < 1:
      raise ValueError(f'method.student_every must be at least 1, got {hp.student_every}')
    levels = (hp.sigma_init,) + tuple(hp.student_sigmas)
    if any(b >= a for a, b in zip(levels, levels[1:])) or min(levels) <= 0:
      raise ValueError(f'method.sigma_init and method.student_sigmas must be positive and descending, got {levels}')
    teacher = require_teacher(self.given_inputs, self.name)
    self.use_gan = hp.gan_weight > 0 or hp.gan_generator_weight > 0
    micro = config.train.micro_batches
    # The critic and the head update together, by one loss; the student by its own.
    self.updates = {'critic': loss_update(('critic', 'head') if self.use_gan else ('critic',), self.critic_loss,
                                          micro),
                    'student': loss_update(('student',),
                                           lambda nets, *args: self.student_loss(nets['student'], *args), micro,
                                           after=self.keep_statistics)}
    if hp.critic_on_student_steps:
      self.schedule = Schedule.every(hp.student_every, always=('critic',), then=('student',),
                                     then_first=not hp.critic_first)
    elif hp.student_every < 2:
      raise ValueError('method.critic_on_student_steps=False leaves the critic the steps without a student update: '
                       f'set method.student_every >= 2 (got {hp.student_every})')
    else:
      self.schedule = Schedule([('student',), ('critic',)], pattern=(0,) + (1,) * (hp.student_every - 1))
    student = TrainedNetwork.from_config(config, num_classes=self.num_classes,
                                         num_updates=self.role_num_updates('student'))
    critic_tx = make_optimizer(hp.critic_optim, self.role_num_updates('critic'))
    self.roles = {'student': student,
                  'critic': TrainedNetwork(student.module, critic_tx, param_dtype=student.param_dtype)}
    self.student = student
    check_eval_params(config)
    self.path = paths.EDMPath()
    self.levels = levels
    # The three roles as EDM denoisers, each read through the teacher's readout.
    self.readout = teacher.readout
    self.denoise = teacher.prediction(self.path, 'x0', apply=student.apply)
    self.teacher_x0 = teacher_model(teacher, self.path, 'x0', hp.teacher_guidance, self.conditioning)
    if self.use_gan:
      if self.readout.name not in paths.NETWORK_INPUTS:
        raise ValueError(f'the teacher ({teacher.source}) is read as {self.readout.name!r}, whose network inputs are '
                         'not known, so the GAN head cannot read its bottleneck: distil an edm, flow_matching or '
                         'TrigFlow (sct) teacher, or set --config.method.gan_weight=0 '
                         '--config.method.gan_generator_weight=0.')
      self.discriminator = Discriminator(student.module, self.readout, self.path, hidden=hp.gan_head_width,
                                         loss='softplus')
      self.roles['head'] = TrainedNetwork(self.discriminator.head, critic_tx)
    # The student's few-step sampler.
    self.sampler = ConsistencySampler(self.consistency_fn, self.path, start_time=hp.sigma_init,
                                      start_scale=hp.sigma_init, intermediate_times=hp.student_sigmas,
                                      data_shape=self.data_shape, conditioning=self.conditioning, guidance=hp.guidance,
                                      gamma=hp.sample_gamma)

  def real_denoiser(self, frozen, y):
    """(x_sigma, sigma) -> the teacher's D [B, ...] at labels y, CFG-guided with method.teacher_guidance."""
    return self.teacher_x0(frozen['teacher'], y)

  def consistency_fn(self, params, x, sigma, y=None, key=None):
    del key
    return self.denoise(params, x, sigma, y)

  def trained_nfes(self, conditional):
    """The student's levels, sigma_init and student_sigmas: one call each (two under CFG)."""
    return (len(self.levels) * (2 if conditional and self.hparams.guidance != 1.0 else 1),)

  # --- State. ---

  def init_params(self, key, frozen):
    """Student and critic start from frozen['teacher']; without one (shapes only) from a fresh initialisation."""
    init_key, head_key = jax.random.split(key)
    start = frozen['teacher'] if 'teacher' in frozen else self.student.init_params(init_key, self.data_shape)
    start = jax.tree.map(lambda p: p.astype(self.student.param_dtype), start)
    params = {'student': start, 'critic': start}
    if self.use_gan:
      params['head'] = self.discriminator.init_head(head_key, start, self.data_shape, self.conditioning)
    return params

  def init_extra(self, frozen, params):
    del frozen, params
    return self.running_statistics()

  def keep_statistics(self, state, metrics):
    """After a student update: the running statistics the generator loss returned go to state.extra, not the log."""
    kept = {name: metrics.pop(name) for name in self.running_statistics()}
    return state.replace(extra={**state.extra, **kept}), metrics

  # --- The generator. ---

  def generator_input(self, params, key, n: int, y):
    """(x_in [n, ...], sigma_in [n]): where the trained student call starts. One step: sigma_init z. Multi-step with
    backward simulation: j ~ U{0..k-1} student steps from sigma_init z without gradient (a while loop: exactly j
    student calls), then the j-th level."""
    noise_key, steps_key, move_key = jax.random.split(key, 3)
    x = self.levels[0] * jax.random.normal(noise_key, (n,) + self.data_shape)
    levels = jnp.asarray(self.levels, jnp.float32)
    if len(self.levels) == 1 or not self.hparams.backward_simulation:
      return x, jnp.full((n,), levels[0])
    steps = jax.random.randint(steps_key, (), 0, len(self.levels))
    params = jax.lax.stop_gradient(params)

    def student_move(i, x):
      sigma = jnp.full((n,), levels[i])
      x0 = self.denoise(params, x, sigma, y)
      noise = jax.random.normal(jax.random.fold_in(move_key, i), x.shape, x.dtype)
      return sampling.consistency_step(self.path, x, x0, sigma, levels[i + 1], noise, self.hparams.sample_gamma)

    x = jax.lax.fori_loop(0, steps, student_move, x)
    return x, jnp.full((n,), levels[steps])

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    raise NotImplementedError

  def logits_at(self, nets, frozen, x_sigma, sigma, y=None):
    """l [B]: the head (nets['head']) on the bottleneck of the network `method.gan_features` names, at x_sigma
    and sigma [B] (gradient flows into x_sigma and the head; the caller stops what it must)."""
    features = GAN_FEATURES[self.hparams.gan_features](nets['critic'], frozen)
    return self.discriminator.logits(nets['head'], features, x_sigma, sigma, y)

  def gan_logits(self, nets, frozen, x, y, key):
    """l [B]: the head's logits of x noised at a critic level."""
    sigma_key, noise_key = jax.random.split(key)
    sigma = self.critic_sigma(sigma_key, x.shape[0])
    x_noisy = self.path.noisy(x, jax.random.normal(noise_key, x.shape, x.dtype), sigma)
    return self.logits_at(nets, frozen, x_noisy, sigma, y)

  def student_loss(self, params, batch, key, ctx=StepContext()):
    """The generator's loss; ctx.nets holds the critic's (and head's) parameters."""
    y = batch.get('y')
    input_key, loss_key, gan_key = jax.random.split(key, 3)
    x_in, sigma_in = self.generator_input(params, input_key, batch_rows(batch), y)
    x = self.denoise(params, x_in, sigma_in, y)
    loss, metrics = self.generator_loss(x, y, loss_key, ctx, x_in=x_in, sigma_in=sigma_in)
    if self.hparams.gan_generator_weight > 0 and not self.gan_in_generator_loss:
      gan = self.discriminator.loss.generator(self.gan_logits(ctx.nets, ctx.frozen, x, y, gan_key))
      loss = loss + self.hparams.gan_generator_weight * gan
      metrics = dict(metrics, generator_gan_loss=gan)
    return loss, dict(metrics, loss=loss)

  # --- The critic. ---

  def critic_sigma(self, key, n: int):
    return CRITIC_SIGMAS[self.hparams.critic_sigmas](key, n, self.hparams)

  def critic_weight(self, sigma):
    return CRITIC_WEIGHTS[self.hparams.critic_weighting](sigma, self.hparams)

  def critic_loss(self, trained, batch, key, ctx=StepContext()):
    """The fake-score loss on sg(G's samples) (+ the GAN's critic side); trained = {'critic', 'head'?}, the
    student's parameters in ctx.nets['student']."""
    y, n = batch.get('y'), batch_rows(batch)
    student = ctx.nets['student']
    input_key, sigma_key, noise_key, fake_key, real_key = jax.random.split(key, 5)
    x_in, sigma_in = self.generator_input(student, input_key, n, y)
    x = jax.lax.stop_gradient(self.denoise(student, x_in, sigma_in, y))
    sigma = self.critic_sigma(sigma_key, n)
    x_noisy = self.path.noisy(x, jax.random.normal(noise_key, x.shape, x.dtype), sigma)
    denoised = self.denoise(trained['critic'], x_noisy, sigma, y)
    loss = jnp.mean(self.critic_weight(sigma) * per_sample_mean(jnp.square(denoised - x)))
    metrics = {'critic_loss': loss}
    if self.hparams.gan_weight > 0:
      fake = self.gan_logits(trained, ctx.frozen, x, y, fake_key)
      real = self.gan_logits(trained, ctx.frozen, batch['x'], y, real_key)
      gan = self.discriminator.loss.discriminator(real, fake)
      loss = loss + self.hparams.gan_weight * gan
      metrics = dict(metrics, critic_gan_loss=gan, real_logit=jnp.mean(real), fake_logit=jnp.mean(fake))
    return loss, metrics

  # --- One update each (experiments/bench.py compiles them alone). ---

  def student_update(self, state, batch, key):
    """The state after one student update (generator gradient, optimizer step, EMA)."""
    return self.run_update('student', state, batch, key)[0]

  def critic_update(self, state, batch, key):
    """(state after one critic (and head) update, its metrics)."""
    return self.run_update('critic', state, batch, key)
