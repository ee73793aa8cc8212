r"""Stored text conditions vs the text encoders run in the step: FLOPs and bytes per caption, and CPU time per batch.

  python experiments/bench_text_encoding.py [--batch_size=8] [--records=256] [--repeats=5] [--skip_clip_l]

Prints one JSON object per measurement:
  flops     FLOPs per caption (77 tokens) of CLIP-L (SD 1.5's encoder, SDXL's first) and OpenCLIP bigG (SDXL's
            second), from XLA's cost analysis of the compiled forward pass at batch 1 (jax.eval_shape parameters:
            nothing is downloaded or initialised)
  bytes     bytes per caption of the 'captioned' records (fewstep_jax/data/latents.py) as token states (float16)
            or as token ids
  read      seconds per batch of reading stored states (array_record, the stream reader's batched read) and
            drawing one caption per image, on this machine's CPU
  encode    seconds per batch of encoding token ids on this machine's CPU: the tiny test encoder and CLIP-L with
            random weights (jit, after a warm-up call)
"""
import dataclasses
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fewstep_jax.data import data_defaults
from fewstep_jax.data import latents as latents_lib
from fewstep_jax.nn import clip_text

flags.DEFINE_integer('batch_size', 8, 'captions per batch for the CPU timings')
flags.DEFINE_integer('records', 256, 'records written for the read timing')
flags.DEFINE_integer('repeats', 5, 'timed batches per measurement')
flags.DEFINE_bool('skip_clip_l', False, 'leave out the CLIP-L CPU timing (about 2 GFLOP a caption)')
FLAGS = flags.FLAGS

TOKENS = 77
LAYOUTS = {  # condition: (token features, pooled features, encoders)
    'sd15': (768, 0, 1),
    'sdxl': (768 + 1280, 1280, 2),
}


def _forward(config):
  encoder = clip_text.CLIPTextEncoder(config)
  return jax.jit(lambda params, ids: encoder.apply({'params': params}, ids))


def flops_per_caption(config) -> float:
  ids = jax.ShapeDtypeStruct((1, TOKENS), jnp.int32)
  cost = _forward(config).lower(clip_text.abstract_params(config), ids).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def _text_info(condition: str) -> dict:
  features, pooled, _ = LAYOUTS[condition]
  return {'pipeline': '', 'condition': condition, 'storage': 'states', 'dtype': 'float16',
          'tokens_shape': [TOKENS, features], 'pooled': pooled, 'time_ids': condition == 'sdxl', 'max_captions': 1,
          'null': 'zeros', 'image_size': 1024}


def read_seconds(condition: str, directory: str) -> float:
  """Seconds per batch of the stream reader's batched read of stored states, and the caption draw."""
  from array_record.python.array_record_module import ArrayRecordWriter
  info = {'format': latents_lib.CAPTIONED_FORMAT, 'version': latents_lib.CAPTIONED_VERSION, 'moments': False,
          'shape': [128, 128, 4], 'num_examples': FLAGS.records, 'num_classes': 0, 'num_shards': 1,
          'text': _text_info(condition)}
  dtype = latents_lib.record_dtype(info)
  rng = np.random.default_rng(0)
  features, pooled, _ = LAYOUTS[condition]
  path = latents_lib.shard_paths(directory, 1, 'records')[0]
  writer = ArrayRecordWriter(path, 'group_size:1')
  for _ in range(FLAGS.records):
    fields = {'count': 1, 'tokens': rng.standard_normal((1, TOKENS, features)).astype(np.float16)}
    if pooled:
      fields.update(pooled=rng.standard_normal((1, pooled)), time_ids=np.zeros(6))
    writer.write(latents_lib.write_record(dtype, **fields))
  writer.close()
  source = latents_lib.MomentsSource(directory, latents_lib.latent_norm(data_defaults()), info)
  times = []
  for repeat in range(FLAGS.repeats + 1):
    indices = rng.permutation(FLAGS.records)[:FLAGS.batch_size]
    start = time.perf_counter()
    batch = latents_lib.latent_arrays_to_batch(source.read_arrays(indices))
    latents_lib.draw_captions(batch, np.random.default_rng(repeat))
    times.append(time.perf_counter() - start)
  return float(np.median(times[1:])), dtype.itemsize


def encode_seconds(config, params) -> float:
  forward = _forward(config)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (FLAGS.batch_size, TOKENS)), jnp.int32)
  jax.block_until_ready(forward(params, ids))
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(params, ids))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  report = lambda **row: print(json.dumps(row), flush=True)
  for name, config in (('clip_l', clip_text.CLIP_L), ('openclip_bigg', clip_text.OPENCLIP_BIGG)):
    report(measure='flops', encoder=name, flops_per_caption=flops_per_caption(config))
  for condition, (features, pooled, encoders) in LAYOUTS.items():
    report(measure='bytes', condition=condition, states_float16=TOKENS * features * 2 + 4 * pooled,
           ids_int32=TOKENS * 4 * encoders)
  with tempfile.TemporaryDirectory() as directory:
    for condition in LAYOUTS:
      os.makedirs(os.path.join(directory, condition))
      seconds, record_bytes = read_seconds(condition, os.path.join(directory, condition))
      report(measure='read', condition=condition, batch_size=FLAGS.batch_size, seconds_per_batch=seconds,
             record_bytes=record_bytes)
  tiny = dataclasses.replace(clip_text.TINY, max_position_embeddings=TOKENS)
  configs = [('tiny', tiny)] + ([] if FLAGS.skip_clip_l else [('clip_l', clip_text.CLIP_L)])
  for name, config in configs:
    params = clip_text.from_state_dict(clip_text.random_weights(config, 0), config)
    report(measure='encode', encoder=name, batch_size=FLAGS.batch_size,
           seconds_per_batch=encode_seconds(config, params), device=str(jax.devices()[0].platform))


if __name__ == '__main__':
  app.run(main)
