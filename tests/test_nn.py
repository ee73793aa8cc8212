"""Tests for fewstep_jax.nn: shapes, zero-init, conditioning, dropout,
attention, JVPs, dtypes and config handling."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fewstep_jax import nn as networks
from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn import dit
from fewstep_jax.nn import layers

BATCH = 3
VECTOR = (BATCH, 2)
DIGITS = (BATCH, 8, 8, 1)
IMAGE = (BATCH, 16, 16, 3)
NUM_CLASSES = 5

# Small enough that the whole file compiles and runs in well under a minute on
# two CPU cores.
TINY = {
    'mlp': {'hidden': 16, 'depth': 2, 'time_embed_dim': 8},
    'dit': {'hidden': 16, 'depth': 1, 'heads': 2, 'time_embed_dim': 16},
    # Attention at 8 px runs on the outer level for digits and on the inner
    # level for 16 px images, besides the middle block's.
    'unet': {'channels': 8, 'channel_mult': (1, 2), 'attn_resolutions': (8,),
             'time_embed_dim': 8},
}
# Every conditioning feature switched on; the tests that need numbers (not
# just shapes) share one compiled network of each kind with these fields.
CONDITIONED = {'two_times': True, 'logvar_head': True, 'dropout': 0.1}
CONDITIONED_SHAPE = {'mlp': VECTOR, 'dit': IMAGE, 'unet': IMAGE}


def _init_key(seed=0):
  # RngBitGenerator keys: initialising a U-Net under jit compiles several times
  # faster than with threefry keys, which matters on a two-core test machine.
  return jax.random.key(seed, impl='rbg')


def _build(name, num_classes=0, dtype=jnp.float32, **overrides):
  config = ml_collections.ConfigDict({'name': name, **TINY[name], **overrides})
  return networks.build_network(config, num_classes=num_classes, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _network(name, shape, num_classes=0, **overrides):
  """(module, fresh params, jitted apply) for a tiny float32 network; cached."""
  module = _build(name, num_classes, **overrides)
  params = networks.init_params(module, _init_key(), jnp.zeros(shape))
  return module, params, jax.jit(networks.make_apply(module))


def _conditioned(name):
  return _network(name, CONDITIONED_SHAPE[name], NUM_CLASSES, **CONDITIONED)


def _perturbed(params, seed=1, scale=0.1):
  """params + scale * N(0, 1), so zero-initialised layers stop hiding inputs."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: p + scale * rng.standard_normal(p.shape, np.float32), params)


def _inputs(shape, seed=2):
  """x: shape, t: [B] in (0.2, 1), r: [B] below t, y: [B] labels."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape, np.float32)
  t = rng.uniform(0.2, 1.0, shape[0]).astype(np.float32)
  r = (t * rng.uniform(size=shape[0])).astype(np.float32)
  y = np.arange(shape[0], dtype=np.int32) % NUM_CLASSES
  return x, t, r, y


# ----------------------------------------------------------------- shapes


def _output_shapes(module, shape, labels):
  """Shapes of (out, logvar) of a fresh `module`, traced without compiling."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  t = jax.ShapeDtypeStruct(shape[:1], jnp.float32)
  r = t if module.two_times else None
  y = jax.ShapeDtypeStruct(shape[:1], jnp.int32) if labels else None

  def init_and_apply(key, x, t, r, y):
    params = networks.init_params(module, key, x)
    return networks.make_apply(module)(params, x, t, r, y)

  return jax.eval_shape(init_and_apply, _init_key(), x, t, r, y)


@pytest.mark.parametrize('name, shape', [
    ('mlp', VECTOR), ('mlp', DIGITS), ('mlp', IMAGE), ('dit', DIGITS),
    ('dit', IMAGE), ('unet', DIGITS), ('unet', IMAGE)])
def test_output_shapes(name, shape):
  out = _output_shapes(_build(name), shape, labels=False)
  assert out.shape == shape and out.dtype == jnp.float32

  conditioned = _build(name, NUM_CLASSES, **CONDITIONED)
  for labels in (True, False):
    out, logvar = _output_shapes(conditioned, shape, labels)
    assert out.shape == shape and out.dtype == jnp.float32
    assert logvar.shape == (BATCH,) and logvar.dtype == jnp.float32


@pytest.mark.parametrize('name, shape', [
    ('mlp', VECTOR), ('dit', (2, 32, 32, 3)), ('unet', (2, 32, 32, 3)),
    ('unet', (2, 8, 8, 1))])
def test_default_networks_output_shapes(name, shape):
  module = networks.build_network(networks.network_defaults(name),
                                  num_classes=10)
  out = _output_shapes(module, shape, labels=True)
  assert out.shape == shape and out.dtype == jnp.float32


@pytest.mark.parametrize('name', ['mlp', 'dit', 'unet'])
def test_conditioned_output_shapes_and_zero_init(name):
  module, params, apply = _conditioned(name)
  shape = CONDITIONED_SHAPE[name]
  x, t, r, y = _inputs(shape)
  for labels in (y, None):
    out, logvar = apply(params, x, t, r, labels)
    assert out.shape == shape and out.dtype == jnp.float32
    assert logvar.shape == (BATCH,) and logvar.dtype == jnp.float32
    # Zero-initialised output layer (MLP), adaLN-Zero (DiT), zero output conv
    # (U-Net), zero logvar head: a fresh network is exactly 0 everywhere.
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(logvar, 0.0)
  assert jax.tree.all(jax.tree.map(lambda p: p.dtype == jnp.float32, params))
  assert params['cond']['embed_y']['embedding'].shape[0] == NUM_CLASSES + 1
  assert module.two_times and module.logvar_head


def test_fresh_dit_block_is_identity():
  block = dit.DiTBlock(hidden=16, heads=2, mlp_ratio=4.0, dropout=0.0,
                       attention='xla')
  rng = np.random.default_rng(3)
  tokens = rng.standard_normal((BATCH, 10, 16), np.float32)
  cond = rng.standard_normal((BATCH, 16), np.float32)
  block_params = jax.jit(block.init, static_argnums=3)(
      _init_key(), tokens, cond, False)
  np.testing.assert_array_equal(
      jax.jit(block.apply, static_argnums=3)(block_params, tokens, cond, False),
      tokens)


# ----------------------------------------------------------- conditioning


@pytest.mark.parametrize('name', ['mlp', 'dit', 'unet'])
def test_labels_and_second_time_change_the_output(name):
  _, params, apply = _conditioned(name)
  params = _perturbed(params)
  x, t, r, y = _inputs(CONDITIONED_SHAPE[name])
  out_y, logvar_y = apply(params, x, t, r, y)
  out_other_y, logvar_other_y = apply(params, x, t, r, (y + 1) % NUM_CLASSES)
  out_null, _ = apply(params, x, t, r, jnp.full_like(y, NUM_CLASSES))
  out_none, _ = apply(params, x, t, r, None)
  out_other_r, logvar_other_r = apply(params, x, t, r * 0.5, y)

  for a, b in [(out_y, out_other_y), (out_y, out_null), (out_y, out_other_r)]:
    assert np.max(np.abs(a - b)) > 1e-3
  np.testing.assert_array_equal(out_none, out_null)
  # The log-variance depends on the times but not on the label.
  np.testing.assert_array_equal(logvar_y, logvar_other_y)
  assert np.max(np.abs(logvar_y - logvar_other_r)) > 1e-4


def test_scalar_time_is_broadcast():
  _, params, apply = _network('mlp', VECTOR)
  params = _perturbed(params)
  x, _, _, _ = _inputs(VECTOR)
  np.testing.assert_array_equal(
      apply(params, x, jnp.float32(0.4)),
      apply(params, x, jnp.full(BATCH, 0.4)))


def test_conditioning_argument_errors():
  x, t, r, y = _inputs(VECTOR)
  single_time = _build('mlp')
  with pytest.raises(ValueError, match='two_times=False but r was passed'):
    single_time.init(_init_key(), x, t, r)
  with pytest.raises(ValueError, match='unconditional .* but y was passed'):
    single_time.init(_init_key(), x, t, None, y)
  with pytest.raises(ValueError, match='two_times=True: pass r'):
    _build('mlp', two_times=True).init(_init_key(), x, t)


@pytest.mark.parametrize('name, shape, message', [
    ('dit', (1, 9, 8, 1), 'patch_size=2 must divide'),
    ('unet', (1, 10, 7, 1), 'divisible by 2'),
    ('dit', (1, 8), 'expects images'),
])
def test_bad_image_sizes_are_errors(name, shape, message):
  module = networks.build_network(
      ml_collections.ConfigDict({'name': name, **TINY[name]}), num_classes=0)
  with pytest.raises(ValueError, match=message):
    networks.init_params(module, _init_key(), jnp.zeros(shape))


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize('name', ['mlp', 'dit', 'unet'])
def test_dropout_only_in_training(name):
  _, params, apply = _conditioned(name)
  params = _perturbed(params)
  x, t, r, y = _inputs(CONDITIONED_SHAPE[name])
  train_a, _ = apply(params, x, t, r, y, jax.random.key(10))
  train_a_again, _ = apply(params, x, t, r, y, jax.random.key(10))
  train_b, _ = apply(params, x, t, r, y, jax.random.key(11))
  eval_a, _ = apply(params, x, t, r, y)
  eval_b, _ = apply(params, x, t, r, y)
  assert np.max(np.abs(train_a - train_b)) > 1e-3
  assert np.max(np.abs(train_a - eval_a)) > 1e-3
  np.testing.assert_array_equal(train_a, train_a_again)
  np.testing.assert_array_equal(eval_a, eval_b)


def test_training_without_dropout_equals_eval():
  _, params, apply = _network('mlp', VECTOR)
  params = _perturbed(params)
  x, t, _, _ = _inputs(VECTOR)
  np.testing.assert_array_equal(
      apply(params, x, t, key=jax.random.key(10)), apply(params, x, t))


# -------------------------------------------------------------- attention


def _numpy_attention(q, k, v):
  """Per batch and head: softmax(q k^T / sqrt(d)) v, in float64."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', weights, v)


def test_xla_attention_matches_numpy():
  rng = np.random.default_rng(0)
  q = 2 * rng.standard_normal((2, 5, 3, 4), np.float32)
  k = 2 * rng.standard_normal((2, 7, 3, 4), np.float32)
  v = rng.standard_normal((2, 7, 3, 4), np.float32)
  out = attention_lib.attention(q, k, v, impl='xla')
  assert out.shape == (2, 5, 3, 4)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5)


def test_attention_registry():
  with pytest.raises(ValueError, match="known: .*'cudnn'.*'xla'"):
    attention_lib.attention(*[jnp.ones((1, 2, 1, 4))] * 3, impl='flash')

  attention_lib.register_attention('doubled', lambda q, k, v: 2 * v)
  try:
    v = jnp.arange(8.0).reshape(1, 2, 1, 4)
    np.testing.assert_array_equal(
        attention_lib.attention(v, v, v, impl='doubled'), 2 * v)
    with pytest.raises(ValueError, match='no forward-mode derivative'):
      attention_lib.require_forward_mode('doubled')
  finally:
    del attention_lib.ATTENTION_IMPLS['doubled']

  attention_lib.require_forward_mode('xla')
  with pytest.raises(ValueError, match="'cudnn' has no forward-mode"):
    attention_lib.require_forward_mode('cudnn')


# ------------------------------------------------------------------- JVPs


def _jvp_setup(name):
  """Perturbed params, network (x, t, r) -> out, primals and tangents."""
  _, params, apply = _conditioned(name)
  params = _perturbed(params)
  x, t, r, y = _inputs(CONDITIONED_SHAPE[name])
  network = lambda x, t, r: apply(params, x, t, r, y)[0]
  # t and r are scaled by 1000 before a sinusoid whose fastest frequency is
  # 1 rad per unit; their small tangents keep the finite difference's step in
  # scaled time at 1e-2, where its truncation error is negligible. They still
  # contribute about as much to the JVP as the x tangent does.
  tangents = (np.random.default_rng(7).standard_normal(x.shape, np.float32),
              np.full_like(t, 0.01), np.full_like(r, -0.005))
  return network, (x, t, r), tangents


@pytest.mark.parametrize('name', ['mlp', 'dit', 'unet'])
def test_jvp_matches_central_difference(name):
  network, primals, tangents = _jvp_setup(name)
  _, jvp_out = jax.jvp(network, primals, tangents)
  eps = 1e-3
  shifted = lambda sign: network(
      *[p + sign * eps * d for p, d in zip(primals, tangents)])
  central = (shifted(1) - shifted(-1)) / (2 * eps)
  relative_error = jnp.linalg.norm(central - jvp_out) / jnp.linalg.norm(jvp_out)
  assert float(jnp.linalg.norm(jvp_out)) > 0.1
  assert float(relative_error) < 1e-2


def test_dit_jvp_matches_reverse_mode():
  """<u, J w> from jax.jvp equals <J^T u, w> from jax.vjp."""
  network, primals, tangents = _jvp_setup('dit')
  cotangent = np.random.default_rng(8).standard_normal(
      primals[0].shape, np.float32)

  @jax.jit
  def forward_and_reverse(primals, tangents, cotangent):
    _, jvp_out = jax.jvp(network, primals, tangents)
    _, vjp = jax.vjp(network, *primals)
    forward = jnp.vdot(cotangent, jvp_out)
    reverse = sum(jnp.vdot(a, b) for a, b in zip(vjp(cotangent), tangents))
    return forward, reverse

  forward, reverse = forward_and_reverse(primals, tangents, cotangent)
  assert abs(float(forward)) > 1.0
  np.testing.assert_allclose(forward, reverse, rtol=1e-4)


# ------------------------------------------------------------------ dtype


@pytest.mark.parametrize('name', ['mlp', 'dit', 'unet'])
def test_bfloat16_compute_returns_float32(name):
  _, params, apply_f32 = _conditioned(name)
  module_bf16 = _build(name, NUM_CLASSES, jnp.bfloat16, **CONDITIONED)
  apply_bf16 = jax.jit(networks.make_apply(module_bf16))
  params = _perturbed(params)
  x, t, r, y = _inputs(CONDITIONED_SHAPE[name])
  out_f32, logvar_f32 = apply_f32(params, x, t, r, y)
  out_bf16, logvar_bf16 = apply_bf16(params, x, t, r, y)
  assert out_bf16.dtype == jnp.float32 and logvar_bf16.dtype == jnp.float32
  relative_error = (jnp.linalg.norm(out_bf16 - out_f32)
                    / jnp.linalg.norm(out_f32))
  assert float(relative_error) < 0.05
  np.testing.assert_allclose(logvar_bf16, logvar_f32, rtol=0.05, atol=0.05)


# ------------------------------------------------------------------ layers


def test_timestep_embedding_values():
  t = jnp.array([0.0, 1.0, 250.0])
  embedding = layers.timestep_embedding(t, 7, max_period=100.0)
  assert embedding.shape == (3, 7) and embedding.dtype == jnp.float32
  freqs = 100.0 ** (-np.arange(3) / 3)
  expected = np.concatenate(
      [np.cos(np.outer(t, freqs)), np.sin(np.outer(t, freqs)),
       np.zeros((3, 1))], axis=1)
  np.testing.assert_allclose(embedding, expected, atol=1e-5)


def test_group_count_divides_channels():
  assert [layers.group_count(c) for c in (3, 8, 32, 48, 96, 256, 512)] == [
      1, 2, 8, 12, 24, 32, 32]


# ---------------------------------------------------------- build_network


def test_network_defaults_are_complete_and_locked():
  config = networks.network_defaults('dit')
  assert config.name == 'dit' and config.hidden == 64 and config.heads == 4
  assert config.attention == 'xla' and config.time_scale == 1000.0
  assert not {'num_classes', 'dtype', 'param_dtype'} & set(config)
  with pytest.raises(AttributeError):
    config.hiden = 32
  config.hidden = 32
  assert networks.build_network(config, num_classes=10).hidden == 32
  for name in networks.NETWORKS:
    module = networks.build_network(
        networks.network_defaults(name), num_classes=0)
    assert isinstance(module, networks.NETWORKS[name])


def test_build_network_errors():
  with pytest.raises(ValueError, match=r"unknown network 'vit'.*'dit'"):
    networks.build_network(
        ml_collections.ConfigDict({'name': 'vit'}), num_classes=0)
  with pytest.raises(
      ValueError,
      match=r"network 'dit' has no field 'hiden'; accepted: .*'hidden'"):
    networks.build_network(
        ml_collections.ConfigDict({'name': 'dit', 'hiden': 32}), num_classes=0)
  with pytest.raises(ValueError, match='num_classes'):
    networks.build_network(
        ml_collections.ConfigDict({'name': 'mlp', 'num_classes': 10}),
        num_classes=10)


def test_build_network_passes_fields_and_dtype():
  module = networks.build_network(
      ml_collections.ConfigDict(
          {'name': 'unet', 'channel_mult': [1, 2, 2], 'dropout': 0.2}),
      num_classes=10, dtype=jnp.bfloat16)
  assert module.channel_mult == (1, 2, 2) and module.dropout == 0.2
  assert module.num_classes == 10 and module.dtype == jnp.bfloat16


@pytest.mark.parametrize('fields', [dict(name='mlp', hidden=16, dropout=0.0),
                                    dict(name='mlp', hidden=16, dropout=0.3),
                                    dict(name='sit', depth=1, hidden_size=16, patch_size=2, num_heads=2,
                                         class_dropout_prob=0.5, train_label_dropout=True),
                                    dict(name='sit', depth=1, hidden_size=16, patch_size=2, num_heads=2,
                                         class_dropout_prob=0.5, train_label_dropout=False)])
def test_draws_in_training_says_whether_a_training_call_is_random(fields):
  module = networks.build_network(ml_collections.ConfigDict(fields), num_classes=4)
  shape = (8, 2) if fields['name'] == 'mlp' else (8, 4, 4, 4)
  x, t, y = jnp.ones(shape), jnp.full((8,), 0.5), jnp.arange(8) % 4
  params = networks.init_params(module, jax.random.PRNGKey(0), x[:1])
  # Zero-initialised output layers would hide any randomness: perturb every parameter.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(3), p.shape), params)
  apply = jax.jit(networks.make_apply(module))
  first, second = (apply(params, x, t, None, y, jax.random.PRNGKey(k)) for k in (1, 2))
  assert networks.draws_in_training(module) == (not np.array_equal(first, second))
  if not networks.draws_in_training(module):
    np.testing.assert_array_equal(first, apply(params, x, t, None, y))


def test_unet_middle_attention_is_optional():
  def attention_blocks(**fields):
    module = networks.build_network(ml_collections.ConfigDict(dict(
        name='unet', channels=8, channel_mult=(1, 2), attn_resolutions=(), **fields)), num_classes=0)
    # Shapes only: nothing is compiled.
    params = jax.eval_shape(lambda key: networks.init_params(module, key, jnp.zeros((1, 8, 8, 1))),
                            jax.random.PRNGKey(0))
    return sorted(name for name in params if name.startswith('AttentionBlock'))
  assert attention_blocks() == ['AttentionBlock_0']  # DDPM++'s middle attention, on by default.
  assert attention_blocks(middle_attention=False) == []
