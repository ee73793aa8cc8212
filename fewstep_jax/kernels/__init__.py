"""Pallas kernels: flash attention with forward, backward and JVP.

`flash_attention` is the public op; `reference` holds the plain-jnp versions
the tests compare against.
"""

from fewstep_jax.kernels.flash import BACKENDS
from fewstep_jax.kernels.flash import flash_attention
from fewstep_jax.kernels.cost import cost_model
from fewstep_jax.kernels.reference import attention_reference
