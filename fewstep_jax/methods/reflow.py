"""Rectified flow reflow, one-step distillation and 2-RF++ (Liu et al. 2023; Lee et al. 2024).

Stage 1 (1-RF) is flow matching. Stage 2 trains on couplings (eps, x̂) of the 1-RF ODE, generated once with `python -m
fewstep_jax.tools.generate_pairs` and read as the 'reflow_pairs' dataset: the straight path between the coupled pair,
z_t = (1 - t) x̂ + t eps, with target velocity eps - x̂ (2-RF). Because the pairs are deterministic, the
learned flow is straighter and few Euler steps suffice.

- One-step distillation: `time_sampler='one_step'` trains only t = 1, i.e. x̂ ≈ eps - v(eps, 1).
- 2-RF++ (Lee et al. 2024): `time_sampler='u_shaped'` (p(t) ∝ e^(a t) + e^(a (1 - t)), a = 4),
  `distance='pseudo_huber'` (sqrt(||v - v_tgt||^2 + c^2) - c with c = 0.00054 dim, as the official
  sangyun884/rfpp train.py `loss_type='huber'`, which also divides by dim, a constant; the paper's best adds LPIPS
  on the x prediction, not offered here), and `init_from` = the 1-RF workdir
  (same network config). Our pseudo-Huber is on the velocity; on the x prediction z_t - t v it is the same up
  to the factor t inside the root.
- Minibatch couplings do not apply (the pairs are the coupling). Labels: the class the teacher drew x̂ for,
  with label dropout for CFG. Sampling: Euler with `nfe` steps (or Heun, via method.solver).
"""
import math

import jax
import jax.numpy as jnp

from fewstep_jax import distances, timesteps
from fewstep_jax.methods import flow_matching
from fewstep_jax.methods.base import StepContext, check_choice
from fewstep_jax.methods.registry import register

RFPP_HUBER_C_PER_DIM = 0.00054  # 2-RF++'s c = 0.00054 dim (iCT's constant times sqrt(dim)).

REFLOW_TIME_SAMPLERS = dict(
    flow_matching.FLOW_TIME_SAMPLERS,
    u_shaped=lambda key, n, hp: timesteps.sample_u_shaped(key, n, hp.u_shape_a),
    one_step=lambda key, n, hp: jnp.ones((n,)))


@register('reflow')
class Reflow(flow_matching.FlowMatching):
  time_samplers = REFLOW_TIME_SAMPLERS
  uses_coupling = False   # The stored pairs are the coupling.
  starts_from_run = True

  @classmethod
  def defaults(cls):
    config = flow_matching.FlowMatching.defaults()
    config.time_sampler = 'uniform'     # + 'u_shaped' (2-RF++), 'one_step' (distillation at t = 1).
    config.u_shape_a = 4.0
    config.distance = 'l2'              # 'l2' (mean over dims) | 'pseudo_huber' (2-RF++).
    config.huber_c = -1.0               # < 0: 2-RF++'s 0.00054 dim.
    config.init_from = ''               # Workdir of the 1-RF run to start from (2-RF++).
    config.solver = 'euler'
    del config['coupling']
    return config

  def __init__(self, config, **build):
    check_choice(config.method, 'distance', ('l2', 'pseudo_huber'))
    if config.data.name != 'reflow_pairs':
      raise ValueError('reflow trains on stored couplings: set --config.data.name=reflow_pairs and '
                       '--config.data.pairs_dir=DIR (generate DIR with python -m fewstep_jax.tools.generate_pairs)')
    super().__init__(config, **build)
    huber_c = self.hparams.huber_c
    if huber_c < 0:
      huber_c = RFPP_HUBER_C_PER_DIM * math.prod(self.data_shape)
    self.distance = distances.make_distance(self.hparams.distance, self.data_shape, huber_c=huber_c)

  def loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    if 'eps' not in batch:
      raise ValueError("reflow batches need the coupled noise 'eps': train on the reflow_pairs dataset")
    x, eps, y = batch['x'], batch['eps'], batch.get('y')
    time_key, label_key, net_key = jax.random.split(key, 3)
    t = self.time_samplers[self.hparams.time_sampler](time_key, x.shape[0], self.hparams)
    z_t = self.path.noisy(x, eps, t)
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    velocity = self.velocity(params, z_t, t, y=y, key=net_key)
    loss = jnp.mean(self.distance.fn(velocity, self.path.velocity(x, eps, t), None))
    return loss, {'loss': loss}
