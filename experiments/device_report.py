r"""One accelerator report in one JSON: attention kernels, DiT-B/2 MeanFlow and sCT steps, MFU, peak memory.

  python experiments/device_report.py > device_report.json        # on a GPU or TPU host: under 8 minutes
  python experiments/device_report.py --smoke                     # any machine: tiny shapes, checks the script

Sections of the JSON object:
  device      platform, device kind, device count, the peak dense bf16 FLOP/s assumed for MFU (PEAK_FLOPS by device
              kind; --peak_tflops overrides, null if unknown)
  attention   per sequence length (1k-16k tokens; batch 1, 8 heads of 64, bf16) and implementation (pallas = the
              project's flash kernels, xla = plain attention, cudnn = cuDNN fused attention, GPU only, no JVP): the
              median ms of the forward, the JVP, and the gradient of a JVP loss (the sCM / MeanFlow pattern), or the
              error's name (typically out of memory for xla at long lengths, NotImplementedError for cuDNN's JVP)
  steps       per (method, attention): the DiT-B/2 train step on ImageNet-256 SD-VAE-latent-shaped data (32x32x4,
              256 tokens, class-conditional; random latents generated in a temporary directory), bf16 compute,
              --batch per device: compile_s, step_s (median), compiled FLOPs, achieved TFLOP/s, MFU, peak bytes
              in use on device 0 after the steps
Every timed function is compiled first; medians over --steps calls. FLOPs come from XLA's cost analysis of the
compiled step. Nothing is downloaded.
"""
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attention import functions, time_call  # noqa: E402  (its flags --steps, --seq, --batch are its own)

from fewstep_jax.config_base import base_config  # noqa: E402
from fewstep_jax.kernels import flash_attention  # noqa: E402
from fewstep_jax.nn.attention import PALLAS_PLATFORMS, cudnn_attention, xla_attention  # noqa: E402
from fewstep_jax import trainer  # noqa: E402

flags.DEFINE_list('attention_seq', ['1024', '4096', '16384'], 'Attention sequence lengths.')
flags.DEFINE_list('methods', ['meanflow', 'sct'], 'Train steps to time on DiT-B/2.')
flags.DEFINE_integer('step_batch', 64, 'Train-step batch per device.')
flags.DEFINE_integer('timed_calls', 10, 'Timed calls per measurement.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak dense bf16 TFLOP/s per device for MFU (0: from PEAK_FLOPS).')
flags.DEFINE_bool('smoke', False, 'Tiny shapes (seq 128, a 1-block DiT, batch 4, 2 steps): checks the script on '
                  'any machine; the figures mean nothing.')
FLAGS = flags.FLAGS

# Dense bf16 peak FLOP/s per device, by jax.Device.device_kind (vendor data sheets; SXM parts for NVIDIA).
PEAK_FLOPS = {
    'NVIDIA H200': 989e12, 'NVIDIA H100 80GB HBM3': 989e12, 'NVIDIA H100 PCIe': 756e12,
    'NVIDIA A100-SXM4-80GB': 312e12, 'NVIDIA A100-SXM4-40GB': 312e12, 'NVIDIA A100 80GB PCIe': 312e12,
    'NVIDIA L4': 121e12, 'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12, 'TPU v5p': 459e12,
    'TPU v6 lite': 918e12, 'TPU v6e': 918e12,
}


def peak_flops():
  if FLAGS.peak_tflops:
    return FLAGS.peak_tflops * 1e12
  kind = jax.devices()[0].device_kind
  return PEAK_FLOPS.get(kind) or next((value for name, value in PEAK_FLOPS.items() if kind.startswith(name)), None)


def _error_name(error) -> str:
  text = str(error)
  return f'{type(error).__name__}: out of memory' if 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text \
      else type(error).__name__


def attention_rows(lengths, heads=8, head_dim=64):
  platform = jax.default_backend()
  backend, interpret = PALLAS_PLATFORMS.get(platform, ('gpu', True))
  implementations = {
      'pallas': functools.partial(flash_attention, backend=backend, interpret=interpret),
      'xla': xla_attention,
  }
  if platform in ('gpu', 'cuda'):
    implementations['cudnn'] = cudnn_attention
  rows = []
  for seq in lengths:
    keys = jax.random.split(jax.random.PRNGKey(seq), 6)
    args = [jax.random.normal(key, (1, seq, heads, head_dim), jnp.bfloat16) for key in keys]
    row = {'seq': seq}
    for impl, attention in implementations.items():
      for name, fn in functions(attention).items():
        try:
          row[f'{impl}_{name}_ms'] = 1e3 * time_call(fn, args)
        except Exception as error:  # pylint: disable=broad-except
          row[f'{impl}_{name}_ms'] = _error_name(error)
    for name in ('fwd', 'jvp', 'jvp_grad'):
      for impl in ('xla', 'cudnn'):
        theirs, ours = row.get(f'{impl}_{name}_ms'), row[f'pallas_{name}_ms']
        if isinstance(theirs, float) and isinstance(ours, float):
          row[f'{name}_{impl}_over_pallas'] = theirs / ours
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
  return rows


def dit_b2_config(method: str, attention: str, latents_dir: str, smoke: bool):
  """DiT-B/2 (depth 12, hidden 768, 12 heads, patch 2; MeanFlow's B/2 size) on 32x32x4 latents, bf16."""
  config = base_config(method=method, network='dit', dataset='latents')
  config.data.latents_dir = latents_dir
  config.network.update(dict(patch_size=2, hidden=768, depth=12, heads=12, attention=attention,
                             two_times=method == 'meanflow'))
  if method == 'sct':
    config.network.logvar_head = True  # sCM's adaptive weighting, as configs/digits/sct.py.
    config.network.time_scale = 1.0
  if smoke:
    config.network.update(dict(hidden=32, depth=1, heads=2))
  config.train.batch_size = FLAGS.step_batch * jax.device_count()
  config.train.compute_dtype = 'bfloat16'
  config.train.tensorboard = False
  config.eval.at_end = False
  return config


def _cost(compiled, key):
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    return float(sum(a.get(key, 0.0) for a in analysis))
  return float(analysis.get(key, 0.0))


def step_row(method: str, attention: str, latents_dir: str, peak) -> dict:
  row = {'method': method, 'attention': attention, 'network': 'dit-b/2', 'batch_per_device': FLAGS.step_batch}
  try:
    run = trainer.Run(dit_b2_config(method, attention, latents_dir, FLAGS.smoke))
    state = run.init_state()
    train_step = run.make_train_step(**run.method.step_options(0))
    batch = run.next_global_batch()
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    row['compile_s'] = time.perf_counter() - start
    times = []
    for i in range(FLAGS.timed_calls + 2):
      batch = run.next_global_batch()
      jax.block_until_ready(batch)
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      if i >= 2:
        times.append(time.perf_counter() - start)
    row['step_s'] = statistics.median(times)
    row['flops'] = _cost(compiled, 'flops')
    row['tflops_per_s'] = row['flops'] / row['step_s'] / 1e12
    # The cost analysis counts the whole (replicated or sharded) program per device.
    row['mfu'] = row['flops'] / row['step_s'] / peak if peak else None
    memory = compiled.memory_analysis()
    row['temp_bytes'] = int(memory.temp_size_in_bytes) if memory is not None else None
    stats = jax.devices()[0].memory_stats() or {}
    row['peak_bytes_in_use'] = stats.get('peak_bytes_in_use')
    row['loss'] = float(metrics['loss'])
  except Exception as error:  # pylint: disable=broad-except
    row['error'] = f'{_error_name(error)}: {str(error)[:300]}'
  print(json.dumps(row), file=sys.stderr, flush=True)
  return row


def write_latents(directory: str, count: int):
  rng = np.random.default_rng(0)
  np.save(os.path.join(directory, 'latents.npy'), rng.normal(0, 5, (count, 32, 32, 4)).astype(np.float16))
  np.save(os.path.join(directory, 'labels.npy'), (np.arange(count) % 1000).astype(np.int32))
  with open(os.path.join(directory, 'info.json'), 'w') as f:
    json.dump({'num_classes': 1000}, f)


def main(argv):
  del argv
  if FLAGS.smoke:
    FLAGS.attention_seq, FLAGS.step_batch, FLAGS.timed_calls = ['128'], 4, 2
  start = time.perf_counter()
  peak = peak_flops()
  device = jax.devices()[0]
  report = {'device': {'platform': jax.default_backend(), 'kind': device.device_kind,
                       'count': jax.device_count(), 'peak_flops': peak, 'smoke': FLAGS.smoke}}
  FLAGS.steps = FLAGS.timed_calls  # bench_attention.time_call's count.
  report['attention'] = attention_rows([int(seq) for seq in FLAGS.attention_seq])
  with tempfile.TemporaryDirectory() as latents_dir:
    write_latents(latents_dir, max(1024, 4 * FLAGS.step_batch * jax.device_count()))
    report['steps'] = [step_row(method, attention, latents_dir, peak)
                       for method in FLAGS.methods for attention in ('xla', 'pallas')]
  report['total_s'] = time.perf_counter() - start
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  app.run(main)
