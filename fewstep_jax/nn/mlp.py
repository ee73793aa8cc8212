"""Residual MLP for vector data (2-D toy distributions)."""

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from fewstep_jax.nn import layers
from fewstep_jax.nn.remat import remat_block


class ResidualMLPBlock(nn.Module):
  """h + Dense(Dropout(SiLU(Dense(LayerNorm(h)) + Dense(SiLU(cond))))).

  The conditioning enters additively before the nonlinearity, so every block
  sees the time and label.
  """
  hidden: int
  dropout: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    """h: [B, hidden], cond: [B, hidden] -> [B, hidden]."""
    dense = lambda: nn.Dense(
        self.hidden, dtype=self.dtype, param_dtype=self.param_dtype)
    z = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
    z = nn.silu(dense()(z) + dense()(nn.silu(cond)))
    z = nn.Dropout(self.dropout)(z, deterministic=not train)
    return h + dense()(z)


class MLP(nn.Module):
  """Time- (and label-) conditioned residual MLP.

  Non-vector inputs are flattened, so the MLP also runs on tiny images.
  The output layer is zero-initialised: a fresh network outputs exactly 0.

  Attributes:
    hidden: width of the residual stream and the conditioning vector.
    depth: number of residual blocks.
    time_embed_dim: width of the sinusoidal time features.
    num_classes: number of labels (0: unconditional); the table has one more
      row, the null label.
    two_times: condition on a second time r.
    dropout: dropout rate inside the blocks (active when train=True).
    logvar_head: also return a per-sample log-variance [B].
    time_scale: multiplies t (and r) before the sinusoidal embedding.
    remat: what the backward pass keeps of each block ('none', 'full', 'dots'; see fewstep_jax.nn.remat).
    dtype: compute dtype of activations.
    param_dtype: dtype of the parameters.
  """
  hidden: int = 256
  depth: int = 4
  time_embed_dim: int = 64
  num_classes: int = 0
  two_times: bool = False
  dropout: float = 0.0
  logvar_head: bool = False
  time_scale: float = 1000.0
  remat: str = 'none'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      t: jax.Array,
      r: jax.Array | None = None,
      y: jax.Array | None = None,
      *,
      train: bool = False,
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Applies the network.

    Args:
      x: [B, D] (or [B, ...], flattened internally).
      t: [B] float time (or a scalar, broadcast over the batch).
      r: [B] float second time; required iff two_times.
      y: [B] int32 labels, or None for the null label.
      train: enables dropout (rng stream 'dropout').

    Returns:
      [B, ...] float32 like x; with logvar_head, also logvar [B] float32.
    """
    batch = x.shape[0]
    cond, logvar = layers.Conditioning(
        features=self.hidden, frequency_dim=self.time_embed_dim,
        time_scale=self.time_scale, num_classes=self.num_classes,
        two_times=self.two_times, logvar_head=self.logvar_head,
        dtype=self.dtype, param_dtype=self.param_dtype, name='cond')(
            t, r, y, batch)

    h = x.reshape(batch, -1).astype(self.dtype)
    h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='input')(h)
    block = remat_block(ResidualMLPBlock, self.remat, (3,))
    for _ in range(self.depth):
      h = block(
          self.hidden, self.dropout, dtype=self.dtype,
          param_dtype=self.param_dtype)(h, cond, train)
    # The last hidden state serves as bottleneck features for a GAN head (nn.make_features).
    self.sow('intermediates', 'bottleneck', h)
    h = nn.silu(nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h))
    out = nn.Dense(
        x[0].size, kernel_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=self.param_dtype, name='output')(h)
    out = out.reshape(x.shape).astype(jnp.float32)
    return out if logvar is None else (out, logvar)
