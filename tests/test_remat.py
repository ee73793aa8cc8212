"""network.remat (fewstep_jax/nn/remat.py): on every network with blocks, 'full' and 'dots' give the loss and the
gradients of 'none' (to float32 rounding) with the same parameter names, and an unknown value is one clear error."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fewstep_jax import nn
from fewstep_jax.errors import ConfigError
from fewstep_jax.nn import remat as remat_lib

SHAPE = (2, 8, 8, 1)
CLASSES = 3
# Tiny networks of every family with blocks; dropout where the network has it, so that the recomputed forward pass
# must draw the same masks.
TINY = {
    'mlp': dict(hidden=16, depth=2, time_embed_dim=8, dropout=0.1),
    'unet': dict(channels=8, channel_mult=(1, 2), attn_resolutions=(8,), time_embed_dim=8, dropout=0.1),
    'dit': dict(hidden=16, depth=2, heads=2, time_embed_dim=16, dropout=0.1),
    'sit': dict(depth=2, hidden_size=16, patch_size=2, num_heads=2),
    'edm_songunet': dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.1),
    'edm_dhariwalunet': dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,),
                             dropout=0.1),
    'edm2_unet': dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), logvar_channels=8,
                      dropout=0.1, logvar_head=False),
    'cm_unet': dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,), num_head_channels=16,
                    dropout=0.1),
    'sd_unet': dict(preset='digits'),
}
TEXT_TOKENS = (SHAPE[0], 4, 64)  # The 'digits' preset's cross-attention width.


def _module(name, remat):
  config = ml_collections.ConfigDict(dict(name=name, remat=remat, **TINY[name]))
  return nn.build_network(config, num_classes=0 if name == 'sd_unet' else CLASSES)


def _condition(name):
  if name == 'sd_unet':  # The digits preset's condition: tokens, the pooled caption and SDXL's size ids.
    return {'tokens': jax.random.normal(jax.random.PRNGKey(3), TEXT_TOKENS),
            'pooled': jax.random.normal(jax.random.PRNGKey(4), (TEXT_TOKENS[0], 64)),
            'time_ids': jnp.tile(jnp.array([8.0, 8, 0, 0, 8, 8]), (TEXT_TOKENS[0], 1))}
  return jnp.array([0, CLASSES - 1])


def _losses_and_grads(name, params) -> dict:
  """{remat: (loss, gradient)} for 'none', 'full' and 'dots', compiled together (one compilation, not three)."""
  x = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  t = jnp.array([0.3, 0.7])
  y, key = _condition(name), jax.random.PRNGKey(2)
  # A loss that weighs every output element differently, so that no gradient vanishes by symmetry.
  weights = jax.random.normal(jax.random.PRNGKey(4), SHAPE)

  def loss(params, remat):
    return jnp.mean(weights * nn.make_apply(_module(name, remat))(params, x, t, None, y, key) ** 2)

  return jax.jit(lambda params: {remat: jax.value_and_grad(loss)(params, remat) for remat in remat_lib.REMAT_CHOICES})(
      params)


def _parameter_shapes(name, remat):
  return jax.eval_shape(lambda: nn.init_params(_module(name, remat), jax.random.PRNGKey(0), jnp.zeros(SHAPE)))


def _random_params(shapes):
  """N(0, 0.2^2) parameters (numpy: no initialiser to compile), so that no zero-initialised layer hides the ones
  before it."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


# The convolutional U-Nets and sd_unet take a minute or more each to compile on two CPU cores, unet, sit and dit 10
# to 30 s: `pytest -m slow`. The default run keeps mlp's blocks, the wrapper's every path.
SLOW = ('cm_unet', 'dit', 'edm2_unet', 'edm_dhariwalunet', 'edm_songunet', 'sd_unet', 'unet', 'sit')


@pytest.mark.parametrize('name', [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
                                  for name in sorted(TINY)])
def test_full_and_dots_give_the_loss_and_gradients_of_none_with_the_same_parameter_names(name):
  shapes = _parameter_shapes(name, 'none')
  for remat in ('full', 'dots'):
    assert _parameter_shapes(name, remat) == shapes, remat
  results = _losses_and_grads(name, _random_params(shapes))
  loss, grads = results['none']
  scale = float(optax.tree.norm(grads))
  assert scale > 0
  for remat in ('full', 'dots'):
    other_loss, other_grads = results[remat]
    np.testing.assert_allclose(other_loss, loss, rtol=1e-5, err_msg=remat)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(other_grads)):
      # Relative to the whole gradient's size: a leaf whose gradient is near 0 differs by rounding of the rest.
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale, err_msg=f'{remat} {jax.tree_util.keystr(path)}')


def test_none_leaves_the_block_class_as_it_is():
  from fewstep_jax.nn.dit import DiTBlock
  assert remat_lib.remat_block(DiTBlock, 'none') is DiTBlock
  assert remat_lib.remat_block(DiTBlock, 'full', (3,)).__name__ == 'DiTBlock'


def test_an_unknown_remat_value_is_one_clear_error():
  config = ml_collections.ConfigDict(dict(name='dit', remat='selective', **TINY['dit']))
  with pytest.raises(ConfigError, match=r"^unknown network.remat 'selective'; use one of \['none', 'full', 'dots', "
                                       r"'dots_offload'\]$"):
    nn.build_network(config, num_classes=0)
