"""Plain-jnp attention: what the Pallas kernels are tested against.

`attention_reference` materialises the [N, M] score matrix, so every JAX
transformation applies to it directly (`jax.jvp`, `jax.grad`, higher orders);
the tests differentiate it with JAX's own rules, independently of the kernels'
hand-written JVP and backward. The float32 math also gives the yardstick for
bfloat16 inputs.
"""

import jax
import jax.numpy as jnp


def attention_reference(
    q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
    sm_scale: float | None = None) -> tuple[jax.Array, jax.Array]:
  """O = softmax(s q k^T) v and L = logsumexp(s q k^T), in float32.

  Args:
    q: [batch, seq_q, heads, head_dim].
    k, v: [batch, seq_k, heads, head_dim].
    causal: key j is visible to query i iff j <= i.
    sm_scale: logit scale; default head_dim ** -0.5.

  Returns:
    O [batch, seq_q, heads, head_dim] float32 and L [batch, heads, seq_q].
  """
  if sm_scale is None:
    sm_scale = q.shape[-1] ** -0.5
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  s = jnp.einsum('bqhd,bkhd->bhqk', q, k,
                 precision=jax.lax.Precision.HIGHEST) * sm_scale
  if causal:
    visible = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
    s = jnp.where(visible, s, -jnp.inf)
  lse = jax.nn.logsumexp(s, axis=-1)
  p = jnp.exp(s - lse[..., None])
  o = jnp.einsum('bhqk,bkhd->bqhd', p, v, precision=jax.lax.Precision.HIGHEST)
  return o, lse
