"""LoRA (config.lora, nn/lora.py): the merge is W + (alpha / r) B A in both weight layouts (a convolution's equals a
convolution with A then a 1 x 1 one with B); a LoRA student trains only its factors over the teacher's own arrays,
its factor gradients are the chain rule of the full gradient, and a trained run opens merged for eval and as a
teacher; refusals are one line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fewstep_jax import nn, paths, trainer
from fewstep_jax.config_base import base_config
from fewstep_jax.errors import ConfigError
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method
from fewstep_jax.nn import lora as lora_lib
from fewstep_jax.nn import sd_unet
from fewstep_jax.tools import export_lora, posthoc_ema

SHAPE = (2,)
TARGETS = ('ResidualMLPBlock_0.Dense_0', 'output')


def _conv(x, weight):
  """NCHW cross-correlation with a PyTorch-layout [out, in, kh, kw] weight, 'same' padding."""
  return jax.lax.conv_general_dilated(x, weight, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))


def test_merge_is_the_low_rank_update_in_both_layouts_and_a_conv_is_two_convs():
  rng = np.random.default_rng(0)
  lora = lora_lib.LoRA(rank=2, alpha=6.0, targets=('a', 'b', 'c'), base='teacher')
  base = {'a': {'weight': rng.standard_normal((5, 3))}, 'b': {'kernel': rng.standard_normal((3, 5))},
          'c': {'weight': rng.standard_normal((4, 3, 3, 3))}, 'd': {'weight': rng.standard_normal((2, 2))}}
  base = jax.tree.map(lambda x: np.asarray(x, np.float32), base)
  factors = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), lora_lib.init(lora, base, jax.random.PRNGKey(0)))
  factors = jax.tree.map(lambda x: x + jnp.asarray(rng.standard_normal(x.shape), jnp.float32), factors)
  merged = lora_lib.merge(lora, base, factors)
  a, b, c = factors['a']['weight'], factors['b']['kernel'], factors['c']['weight']
  np.testing.assert_allclose(merged['a']['weight'], base['a']['weight'] + 3.0 * a['up'] @ a['down'], rtol=1e-5)
  np.testing.assert_allclose(merged['b']['kernel'], base['b']['kernel'] + 3.0 * b['down'] @ b['up'], rtol=1e-5)
  np.testing.assert_array_equal(merged['d']['weight'], base['d']['weight'])  # Not targeted.
  assert c['down'].shape == (2, 3, 3, 3) and c['up'].shape == (4, 2)
  x = jnp.asarray(rng.standard_normal((1, 3, 6, 6)), jnp.float32)
  two_convs = _conv(_conv(x, c['down']), c['up'][:, :, None, None])
  np.testing.assert_allclose(_conv(x, merged['c']['weight']) - _conv(x, jnp.asarray(base['c']['weight'])),
                             3.0 * two_convs, rtol=1e-4, atol=1e-4)


def test_sd_unet_default_targets_are_the_lcm_lora_modules():
  unet = sd_unet.from_config('sd15_tiny')
  base = sd_unet.abstract_params(unet)
  names = {lora_lib.module_name(path) for path in lora_lib.targeted(base, lora_lib.SD_UNET_TARGETS)}
  assert 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0' in names
  assert 'down_blocks.0.resnets.0.conv1' in names and 'up_blocks.0.upsamplers.0.conv' in names
  assert not any(name.startswith(('conv_in', 'conv_out', 'time_embedding')) for name in names)
  with pytest.raises(ConfigError, match=r"lora.targets \['to_qq'\] match no weight"):
    lora_lib.targeted(base, ('to_q', 'to_qq'))


def _config(rank=2, **method):
  config = base_config(method='cd', network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1)
  config.method.update(teacher='in memory', init_from='in memory', **method)
  config.lora.update(rank=rank, alpha=4.0, targets=TARGETS)
  config.optim.update(ema_rates=(0.9,), lr=1e-2)
  config.train.update(batch_size=16, num_steps=3, log_every=1, checkpoint_every=3, tensorboard=False)
  config.eval.update(at_end=False, nfe=(1,), params='ema_0.9')
  return config


def _teacher_params(config):
  module = nn.build_network(config.network, num_classes=0)
  shapes = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE)))
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def _inputs(config, params):
  teacher = Teacher(network=config.network, readout=paths.readout('edm'), data_shape=SHAPE, num_classes=0,
                    params=params)
  return {'teacher': teacher, 'student_init': params}


def test_factor_gradients_are_the_chain_rule_of_the_full_gradient():
  config = _config()
  params = _teacher_params(config)
  method = build_method(config, data_shape=SHAPE, num_classes=0, inputs=_inputs(config, params))
  state = method.init(jax.random.PRNGKey(0), {'teacher': params, 'student_init': params})
  assert set(state.frozen) == {'teacher'}  # The teacher is the base: one copy.
  factors = jax.tree.map(lambda x: x + 0.1, state.nets['student'].params)  # B != 0, so every term is exercised.
  state = state.replace(nets={'student': state.nets['student'].replace(params=factors)})
  batch = {'x': jnp.asarray(np.random.default_rng(2).standard_normal((16,) + SHAPE), jnp.float32)}
  key = jax.random.PRNGKey(3)
  factor_grads, _ = jax.jit(method.gradients)(state, batch, key)

  def full_gradient(state):  # With respect to the merged weights.
    ctx = method.context(state)
    merged = method.network_params(state.nets['student'].params, ctx.frozen)
    return jax.grad(lambda p: method.loss(p, batch, key, ctx)[0])(merged)

  full = traverse_util.flatten_dict(jax.jit(full_gradient)(state))
  for path, pair in lora_lib._factor_items(factors):
    grad = traverse_util.flatten_dict(factor_grads)
    # kernel layout: W' = W + s A B, so dL/dA = s G B^T and dL/dB = s A^T G.
    np.testing.assert_allclose(grad[path + ('down',)], 2.0 * full[path] @ pair['up'].T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grad[path + ('up',)], 2.0 * pair['down'].T @ full[path], rtol=1e-4, atol=1e-7)


def test_a_lora_run_trains_factors_only_and_opens_merged(tmp_path):
  config = _config()
  params = _teacher_params(config)
  workdir = str(tmp_path / 'lora')
  run, state, _ = trainer.train(config, workdir, inputs=_inputs(config, params))
  factors = traverse_util.flatten_dict(state.nets['student'].params)
  assert {path[-1] for path in factors} == {'down', 'up'} and len(factors) == 2 * len(TARGETS)
  merged = traverse_util.flatten_dict(run.sampling_params(state, 'ema_0.9'))
  teacher = traverse_util.flatten_dict(params)
  for path, value in merged.items():
    moved = lora_lib.module_name(path) in TARGETS and path[-1] == 'kernel'
    assert moved != bool(np.array_equal(value, teacher[path])), path  # Only the targeted weights moved.
  _, restored, _ = trainer.restore_run(config, workdir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               run.sampling_params(restored, 'ema_0.9'), run.sampling_params(state, 'ema_0.9'))
  with pytest.raises(ConfigError, match="network is 'mlp'; diffusers' layout is written for 'sd_unet' runs"):
    export_lora.export(workdir, str(tmp_path / 'export'))
  with pytest.raises(ValueError, match='trained LoRA factors'):
    posthoc_ema.reconstruct(workdir, 0.1)


def test_the_diffusers_adapter_names_the_modules_diffusers_has():
  """Each exported pair is 'unet.<module>.lora_A.weight' / '.lora_B.weight' for a module whose '.weight' the
  diffusers U-Net has, A [r, in(, kh, kw)] and B [out, r(, 1, 1)], with the scale in B (experiments/parity/lora.py
  loads them in diffusers)."""
  unet = sd_unet.from_config('sd15_tiny')
  shapes = sd_unet.weight_shapes(unet)
  lora = lora_lib.LoRA(rank=3, alpha=6.0, targets=lora_lib.SD_UNET_TARGETS, base='teacher')
  factors = lora_lib.init(lora, sd_unet.abstract_params(unet), jax.random.PRNGKey(0))
  factors = jax.tree.map(lambda x: x + 1.0, factors)
  exported = lora_lib.to_diffusers(lora, factors)
  modules = {key[len('unet.'):-len('.lora_A.weight')] for key in exported if key.endswith('.lora_A.weight')}
  assert len(exported) == 2 * len(modules) and modules
  for module in modules:
    weight = shapes[module + '.weight']
    down, up = exported[f'unet.{module}.lora_A.weight'], exported[f'unet.{module}.lora_B.weight']
    assert down.shape == (3,) + weight[1:] and up.shape == (weight[0], 3) + (1, 1) * (len(weight) == 4)
    np.testing.assert_allclose(up, 2.0, rtol=1e-6)  # B = 0 + 1, times alpha / r = 2.


def test_refusals_are_one_line():
  config = _config()
  config.method.init_from = ''
  with pytest.raises(ConfigError, match='starts its student from nothing: set method.init_from'):
    build_method(config, data_shape=SHAPE, num_classes=0, inputs={'teacher': _inputs(config, None)['teacher']})
  dmd2 = base_config(method='dmd2', network='mlp', dataset='toy')
  dmd2.lora.rank = 4
  with pytest.raises(ConfigError, match="method 'dmd2' does not train LoRA factors"):
    build_method(dmd2, data_shape=SHAPE, num_classes=0, inputs={})
  mlp = base_config(method='cd', network='mlp', dataset='toy')
  mlp.lora.rank = 4
  with pytest.raises(ConfigError, match="network 'mlp' has no default LoRA targets"):
    lora_lib.from_config(mlp, base='teacher')
