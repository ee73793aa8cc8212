"""Optimizers and learning-rate schedules from config, as registries (no string if/elif chains)."""
import jax.numpy as jnp
import ml_collections
import optax

from fewstep_jax.errors import ConfigError

OPTIMIZERS = {
    'adam': lambda lr, c: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps),
    'adamw': lambda lr, c: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay),
    'radam': lambda lr, c: optax.radam(lr, b1=c.b1, b2=c.b2, eps=c.eps),
}


def _warmup(c):
  return optax.linear_schedule(0.0, c.lr, max(c.warmup_steps, 1))


LR_SCHEDULES = {
    'constant': lambda c, total: optax.constant_schedule(c.lr),
    'warmup': lambda c, total: optax.join_schedules(
        [_warmup(c), optax.constant_schedule(c.lr)], [c.warmup_steps]),
    'cosine': lambda c, total: optax.warmup_cosine_decay_schedule(
        0.0, c.lr, c.warmup_steps, max(total, c.warmup_steps + 1), end_value=c.lr * c.final_lr_fraction),
    # EDM2 / iCT: lr min(step / warmup, 1) / sqrt(max(step / decay_ref_steps, 1)), both counted from step 0; no
    # ramp at all for warmup_steps = 0 (EDM2's rampup 0, ECT's ImageNet run), so the first update is not lr 0.
    'inverse_sqrt': lambda c, total: lambda step: c.lr * (jnp.minimum(step / c.warmup_steps, 1.0)
                                                          if c.warmup_steps else 1.0)
    / jnp.sqrt(jnp.maximum(step / max(c.decay_ref_steps, 1), 1.0)),
}


# The schedules whose shape the run's length sets: resuming with another train.num_steps would rescale the rest.
LR_SCHEDULES_OVER_TOTAL = ('cosine',)


def spans_the_run(optim_config) -> bool:
  """Whether the schedule of this optimizer block runs over train.num_steps (so that it defines the run)."""
  return optim_config.schedule in LR_SCHEDULES_OVER_TOTAL


def optim_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='adam', lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      schedule='constant', warmup_steps=0, final_lr_fraction=0.0, decay_ref_steps=1000,
      grad_clip=0.0,  # global-norm clipping; 0 disables it.
      ema_rates=(0.999,),
      ema_stds=(),  # Power-function EMA copies (EDM2's), by relative width sigma_rel: named 'phema_<std>'.
  ))


def make_schedule(optim_config, total_steps: int, count_offset: int = 0):
  """step -> learning rate, for an optimizer that makes `total_steps` updates, its schedule read at
  step + count_offset (a run that continues another run's counters: TCM's stage 2)."""
  if optim_config.schedule not in LR_SCHEDULES:
    raise ConfigError(f'unknown lr schedule {optim_config.schedule!r}; known: {sorted(LR_SCHEDULES)}')
  schedule = LR_SCHEDULES[optim_config.schedule](optim_config, total_steps)
  return schedule if not count_offset else lambda step: schedule(step + count_offset)


def make_optimizer(optim_config, total_steps: int, count_offset: int = 0) -> optax.GradientTransformation:
  """Builds clip -> optimizer(schedule) (see make_schedule). Unknown names are errors that list the known ones."""
  if optim_config.name not in OPTIMIZERS:
    raise ConfigError(f'unknown optimizer {optim_config.name!r}; known: {sorted(OPTIMIZERS)}')
  schedule = make_schedule(optim_config, total_steps, count_offset)
  chain = []
  if optim_config.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(optim_config.grad_clip))
  chain.append(OPTIMIZERS[optim_config.name](schedule, optim_config))
  return optax.chain(*chain)
