"""LCM (methods/lcm.py): the loss equals diffusers' training loop (train_lcm_distill_sd_wds.py) written out in its own
DDPM variables, on the same draws; the sampler's timesteps are LCMScheduler's; a student that takes w reads it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import nn, paths
from fewstep_jax.config_base import base_config
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method
from fewstep_jax.methods.lcm import lcm_timesteps

SHAPE = (2,)
CLASSES = 3


def _params(config, seed):
  module = nn.build_network(config.network, num_classes=CLASSES)
  shapes = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def _method(**hparams):
  config = base_config(method='lcm', network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1, time_scale=1e-3)  # DDPM timesteps in [0, 1000) -> [0, 1).
  config.method.update(teacher='in memory', w_min=1.0, w_max=3.0, **hparams)
  teacher_params = _params(config, 1)
  teacher = Teacher(network=config.network, readout=paths.readout('sd'), data_shape=SHAPE, num_classes=CLASSES,
                    params=teacher_params)
  method = build_method(config, data_shape=SHAPE, num_classes=CLASSES, inputs={'teacher': teacher})
  return method, teacher_params


def _official_loss(method, student, target, teacher, x, y, key, distance='l2', huber_c=0.001):
  """The diffusers loop's steps 2 to 10 for an epsilon U-Net, in its DDPM variables (alpha = sqrt(abar), sigma =
  sqrt(1 - abar)), on the method's draws."""
  raw = method.apply
  betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
  abar = jnp.asarray(np.cumprod(1.0 - betas), jnp.float32)
  alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  index_key, noise_key, w_key = jax.random.split(key, 3)
  index = jax.random.randint(index_key, (x.shape[0],), 0, 50)
  start = (index + 1) * 20 - 1
  end = jnp.maximum(start - 20, 0)

  def scalings(t):
    scaled = 10.0 * t.astype(jnp.float32)
    return (0.25 / (scaled**2 + 0.25))[:, None], (scaled / jnp.sqrt(scaled**2 + 0.25))[:, None]

  def eps(params, z, t, labels):
    return raw(params, z, t.astype(jnp.float32), None, labels)

  def x0_of(e, z, t):
    return (z - sigma[t][:, None] * e) / alpha[t][:, None]

  noise = jax.random.normal(noise_key, x.shape, x.dtype)
  w = (3.0 - 1.0) * jax.random.uniform(w_key, (x.shape[0],)) + 1.0
  z = alpha[start][:, None] * x + sigma[start][:, None] * noise
  c_skip_start, c_out_start = scalings(start)
  model_pred = c_skip_start * z + c_out_start * x0_of(eps(student, z, start, y), z, start)
  cond, uncond = eps(teacher, z, start, y), eps(teacher, z, start, jnp.full_like(y, CLASSES))
  pred_x0 = x0_of(cond, z, start) + w[:, None] * (x0_of(cond, z, start) - x0_of(uncond, z, start))
  pred_noise = cond + w[:, None] * (cond - uncond)
  prev_alpha = jnp.where(index > 0, alpha[end], alpha[0])[:, None]  # DDIMSolver's alpha_cumprods_prev.
  x_prev = prev_alpha * pred_x0 + jnp.sqrt(1.0 - prev_alpha**2) * pred_noise
  c_skip, c_out = scalings(end)
  target_pred = c_skip * x_prev + c_out * x0_of(eps(target, x_prev, end, y), x_prev, end)
  if distance == 'l2':
    return jnp.mean((model_pred - target_pred) ** 2)
  return jnp.mean(jnp.sqrt((model_pred - target_pred) ** 2 + huber_c**2) - huber_c)


@pytest.mark.parametrize('distance', ['l2', 'huber'])
def test_the_loss_is_diffusers_training_loop(distance):
  method, teacher_params = _method(parameterization='sd', distance=distance)
  state = method.init(jax.random.PRNGKey(0), {'teacher': teacher_params})
  # The student starts from the teacher; perturb the student and the target apart so that every term counts.
  student = jax.tree.map(lambda p: p + 0.05, state.nets['student'].params)
  target = jax.tree.map(lambda p: p - 0.05, state.extra['target'])
  state = state.replace(nets={'student': state.nets['student'].replace(params=student)},
                        extra={**state.extra, 'target': target})
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((64,) + SHAPE), jnp.float32)
  y = jnp.asarray(rng.integers(0, CLASSES, 64), jnp.int32)
  key = jax.random.PRNGKey(5)
  loss, metrics = jax.jit(method.loss)(student, {'x': x, 'y': y}, key, method.context(state))
  want = jax.jit(lambda *args: _official_loss(method, *args, distance=distance))(student, target, teacher_params, x, y,
                                                                                   key)
  np.testing.assert_allclose(loss, want, rtol=2e-4)
  assert float(want) > 1e-4 and 1.0 <= float(metrics['w']) <= 3.0


def test_the_sampler_steps_on_lcmschedulers_timesteps():
  # diffusers 0.42.1 LCMScheduler(beta_schedule='scaled_linear').set_timesteps(n).timesteps.
  assert lcm_timesteps(1, 50) == [999]
  assert lcm_timesteps(2, 50) == [999, 499]
  assert lcm_timesteps(4, 50) == [999, 759, 499, 259]
  assert lcm_timesteps(8, 50) == [999, 879, 759, 639, 499, 379, 259, 139]
  method, _ = _method()
  sigmas = paths.ddpm_scaled_linear_sigmas()
  np.testing.assert_allclose(method.sampler.schedule(4), sigmas[[999, 759, 499, 259]], rtol=1e-6)
  np.testing.assert_allclose(method.timesteps(jnp.asarray(sigmas[[0, 259, 999]], jnp.float32)), [0, 259, 999])
  c_skip, c_out = method.boundary_scalings(jnp.asarray(sigmas[[0, 19]], jnp.float32))
  np.testing.assert_allclose(c_skip, [1.0, 0.25 / (190**2 + 0.25)], rtol=1e-5)
  np.testing.assert_allclose(c_out, [0.0, 190 / np.sqrt(190**2 + 0.25)], rtol=1e-6)
  with pytest.raises(ValueError, match='LCM samples with 1 to 50 steps'):
    lcm_timesteps(51, 50)
