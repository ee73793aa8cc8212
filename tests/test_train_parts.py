"""Optimizers, schedules, EMA and partition rules against their definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from fewstep_jax.config_base import base_config
from fewstep_jax.methods import build_method
from fewstep_jax.train import optim, sharding, state as state_lib


def test_ema_follows_its_recursion_for_every_rate():
  params = {'w': jnp.zeros(3)}
  ema = state_lib.init_net_state(params, optax.sgd(1.0), (0.9, 0.5)).ema
  assert sorted(ema) == ['ema_0.5', 'ema_0.9']
  for step in range(1, 4):
    ema = state_lib.update_ema(ema, {'w': jnp.full(3, float(step))}, (0.9, 0.5))
  # e_k = r e_{k-1} + (1 - r) k, e_0 = 0.
  for rate in (0.9, 0.5):
    expected = 0.0
    for step in range(1, 4):
      expected = rate * expected + (1 - rate) * step
    np.testing.assert_allclose(ema[state_lib.ema_name(rate)]['w'], expected, rtol=1e-6)


@pytest.mark.parametrize('std', [0.05, 0.1])
def test_power_function_ema_has_edm2s_profile(std):
  """EDM2's power-function EMA: after n updates of a parameter that equals its update index k, the copy holds
  the profile's mean of k, and with k^2 its second moment. EDM2's profile is p(k) ∝ k^gamma on [0, n]: mean
  n (gamma + 1) / (gamma + 2) and relative standard deviation sigma_rel = std, the width it is named by."""
  gamma = state_lib.power_ema_exponent(std)
  np.testing.assert_allclose((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)), std ** 2, rtol=1e-9)
  n = 4000

  def body(k, ema):
    value = jnp.asarray(k + 1, jnp.float32)
    return state_lib.update_ema(ema, {'m1': value, 'm2': value ** 2}, (), (std,), count=k)

  init = {state_lib.power_ema_name(std): {'m1': jnp.float32(-1e6), 'm2': jnp.float32(-1e6)}}  # Overwritten at k=0.
  ema = jax.lax.fori_loop(0, n, body, init)[state_lib.power_ema_name(std)]
  mean, second = float(ema['m1']), float(ema['m2'])
  np.testing.assert_allclose(mean / n, (gamma + 1) / (gamma + 2), rtol=2e-3)
  np.testing.assert_allclose(np.sqrt(second - mean ** 2) / n, std, rtol=2e-2)


@pytest.mark.parametrize('schedule,checks', [
    ('constant', {0: 1.0, 50: 1.0}),
    ('warmup', {0: 0.0, 5: 0.5, 10: 1.0, 90: 1.0}),
    ('cosine', {0: 0.0, 10: 1.0, 55: 0.5, 100: 0.0}),
    ('inverse_sqrt', {0: 0.0, 5: 0.5, 10: 1.0, 40: 1.0, 160: 0.5, 4000: 0.1}),
])
def test_learning_rate_schedules(schedule, checks):
  config = optim.optim_defaults()
  config.update(dict(lr=1.0, schedule=schedule, warmup_steps=10, decay_ref_steps=40))
  lr = optim.LR_SCHEDULES[schedule](config, 100)
  for step, expected in checks.items():
    np.testing.assert_allclose(lr(step), expected, atol=1e-6, err_msg=f'{schedule} at step {step}')


def test_inverse_sqrt_without_warmup_starts_at_the_full_rate():
  """EDM2's schedule with no ramp-up (ECT's ImageNet-64 run): the first update already takes lr."""
  config = optim.optim_defaults()
  config.update(dict(lr=1.0, schedule='inverse_sqrt', warmup_steps=0, decay_ref_steps=40))
  lr = optim.LR_SCHEDULES['inverse_sqrt'](config, 100)
  for step, expected in {0: 1.0, 40: 1.0, 160: 0.5}.items():
    np.testing.assert_allclose(lr(step), expected, atol=1e-6, err_msg=f'step {step}')


def test_optimizers_build_and_clip():
  params = {'w': jnp.ones(4)}
  huge = {'w': jnp.full(4, 100.0)}
  for name in optim.OPTIMIZERS:
    config = optim.optim_defaults()
    config.update(dict(name=name, lr=0.1, grad_clip=1.0, weight_decay=0.01))
    tx = optim.make_optimizer(config, 10)
    updates, _ = tx.update(huge, tx.init(params), params)
    assert np.all(np.isfinite(updates['w'])), name
  # Clipping is the chain's first stage: two Adam steps, a huge gradient then a small one, match
  # clip -> adam exactly and differ from unclipped Adam (whose second step the huge first moment dominates).
  def two_steps(tx):
    opt_state = tx.init(params)
    for grad in (huge, {'w': jnp.full(4, 0.01)}):
      updates, opt_state = tx.update(grad, opt_state, params)
    return updates['w']

  ours = two_steps(optim.make_optimizer(_with(grad_clip=2.0, lr=0.1), 10))
  np.testing.assert_allclose(ours, two_steps(optax.chain(optax.clip_by_global_norm(2.0), optax.adam(0.1))),
                             rtol=1e-6)
  assert not np.allclose(ours, two_steps(optax.adam(0.1)), rtol=1e-3)
  with pytest.raises(ValueError, match="unknown optimizer 'adamz'"):
    optim.make_optimizer(_with(name='adamz'), 10)
  with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
    optim.make_optimizer(_with(schedule='linear'), 10)


def _with(**fields):
  config = optim.optim_defaults()
  config.update(fields)
  return config


def test_partition_rule_shards_the_largest_divisible_dimension():
  assert sharding.param_spec((256, 512), fsdp_size=4, min_size=1024) == P(None, 'fsdp')
  assert sharding.param_spec((512, 6), fsdp_size=4, min_size=1024) == P('fsdp', None)
  assert sharding.param_spec((6, 6, 30), fsdp_size=4, min_size=16) == P()  # Nothing divisible by 4.
  assert sharding.param_spec((64,), fsdp_size=4, min_size=1024) == P()  # Too small.
  assert sharding.param_spec((4096, 4096), fsdp_size=1, min_size=1) == P()


def test_a_host_batch_whose_condition_is_a_dict_of_arrays_is_split_along_the_batch():
  devices = jax.devices()
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(len(devices), 1), ('data', 'fsdp'))
  rows = 2 * len(devices)
  batch = {'x': np.ones((rows, 8, 8, 1), np.float32),
           'y': {'tokens': np.arange(rows * 3 * 4, dtype=np.float32).reshape(rows, 3, 4),
                 'pooled': np.zeros((rows, 4), np.float32)}}
  global_batch = sharding.global_batch_from_process_batch(batch, mesh)
  assert set(global_batch['y']) == {'tokens', 'pooled'}
  np.testing.assert_array_equal(np.asarray(global_batch['y']['tokens']), batch['y']['tokens'])
  assert global_batch['y']['tokens'].sharding.spec == sharding.batch_sharding(mesh).spec


def test_batch_size_must_split_over_devices_and_micro_batches():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ('data', 'fsdp'))
  sharding.check_batch_size(12, 3, mesh)
  with pytest.raises(ValueError, match='not divisible by train.micro_batches=5'):
    sharding.check_batch_size(12, 5, mesh)


def test_bfloat16_compute_trains_with_float32_params():
  config = base_config(method='flow_matching', network='mlp', dataset='toy')
  config.network.hidden = 16
  config.network.depth = 1
  config.train.compute_dtype = 'bfloat16'
  method = build_method(config, data_shape=(2,), num_classes=0)
  state = method.init(jax.random.PRNGKey(0))
  state, metrics = jax.jit(method.step)(state, {'x': jnp.ones((8, 2))}, jax.random.PRNGKey(1))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.nets['student'].params))
  assert np.isfinite(metrics['loss'])


def test_ema_of_bfloat16_parameters_is_float32_and_moves():
  params = {'w': jnp.ones(2, jnp.bfloat16)}
  ema = state_lib.init_net_state(params, optax.sgd(1.0), (0.9999,)).ema
  ema = state_lib.update_ema(ema, {'w': jnp.full(2, 2.0, jnp.bfloat16)}, (0.9999,))
  assert ema['ema_0.9999']['w'].dtype == jnp.float32
  np.testing.assert_allclose(ema['ema_0.9999']['w'], 1.0001, rtol=1e-6)


def test_a_run_written_before_ema_stds_existed_still_resumes(tmp_path):
  """optim.ema_stds and data.latent_norm are newer than some workdirs: their absence there means their old meaning
  (no power EMA, latent_scale), not a changed run-defining field; other values are still refused."""
  import json
  from fewstep_jax import trainer
  config = base_config(method='edm', network='mlp', dataset='toy')
  saved = trainer.config_to_json(config)
  del saved['optim']['ema_stds'], saved['data']['latent_norm']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  trainer.check_workdir_matches(str(tmp_path), config)
  config.data.latent_norm = 'edm2'  # Absent there means 'scale'.
  with pytest.raises(ValueError, match='data.latent_norm'):
    trainer.check_workdir_matches(str(tmp_path), config)
  config.data.latent_norm = 'scale'
  saved['optim']['ema_stds'] = [0.05]
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(ValueError, match='optim.ema_stds'):
    trainer.check_workdir_matches(str(tmp_path), config)


def test_a_notebook_progress_bar_redraws_a_handful_of_times(monkeypatch, capsys):
  """In Jupyter each redraw of the bar is an output message that the saved notebook keeps (the quickstart's 3000
  steps once stored hundreds): at most about NOTEBOOK_REDRAWS, here over 75 s of 40 steps a second."""
  from fewstep_jax.train import writers
  monkeypatch.setattr(writers, 'in_notebook', lambda: True)
  with monkeypatch.context() as without_widgets:  # tqdm's text bar, as without ipywidgets.
    without_widgets.setattr(writers.importlib.util, 'find_spec', lambda name: None)
    bar = writers.progress(total=3000, unit='step')
  clock = [bar.start_t]
  bar._time = lambda: clock[0]
  for _ in range(3000):
    clock[0] += 0.025
    bar.update(1)
  bar.close()
  redraws = capsys.readouterr().err.count('\r')
  assert 2 <= redraws <= writers.NOTEBOOK_REDRAWS + 2, redraws


def test_a_network_field_absent_from_an_older_run_counts_as_its_default():
  """A run written before a network field existed (its stored config lacks it) matches a config at the field's
  default, and differs from one that sets it: a start or teacher run from before LCM's guidance embedding existed."""
  import ml_collections
  from fewstep_jax import nn, runs
  ours = nn.network_defaults('sd_unet')
  stored = ml_collections.ConfigDict({key: value for key, value in ours.to_dict().items()
                                      if key != 'guidance_embedding'})
  assert runs.network_differences(stored, ours) == []
  ours.guidance_embedding = 8
  assert runs.network_differences(stored, ours) == ['guidance_embedding']
