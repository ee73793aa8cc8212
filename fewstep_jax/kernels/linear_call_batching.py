"""A batching rule for `jax.custom_derivatives.linear_call`.

`flash_attention` produces its JVP tangent through `linear_call`, which the
installed JAX cannot `vmap` (it has JVP and transpose rules only). The rule
below is the obvious one: vmap the linear function and its transpose and bind a
new `linear_call` on the batched operands. It is registered only when JAX has
none, so a future JAX rule wins.
"""

import jax
import jax.numpy as jnp
from jax._src import core
from jax._src import custom_derivatives
from jax._src.interpreters import batching


def _batched_linear_call(axis_data, args, dims, *, callee, transpose_thunk,
                         num_callee_consts, num_res):
  size = axis_data.size
  args = [x if d is None else jnp.moveaxis(x, d, 0)
          for x, d in zip(args, dims)]
  consts_and_res = args[:num_callee_consts + num_res]
  res_axes = [None if d is None else 0
              for d in dims[:num_callee_consts + num_res]]
  # Every linear operand becomes batched, so the transpose (whose outputs
  # match the linear operands) has one batched layout to produce.
  linear = [
      jnp.broadcast_to(x, (size,) + x.shape) if d is None else x
      for x, d in zip(args[num_callee_consts + num_res:],
                      dims[num_callee_consts + num_res:])]

  def fun(res, lin):
    return jax.vmap(lambda r, l: core.jaxpr_as_fun(callee)(*r, *l),
                    in_axes=(res_axes, 0), axis_size=size)(res, lin)

  def fun_transpose(res, cts):
    transpose, t_consts = transpose_thunk()
    res = res[num_callee_consts:]
    return jax.vmap(
        lambda r, c: core.jaxpr_as_fun(transpose)(*t_consts, *r, *c),
        in_axes=(res_axes[num_callee_consts:], 0), axis_size=size)(res, cts)

  out = custom_derivatives.linear_call(fun, fun_transpose, consts_and_res,
                                       linear)
  return out, [0] * len(out)


if custom_derivatives.linear_call_p not in batching.fancy_primitive_batchers:
  batching.fancy_primitive_batchers[custom_derivatives.linear_call_p] = (
      _batched_linear_call)
