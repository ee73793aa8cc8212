"""The training rules the published networks carry: EDM2's forced weight normalisation against EDM2's own loop, ECT's
per-resolution dropout, SiT's label dropout, and the network fields that change no parameter."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fewstep_jax import nn, runs
from fewstep_jax.nn import edm2_unet
from fewstep_jax.train.trained import TrainedNetwork

SHAPE = (8, 8, 3)
TINY = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), logvar_head=False)


def _rms_per_row(w):
  w = np.asarray(w, np.float64).reshape(w.shape[0], -1)
  return np.sqrt(np.mean(w ** 2, axis=1))


def _weights(params):
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if path[-1].key == 'weight'}


def test_forced_weight_norm_follows_edm2s_loop():
  """EDM2's loop (training/training_loop.py with MPConv.forward in training mode) keeps stored weights w; each
  forward first writes w <- normalize(w), then computes with normalize(w); Adam then moves w and the EMA averages the
  moved w. TrainedNetwork's projection after each update must give the same forward passes and the same EMA; without
  it (forced_weight_norm=False) the weights drift off the unit sphere and the trajectory differs."""
  one_level = dict(TINY, channel_mult=(1,))
  module = edm2_unet.EDM2UNet(**one_level)
  x = jax.random.normal(jax.random.PRNGKey(1), (4,) + SHAPE)
  t = jnp.linspace(-1.0, 1.0, 4)
  target = jax.random.normal(jax.random.PRNGKey(2), (4,) + SHAPE)
  apply = jax.jit(nn.make_apply(module))  # Jitted: eager flax calls compile an op at a time.
  loss = lambda params: jnp.mean((apply(params, x, t) - target) ** 2)
  params0 = nn.init_params(module, jax.random.PRNGKey(0), x[:1])
  # Gains start at 0 (an output of 0); move them so that every weight receives a gradient.
  params0 = jax.tree_util.tree_map_with_path(lambda p, v: v + 1.0 if p[-1].key in ('out_gain', 'emb_gain') else v,
                                             params0)
  tx = optax.adam(0.05)
  rate = 0.5
  grad = jax.jit(jax.grad(loss))

  # EDM2's loop, written out.
  def project(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, w: edm2_unet.normalize(w, range(1, w.ndim)) if p[-1].key == 'weight' else w, params)
  @jax.jit
  def edm2_step(stored, opt_state, ema):
    stored = project(stored)  # The in-place write at the forward pass; the forward normalises once more.
    updates, opt_state = tx.update(grad(stored), opt_state, stored)
    stored = optax.apply_updates(stored, updates)
    return stored, opt_state, jax.tree.map(lambda e, p: rate * e + (1 - rate) * p, ema, stored)

  stored, opt_state, ema = params0, tx.init(project(params0)), params0
  reference = []
  for _ in range(3):
    reference.append(apply(project(stored), x, t))
    stored, opt_state, ema = edm2_step(stored, opt_state, ema)

  def ours(forced):
    network = TrainedNetwork(edm2_unet.EDM2UNet(**one_level, forced_weight_norm=forced), tx, ema_rates=(rate,))
    net, update = network.init(params0), jax.jit(network.apply_gradients)
    outputs = []
    for _ in range(3):
      outputs.append(apply(net.params, x, t))
      net = update(net, grad(net.params))
    return outputs, net

  outputs, net = ours(True)
  for step, (ref, out) in enumerate(zip(reference, outputs)):
    # Adam turns rounding-level gradient differences (another fusion) into lr-sized steps: 1e-4, not 1e-6.
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4, err_msg=f'forward pass {step}')
  # The stored weights stay on the unit-RMS sphere (EDM2's fixed point 1 - 1e-4, not exactly 1).
  for name, w in _weights(net.params).items():
    np.testing.assert_allclose(_rms_per_row(w), 1.0, atol=3e-4, err_msg=name)
  # The EMA averaged the weights as Adam left them, before the projection; the first EMA point is the start.
  ema_init_gap = jax.tree.map(lambda p0, pp: (rate ** 3) * (p0 - pp), params0, project(params0))
  for (name, got), want, gap in zip(_weights(net.ema[f'ema_{rate:g}']).items(), _weights(ema).values(),
                                    _weights(ema_init_gap).values()):
    # EDM2's EMA starts at the raw initial weights; ours at their projection: the gap decays as rate^steps.
    np.testing.assert_allclose(got, want - gap, rtol=1e-4, atol=1e-4, err_msg=name)

  free, free_net = ours(False)
  assert np.abs(free[-1] - reference[-1]).max() > 1e-2
  assert any(abs(_rms_per_row(w) - 1).max() > 1e-2 for w in _weights(free_net.params).values())


def test_dropout_res_limits_dropout_to_coarse_blocks():
  """ECT's dropout_res: dropout only in blocks whose resolution is <= dropout_res."""
  x = jax.random.normal(jax.random.PRNGKey(1), (2,) + SHAPE)
  t = jnp.zeros((2,))
  module = edm2_unet.EDM2UNet(**dict(TINY, dropout=0.5))
  # Random parameters drawn with numpy (no compiled init), gains included, so that every block shapes the output.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype),
                        jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), x[:1])))

  def outputs(dropout_res, seed):
    m = edm2_unet.EDM2UNet(**dict(TINY, dropout=0.5, dropout_res=dropout_res))
    return np.asarray(jax.jit(nn.make_apply(m))(params, x, t, key=jax.random.PRNGKey(seed)))

  differ = lambda a, b: not np.allclose(a, b)
  assert differ(outputs(4, 3), outputs(4, 4))  # Dropout in the 4x4 blocks...
  assert differ(outputs(4, 3), outputs(0, 3))  # ...and only there: the same masks there, none at 8x8.


def test_sit_label_dropout_can_be_left_to_the_method():
  """SiT drops labels in its training passes (its LabelEmbedder); train_label_dropout=False keeps the null row but
  never drops, so that a training pass with a dropout key computes the evaluation pass."""
  from fewstep_jax.nn.sit import SiT
  tiny = dict(depth=1, hidden_size=16, patch_size=2, num_heads=2, class_dropout_prob=0.5, num_classes=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 2))
  t = jnp.full((8,), 0.5)
  y = jnp.arange(8) % 3
  module = SiT(**tiny)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype),
                        jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), x[:1])))
  evaluation = nn.make_apply(module)(params, x, t, y=y)
  dropping = nn.make_apply(module)(params, x, t, y=y, key=jax.random.PRNGKey(1))
  kept = nn.make_apply(SiT(**tiny, train_label_dropout=False))(params, x, t, y=y, key=jax.random.PRNGKey(1))
  assert not np.allclose(dropping, evaluation)
  np.testing.assert_allclose(kept, evaluation, rtol=1e-6, atol=1e-6)


def test_parameter_free_fields_do_not_make_networks_differ():
  """A student without EDM2's uncertainty head (or its forced weight normalisation, or with ECT's dropout_res)
  starts from a published EDM2 network that has them; a SiT student that leaves label dropout to its method starts
  from SiT's checkpoint; fields that change parameters still differ."""
  teacher = nn.network_defaults('edm2_unet')
  student = nn.network_defaults('edm2_unet')
  student.update(logvar_head=False, forced_weight_norm=False, dropout_res=16, dropout=0.4)
  assert runs.network_differences(teacher, student) == []
  student.model_channels = 64
  assert runs.network_differences(teacher, student) == ['model_channels']
  sit_teacher, sit_student = nn.network_defaults('sit'), nn.network_defaults('sit')
  sit_student.train_label_dropout = False
  assert runs.network_differences(sit_teacher, sit_student) == []
  # The field is free for SiT only: another network with the same field name would still be compared.
  dit_head, dit_plain = nn.network_defaults('dit'), nn.network_defaults('dit')
  dit_head.logvar_head = not dit_plain.logvar_head
  assert runs.network_differences(dit_head, dit_plain) == ['logvar_head']
