"""Rematerialisation of a network's blocks (`network.remat`): what the backward pass keeps of each block's forward.

  'none'  every activation is kept (the default; the network is exactly what it was without the option).
  'full'  each residual / transformer block keeps only its inputs and recomputes the rest in the backward pass:
          the least memory (activations of one block at a time, plus the blocks' inputs), about one more forward
          pass of compute.
  'dots'  each block keeps the outputs of its matrix products without batch dimensions
          (`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`: the Dense / qkv / MLP projections) and
          recomputes the rest (norms, activations, attention). Not `checkpoint_dots`, which would also keep the
          batched products of attention, the [B, heads, N, N] scores and weights: the largest activations of a
          transformer and the cheapest to recompute. Convolutions are not matrix products to this policy, so in
          the convolutional U-Nets 'dots' keeps only their attention and embedding projections.

Every block keeps its parameter names under any value (the wrapped class takes the block's class name, which Flax's
automatic names are made of), so checkpoints and teachers move freely between values; the loss and gradients equal
those without remat up to floating-point rounding (tests/test_remat.py).

  'dots_offload'  what 'dots' keeps, kept in host memory ('pinned_host') instead of the device's
          (`jax.checkpoint_policies.offload_dot_with_no_batch_dims`): the projections' outputs leave the device after
          the forward pass and come back for the backward one. It needs a backend with host memory (the trainer
          checks); on XLA:CPU both memories are one, so it is checked there for its results, not its memory.
"""
import functools

import flax.linen as nn
import jax

from fewstep_jax.errors import ConfigError

# name -> the policy of jax.checkpoint (what a block keeps); 'none' wraps nothing.
REMAT_POLICIES = {
    'full': None,  # jax.checkpoint's default: nothing saveable.
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'dots_offload': jax.checkpoint_policies.offload_dot_with_no_batch_dims('device', 'pinned_host'),
}
REMAT_CHOICES = ('none',) + tuple(REMAT_POLICIES)


def check_remat(remat: str):
  """A ConfigError (one line) unless `remat` is one of REMAT_CHOICES."""
  if remat not in REMAT_CHOICES:
    raise ConfigError(f'unknown network.remat {remat!r}; use one of {list(REMAT_CHOICES)}')


@functools.lru_cache(maxsize=None)
def remat_block(block: type, remat: str, static_argnums: tuple = ()) -> type:
  """`block` (a Flax module class) as network.remat = `remat` has it: itself for 'none', else its __call__ under
  nn.remat with that value's policy. static_argnums: the positions of __call__'s non-array arguments (a `train`
  flag), counted as nn.remat counts them, self being 0."""
  check_remat(remat)
  if remat == 'none':
    return block
  wrapped = nn.remat(block, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)
  # Flax names an unnamed submodule after its class (DiTBlock_0): keep the block's names, hence its parameters'.
  wrapped.__name__ = block.__name__
  wrapped.__qualname__ = block.__qualname__
  return wrapped
