"""Pallas flash attention (interpret mode) against the plain-jnp reference.

Shapes: N = 144 queries and M = 152 keys with (32, 64)-row (GPU) and
(64, 128)-row (TPU) tiles, so both sequence axes have at least two tiles, the
causal diagonal crosses several key tiles, and neither length is a multiple
of its tile (exercising the padding and key masking); head_dim 8 is padded to
16 on GPU. The
reference is differentiated by JAX itself, independently of the kernels'
hand-written JVP and backward.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
import numpy as np
import pytest
from conftest import xla_flags

from fewstep_jax.config_base import base_config
from fewstep_jax.kernels import attention_reference
from fewstep_jax.kernels import cost_model
from fewstep_jax.kernels import flash_attention
from fewstep_jax.methods import build_method
from fewstep_jax.methods.base import StepContext

B, N, M, H, D = 2, 144, 152, 2, 8
BLOCKS = {'gpu': dict(block_q=32, block_k=64),
          'tpu': dict(block_q=64, block_k=128)}
BACKENDS = sorted(BLOCKS)
F32_TOL = dict(atol=2e-5, rtol=2e-5)


def _inputs(n=N, m=M, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 6)
  shapes = [(B, n, H, D), (B, m, H, D), (B, m, H, D)] * 2
  primals_and_tangents = [jax.random.normal(key, shape).astype(dtype)
                          for key, shape in zip(keys, shapes)]
  return tuple(primals_and_tangents[:3]), tuple(primals_and_tangents[3:])


def _kernel(backend, causal):
  return functools.partial(flash_attention, causal=causal, backend=backend,
                           interpret=True, **BLOCKS[backend])


def _reference(causal):
  return lambda q, k, v: attention_reference(q, k, v, causal=causal)[0]


def _mean_flow_style_loss(attention, tangents):
  """(o - sg(target(o, do)))^2: the gradient flows through the primal only."""
  def loss(q, k, v):
    o, do = jax.jvp(attention, (q, k, v), tuple(tangents))
    target = jax.lax.stop_gradient(0.5 * o - 0.3 * do)
    return jnp.sum(jnp.sin(o - target) ** 2)
  return loss


def _close(actual, expected, **tol):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a, np.float32),
                               np.asarray(e, np.float32), **(tol or F32_TOL))


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('backend', BACKENDS)
def test_forward_and_log_sum_exp(backend, causal):
  (q, k, v), _ = _inputs()
  attention = _kernel(backend, causal)
  _close(jax.jit(attention)(q, k, v), _reference(causal)(q, k, v))
  _close(attention(q, k, v), _reference(causal)(q, k, v))
  # The log-sum-exp the JVP and backward kernels rely on.
  from fewstep_jax.kernels import flash as module
  call = module._Call(backend=backend, causal=causal, sm_scale=D ** -0.5,
                      interpret=True, num_warps=4, num_stages=2,
                      **BLOCKS[backend])
  _, lse = module._forward(call, q, k, v)
  _close(lse, attention_reference(q, k, v, causal=causal)[1])


@pytest.mark.parametrize('backend, causal, which', [
    (backend, causal, which) for backend in BACKENDS
    for causal, which in [(False, 'qkv'), (True, 'qkv'), (False, 'q'),
                          (True, 'k'), (False, 'v')]])
def test_jvp_tangents(backend, causal, which):
  primals, tangents = _inputs()
  # Zero tangents are symbolic: only the named inputs move.
  moving = ['qkv'.index(c) for c in which]
  def restricted(fn):
    def f(*moved):
      args = list(primals)
      for i, x in zip(moving, moved):
        args[i] = x
      return fn(*args)
    return f
  args = [primals[i] for i in moving]
  dirs = [tangents[i] for i in moving]
  out, tangent = jax.jit(lambda a, d: jax.jvp(
      restricted(_kernel(backend, causal)), a, d))(args, dirs)
  ref_out, ref_tangent = jax.jvp(restricted(_reference(causal)), args, dirs)
  _close((out, tangent), (ref_out, ref_tangent))


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('backend', BACKENDS)
def test_gradients_wrt_q_k_v(backend, causal):
  (q, k, v), _ = _inputs()
  weights = jax.random.normal(jax.random.PRNGKey(7), (B, N, H, D))
  def loss(attention):
    return lambda q, k, v: jnp.sum(weights * jnp.tanh(attention(q, k, v)))
  grads = jax.jit(jax.grad(loss(_kernel(backend, causal)), (0, 1, 2)))(q, k, v)
  _close(grads, jax.grad(loss(_reference(causal)), (0, 1, 2))(q, k, v))
  # vjp with an explicit cotangent, outside jit.
  _, pullback = jax.vjp(_kernel(backend, causal), q, k, v)
  _, ref_pullback = jax.vjp(_reference(causal), q, k, v)
  _close(pullback(weights), ref_pullback(weights))


@pytest.mark.parametrize('backend, causal, jit', [
    (backend, causal, jit) for backend in BACKENDS
    for causal, jit in [(False, True), (True, True), (True, False)]])
def test_gradient_of_a_loss_that_stop_gradients_the_jvp(backend, causal, jit):
  primals, tangents = _inputs()
  grad = jax.grad(_mean_flow_style_loss(_kernel(backend, causal), tangents),
                  (0, 1, 2))
  grad = jax.jit(grad) if jit else grad
  expected = jax.grad(_mean_flow_style_loss(_reference(causal), tangents),
                      (0, 1, 2))(*primals)
  _close(grad(*primals), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('backend', BACKENDS)
def test_bfloat16_inputs_accumulate_in_float32(backend):
  primals, tangents = _inputs(dtype=jnp.bfloat16)
  attention = _kernel(backend, False)
  out, tangent = jax.jit(lambda p, t: jax.jvp(attention, p, t))(primals,
                                                                tangents)
  assert out.dtype == tangent.dtype == jnp.bfloat16
  ref_out, ref_tangent = jax.jvp(_reference(False), primals, tangents)
  # bfloat16 keeps 8 bits of mantissa: errors of a few 1e-3 relative to O(1)
  # values are rounding; a float32 accumulation bug would be far larger.
  _close((out, tangent), (ref_out, ref_tangent), atol=3e-2, rtol=3e-2)
  grads = jax.grad(lambda q, k, v: jnp.sum(
      attention(q, k, v).astype(jnp.float32) ** 2), (0, 1, 2))(*primals)
  ref_grads = jax.grad(lambda q, k, v: jnp.sum(
      _reference(False)(q, k, v) ** 2), (0, 1, 2))(*primals)
  _close(grads, ref_grads, atol=6e-2, rtol=6e-2)


def test_vmap_of_jvp_and_its_gradient():
  """Per-example jax.jvp under vmap (a batching rule for linear_call)."""
  (q, k, v), (dq, _, dv) = _inputs()
  def per_example(attention):
    def f(q, k, v, dq, dv):
      return jax.jvp(lambda q, v: attention(q[None], k[None], v[None])[0],
                     (q, v), (dq, dv))
    return f
  def loss(attention):
    def l(q):
      o, do = jax.vmap(per_example(attention))(q, k, v, dq, dv)
      return jnp.sum(o * jax.lax.stop_gradient(do))
    return l
  kernel = _kernel('gpu', False)
  _close(jax.vmap(per_example(kernel))(q, k, v, dq, dv),
         jax.vmap(per_example(_reference(False)))(q, k, v, dq, dv))
  _close(jax.jit(jax.grad(loss(kernel)))(q),
         jax.grad(loss(_reference(False)))(q), atol=1e-4, rtol=1e-4)


def test_gradient_through_the_tangent_is_refused():
  primals, tangents = _inputs()
  def through_tangent(q):
    _, do = jax.jvp(lambda q: _kernel('gpu', False)(q, *primals[1:]), (q,),
                    (tangents[0],))
    return jnp.sum(do ** 2)
  with pytest.raises(NotImplementedError, match='stop_gradient'):
    jax.grad(through_tangent)(primals[0])


def test_gradient_wrt_the_tangent_direction_is_supported():
  """The tangent map is linear in the direction: its transpose is exact."""
  primals, tangents = _inputs()
  def along(attention):
    return lambda dq: jnp.sum(jnp.sin(jax.jvp(
        lambda q: attention(q, *primals[1:]), (primals[0],), (dq,))[1]))
  _close(jax.grad(along(_kernel('gpu', True)))(tangents[0]),
         jax.grad(along(_reference(True)))(tangents[0]))


def _kernel_names(jaxpr) -> list[str]:
  """Names of the pallas_call kernels in a jaxpr, sub-jaxprs included."""
  names = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'pallas_call':
      names.append(str(eqn.params['name']).split(' ')[0])
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else [param]):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          names += _kernel_names(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          names += _kernel_names(sub)
  return names


@pytest.mark.parametrize('backend', BACKENDS)
def test_grad_of_jvp_runs_one_forward_one_jvp_one_backward(backend):
  primals, tangents = _inputs()
  grad = jax.grad(_mean_flow_style_loss(_kernel(backend, True), tangents),
                  (0, 1, 2))
  names = sorted(_kernel_names(jax.make_jaxpr(grad)(*primals).jaxpr))
  assert names == ['flash_backward_dkdv', 'flash_backward_dq',
                   'flash_forward', 'flash_jvp']


@pytest.mark.parametrize('backend, platform, marker', [
    ('gpu', 'cuda', '__gpu$xla.gpu.triton'), ('tpu', 'tpu', 'tpu_custom_call')])
def test_kernels_lower_for_their_hardware(backend, platform, marker):
  """Triton / Mosaic lowering runs (no device needed) at real tile sizes."""
  q = jnp.zeros((1, 256, 2, 64), jnp.bfloat16)
  k = jnp.zeros((1, 384, 2, 64), jnp.bfloat16)
  attention = functools.partial(flash_attention, causal=True, backend=backend)
  grad = jax.grad(_mean_flow_style_loss(
      lambda *x: attention(*x).astype(jnp.float32), (q, k, k)), (0, 1, 2))
  for fn, kernels in ((attention, 1), (grad, 4)):
    text = jax.jit(fn).trace(q, k, k).lower(
        lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == kernels


def test_tpu_kernels_under_the_tpu_interpreter():
  """The TPU interpreter simulates VMEM, DMAs and the grid order.

  It runs eagerly only: its ordered callbacks cannot be lowered inside
  linear_call under jit (the jitted paths are covered above with the generic
  interpreter).
  """
  primals, tangents = _inputs()
  attention = functools.partial(flash_attention, causal=True, backend='tpu',
                                **BLOCKS['tpu'])
  with pltpu.force_tpu_interpret_mode():
    out, tangent = jax.jvp(attention, primals, tangents)
    grads = jax.grad(_mean_flow_style_loss(attention, tangents),
                     (0, 1, 2))(*primals)
  _close((out, tangent), jax.jvp(_reference(True), primals, tangents))
  _close(grads, jax.grad(_mean_flow_style_loss(_reference(True), tangents),
                         (0, 1, 2))(*primals), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('kwargs, shapes, message', [
    (dict(backend='cuda'), None, "unknown flash_attention backend 'cuda'"),
    (dict(block_q=48), None, 'block_q=48 must be a power of two >= 16'),
    (dict(backend='tpu', block_k=64), None,
     'block_k=64 must be a positive multiple of 128'),
    ({}, ((1, 8, 2, 4), (1, 8, 2, 8), (1, 8, 2, 8)), 'agree on batch, heads'),
    ({}, ((1, 8, 2, 4), (1, 8, 2, 4), (1, 9, 2, 4)), 'k and v shapes differ'),
    ({}, ((8, 2, 4), (8, 2, 4), (8, 2, 4)), r'\[batch, seq, heads, head_dim\]'),
])
def test_bad_arguments_are_clear_errors(kwargs, shapes, message):
  shapes = shapes or ((1, 8, 2, 4),) * 3
  args = [jnp.zeros(s) for s in shapes]
  with pytest.raises(ValueError, match=message):
    flash_attention(*args, interpret=True, **kwargs)
  with pytest.raises(ValueError, match='float32 or bfloat16'):
    flash_attention(*(jnp.zeros((1, 8, 2, 4), jnp.float16),) * 3)
  with pytest.raises(ValueError, match='must share a dtype'):
    flash_attention(jnp.zeros((1, 8, 2, 4), jnp.bfloat16),
                    *(jnp.zeros((1, 8, 2, 4)),) * 2)


def test_cost_model_ratios():
  """The modeled ratios (kernels/cost.py): JVP 2.5x and backward 3.5x the forward FLOPs."""
  cost = cost_model(1024, 2048, 64)
  assert cost['forward']['flops'] == 4 * 1024 * 2048 * 64
  assert cost['jvp']['flops'] / cost['forward']['flops'] == 2.5
  assert cost['backward']['flops'] / cost['forward']['flops'] == 3.5


# ------------------------------------------------- networks and JVP methods


def _meanflow_on_dit(attention):
  config = base_config(method='meanflow', network='dit', dataset='digits')
  config.network.update(hidden=16, depth=1, heads=2, patch_size=2,
                        time_embed_dim=16, two_times=True, attention=attention)
  config.method.update(label_dropout=0.0)
  return build_method(config, data_shape=(8, 8, 1), num_classes=10)


@pytest.mark.slow
def test_meanflow_trains_the_same_with_pallas_and_xla_attention():
  """Two jitted MeanFlow steps on a DiT (16 tokens, interpret-mode kernels):
  same losses and parameters as with the plain attention (about 40 s; the
  default run keeps sCT's JVP loss and gradient through the kernels)."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  batch = {'x': jax.random.normal(keys[0], (8, 8, 8, 1)),
           'y': jax.random.randint(keys[1], (8,), 0, 10)}
  runs = {}
  for attention in ('xla', 'pallas'):
    method = _meanflow_on_dit(attention)
    state = method.init(jax.random.PRNGKey(1))
    step = jax.jit(method.step)
    losses = []
    for i in range(2):
      state, metrics = step(state, batch, jax.random.fold_in(keys[2], i))
      losses.append(float(metrics['loss']))
    runs[attention] = (losses, state.nets['student'].params)
  np.testing.assert_allclose(runs['pallas'][0], runs['xla'][0], rtol=1e-4)
  _close(runs['pallas'][1], runs['xla'][1], atol=1e-5, rtol=1e-4)


def _sct_on_dit(attention):
  config = base_config(method='sct', network='dit', dataset='digits')
  config.network.update(hidden=16, depth=1, heads=2, patch_size=2,
                        time_embed_dim=16, logvar_head=True,
                        attention=attention)
  config.method.update(label_dropout=0.0, tangent_warmup_steps=1)
  return build_method(config, data_shape=(8, 8, 1), num_classes=10)


@pytest.mark.slow  # About 35 s; the kernels' JVP and its gradient stay in the default run (test_vmap_of_jvp...).
def test_sct_loss_and_gradient_match_with_pallas_and_xla_attention():
  """sCT's loss (one JVP along the TrigFlow path with the rearranged
  tangents, gradient through the primal only) on a DiT whose adaLN-Zero layers
  are perturbed so that attention shapes the output and its derivative."""
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  batch = {'x': jax.random.normal(keys[0], (4, 8, 8, 1)),
           'y': jax.random.randint(keys[1], (4,), 0, 10)}
  params = None
  results = {}
  for attention in ('xla', 'pallas'):
    method = _sct_on_dit(attention)
    if params is None:
      params = jax.tree.map(
          lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(5),
                                                 p.shape),
          method.init(jax.random.PRNGKey(4)).nets['student'].params)
    loss = functools.partial(method.loss, batch=batch, key=keys[2], ctx=StepContext(step=1))
    (value, metrics), grads = jax.jit(jax.value_and_grad(
        lambda p, loss=loss: loss(p), has_aux=True))(params)
    results[attention] = (value, metrics['g_rms'], grads)
  _close(results['pallas'], results['xla'], atol=2e-5, rtol=2e-4)


def test_jvp_methods_refuse_attention_without_forward_mode():
  with pytest.raises(ValueError, match="'cudnn' has no forward-mode"):
    _meanflow_on_dit('cudnn')
  _meanflow_on_dit('pallas')  # accepted


def test_forward_over_forward_gives_nan_not_wrong_numbers():
  primals, tangents = _inputs()
  def tangent_along_q(q):
    return jax.jvp(lambda q: _kernel('gpu', False)(q, *primals[1:]), (q,),
                   (tangents[0],))[1]
  _, second = jax.jvp(tangent_along_q, (primals[0],), (tangents[0],))
  assert np.isnan(np.asarray(second)).all()


_SHARDED_SCRIPT = r'''
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.train import sharding

mesh = jax.make_mesh((4, 2), sharding.BATCH_AXES,
                     axis_types=(jax.sharding.AxisType.Auto,) * 2)
keys = jax.random.split(jax.random.PRNGKey(0), 6)
x = [jax.device_put(jax.random.normal(key, (8, 24, 2, 8)),
                    NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES)))
     for key in keys]

def grad_of_jvp_loss(impl):
  def loss(q, k, v):
    o, do = jax.jvp(lambda *a: attention_lib.attention(*a, impl=impl),
                    (q, k, v), tuple(x[3:]))
    return jnp.sum((o - jax.lax.stop_gradient(o - 0.3 * do)) ** 2)
  def step(q, k, v):  # as the trainer traces its step
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.grad(loss, (0, 1, 2))(q, k, v)
  return jax.jit(step)

pallas, xla = grad_of_jvp_loss('pallas'), grad_of_jvp_loss('xla')
jaxpr = str(jax.make_jaxpr(pallas)(*x[:3]))
assert 'shard_map' in jaxpr and jaxpr.count('pallas_call') == 4, jaxpr
for a, b in zip(pallas(*x[:3]), xla(*x[:3])):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
  assert a.sharding.spec == PartitionSpec(sharding.BATCH_AXES), a.sharding
print('OK')
'''


def test_pallas_attention_runs_per_batch_shard_on_a_mesh(repo):
  """8 simulated devices: under the trainer's mesh context the kernels run in
  a shard_map over the batch axes (XLA cannot partition a kernel) and the
  gradients match the xla path's."""
  result = subprocess.run(
      [sys.executable, '-c', _SHARDED_SCRIPT], cwd=repo, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ,
               XLA_FLAGS=xla_flags('--xla_force_host_platform_device_count=8')))
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


_EVAL_SAMPLER_SCRIPT = r'''
import sys
import jax, numpy as np
from fewstep_jax.config_base import load_config
from fewstep_jax.eval import evaluate
from fewstep_jax import trainer

samples = {}
for impl in ('pallas', 'xla'):
  config = load_config('configs/digits/flow_matching.py', {
      'network.channels': 8, 'network.attn_resolutions': (4,), 'network.attention': impl, 'mesh.data': 8,
      'data.dir': sys.argv[1], 'eval.batch_size': 16})
  run = trainer.Run(config)
  params = run.method.init(jax.random.PRNGKey(0)).nets['student'].params
  leaves, tree = jax.tree.flatten(params)  # Perturbed: the attention's zero-initialised output would hide it.
  noise = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, noise)])
  if impl == 'pallas':
    indices = jax.device_put(np.arange(16, dtype=np.int32), evaluate.sharding.batch_sharding(run.mesh))
    jaxpr = str(jax.make_jaxpr(evaluate.compiled_sampler(run, 16, 2))(params, jax.random.PRNGKey(0), indices))
    assert 'shard_map' in jaxpr and 'pallas_call' in jaxpr, jaxpr[:2000]
  samples[impl] = evaluate.generate(run, params, 2, 20, 0)[0]
np.testing.assert_allclose(samples['pallas'], samples['xla'], atol=2e-4, rtol=2e-4)
assert np.abs(samples['xla']).max() > 0.1
print('OK', np.abs(samples['pallas'] - samples['xla']).max())
'''


@pytest.mark.slow
def test_the_eval_sampler_runs_pallas_attention_per_device(repo, tmp_path):
  """8 simulated devices: the evaluation sampler (one key per sample, under shard_map) runs the Pallas kernels per
  device, and its samples equal those of the xla attention (about a minute: the kernels run interpreted)."""
  result = subprocess.run(
      [sys.executable, '-c', _EVAL_SAMPLER_SCRIPT, str(tmp_path / 'data')], cwd=repo, capture_output=True,
      text=True, timeout=600,
      env=dict(os.environ, XLA_FLAGS=xla_flags('--xla_force_host_platform_device_count=8')))
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
