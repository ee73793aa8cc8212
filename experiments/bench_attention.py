r"""Cost model and measurements of attention: Pallas flash kernels vs. the plain `xla` path.

  python experiments/bench_attention.py                      # model + XLA temp bytes, any machine
  python experiments/bench_attention.py --mode=time          # on a GPU or TPU: time both paths

`--mode=model` (default) prints, for each sequence length (queries = keys = seq), per call of shape
[batch, seq, heads, head_dim]:
  fwd/jvp/bwd GFLOP   the flash kernels' modeled matmul FLOPs (`kernels.cost_model`: 4, 10, 14 N M d)
  fwd/jvp/bwd MB      their modeled HBM traffic (each operand read or written once)
  flash MB            modeled memory the flash path holds beyond q, k, v for grad of a JVP loss:
                      O, dO, gO-sized [seq, d] arrays and float32 per-row arrays, O(seq)
  xla fwd MB          compiled temp bytes of the plain attention's forward (XLA, this machine's backend)
  xla jvp-grad MB     compiled temp bytes of grad of a JVP loss through the plain attention, O(seq^2)
so the memory crossover is visible. The XLA figures come from `.compile().memory_analysis()` on the backend
JAX runs on (XLA:CPU on a laptop; run on the target accelerator for its own figures).

`--mode=time` runs on a GPU (Triton kernels) or TPU (Mosaic kernels) and prints the median time of forward,
JVP and grad-of-JVP-loss for the Pallas path and the `xla` path, and their ratio. Sequence lengths whose
`xla` compile runs out of memory are reported as such.
"""
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from fewstep_jax.kernels import cost_model, flash_attention
from fewstep_jax.nn.attention import PALLAS_PLATFORMS, xla_attention

flags.DEFINE_enum('mode', 'model', ['model', 'time'], 'model: cost model and XLA temp bytes; time: on a GPU/TPU.')
flags.DEFINE_list('seq', ['256', '512', '1024', '2048', '4096', '8192', '16384'], 'Sequence lengths.')
flags.DEFINE_integer('batch', 1, 'Batch size.')
flags.DEFINE_integer('heads', 8, 'Attention heads.')
flags.DEFINE_integer('head_dim', 64, 'Head dimension.')
flags.DEFINE_enum('dtype', 'bfloat16', ['bfloat16', 'float32'], 'Input dtype.')
flags.DEFINE_integer('block_q', 128, 'Query tile rows (time mode).')
flags.DEFINE_integer('block_k', 128, 'Key tile rows (time mode).')
flags.DEFINE_bool('causal', False, 'Causal attention (time mode).')
flags.DEFINE_integer('steps', 20, 'Timed calls per measurement (time mode).')
flags.DEFINE_bool('json', False, 'Print one JSON object per length instead of a table.')
FLAGS = flags.FLAGS

MB = 2.0**20


def jvp_loss(attention):
  """The sCM / MeanFlow pattern: (o - sg(o - do))^2, gradient through the primal only."""
  def loss(q, k, v, dq, dk, dv):
    o, do = jax.jvp(attention, (q, k, v), (dq, dk, dv))
    o, do = o.astype(jnp.float32), do.astype(jnp.float32)
    return jnp.mean((o - jax.lax.stop_gradient(o - 0.1 * do)) ** 2)
  return loss


def functions(attention):
  """forward, JVP, and grad of the JVP loss, each a function of (q, k, v, dq, dk, dv)."""
  return {
      'fwd': lambda q, k, v, dq, dk, dv: attention(q, k, v),
      'jvp': lambda q, k, v, dq, dk, dv: jax.jvp(attention, (q, k, v), (dq, dk, dv)),
      'jvp_grad': jax.grad(jvp_loss(attention), (0, 1, 2)),
  }


def abstract_inputs(seq: int):
  shape = jax.ShapeDtypeStruct((FLAGS.batch, seq, FLAGS.heads, FLAGS.head_dim), jnp.dtype(FLAGS.dtype))
  return (shape,) * 6


def temp_bytes(fn, seq: int):
  try:
    memory = jax.jit(fn).lower(*abstract_inputs(seq)).compile().memory_analysis()
  except Exception as error:  # pylint: disable=broad-except
    return f'{type(error).__name__}'
  return None if memory is None else int(memory.temp_size_in_bytes)


def flash_resident_bytes(seq: int) -> int:
  """What grad of a JVP loss holds beyond q, k, v and their tangents on the flash path.

  Forward: O, L; JVP: dO, dL; backward: gO, delta, gQ, gK, gV (the loss's own elementwise temporaries are
  the same on both paths and left out). [seq, d] arrays at the input dtype, per-row arrays in float32.
  """
  element = jnp.dtype(FLAGS.dtype).itemsize
  rows = FLAGS.batch * FLAGS.heads * seq
  return rows * (7 * FLAGS.head_dim * element + 3 * 4)


def model_row(seq: int) -> dict:
  element = jnp.dtype(FLAGS.dtype).itemsize
  cost = cost_model(seq, seq, FLAGS.head_dim, bytes_per_element=element)
  pairs = FLAGS.batch * FLAGS.heads
  xla = functions(xla_attention)
  row = {'seq': seq}
  for kernel in ('forward', 'jvp', 'backward'):
    row[f'{kernel}_gflop'] = pairs * cost[kernel]['flops'] / 1e9
    row[f'{kernel}_hbm_mb'] = pairs * cost[kernel]['hbm_bytes'] / MB
  row['flash_resident_mb'] = flash_resident_bytes(seq) / MB
  for name in ('fwd', 'jvp_grad'):
    value = temp_bytes(xla[name], seq)
    row[f'xla_{name}_temp_mb'] = value / MB if isinstance(value, int) else value
  return row


def time_call(fn, args) -> float:
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_row(seq: int, backend: str) -> dict:
  keys = jax.random.split(jax.random.PRNGKey(seq), 6)
  args = [jax.random.normal(key, s.shape, s.dtype) for key, s in zip(keys, abstract_inputs(seq))]
  pallas = functools.partial(flash_attention, backend=backend, causal=FLAGS.causal,
                             block_q=FLAGS.block_q, block_k=FLAGS.block_k)
  if FLAGS.causal:
    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation='xla')
  else:
    xla = xla_attention
  row = {'seq': seq}
  for name, fn in functions(pallas).items():
    row[f'pallas_{name}_ms'] = 1e3 * time_call(fn, args)
  for name, fn in functions(xla).items():
    try:
      row[f'xla_{name}_ms'] = 1e3 * time_call(fn, args)
      row[f'{name}_xla_over_pallas'] = row[f'xla_{name}_ms'] / row[f'pallas_{name}_ms']
    except Exception as error:  # pylint: disable=broad-except
      row[f'xla_{name}_ms'] = f'{type(error).__name__}'  # typically out of memory at long lengths
  return row


def print_rows(rows):
  if FLAGS.json:
    for row in rows:
      print(json.dumps(row))
    return
  columns = list(rows[0])
  print(' '.join(f'{c:>18}' for c in columns))
  for row in rows:
    print(' '.join(f'{v:>18.4g}' if isinstance(v, float) else f'{v!s:>18}' for v in row.values()))


def main(argv):
  del argv
  lengths = [int(s) for s in FLAGS.seq]
  print(f'# batch={FLAGS.batch} heads={FLAGS.heads} head_dim={FLAGS.head_dim} dtype={FLAGS.dtype} '
        f'platform={jax.default_backend()}')
  if FLAGS.mode == 'model':
    print_rows([model_row(seq) for seq in lengths])
    return
  platform = jax.default_backend()
  backend, interpret = PALLAS_PLATFORMS.get(platform, (None, True))
  if interpret:
    raise SystemExit(f'--mode=time needs a GPU or TPU (platform is {platform!r}); '
                     'use --mode=model here.')
  print_rows([time_row(seq, backend) for seq in lengths])


if __name__ == '__main__':
  app.run(main)
