"""One distillation training step on an SD-family U-Net with text conditions: traced at full size (jax.eval_shape:
shapes and parameter counts, no memory), or compiled and run at a tiny width through the same code on CPU.

  python experiments/text_to_image_step.py                        # sd15 and sdxl_base, traced; sd15_tiny, sdxl_tiny run
  python experiments/text_to_image_step.py --presets=sdxl_base --methods=dmd2,cd --run=

The teacher is an `sd_unet` read through the `sd` readout (what an imported SD pipeline is, see
fewstep_jax/tools/import_checkpoint.py), its parameters abstract when traced and random when run; the student and
the critic are the same network. The batch holds latents [B, S, S, 4] and a text condition (conditions.py): token
states [B, 77, D] and, for SDXL, the pooled vector [B, 1280] and six size and crop ids, with its null (zeros, as
SDXL's pipeline uses for the empty prompt) for the teacher's classifier-free guidance.
"""
import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import methods, nn, paths
from fewstep_jax.conditions import Conditioning
from fewstep_jax.config_base import base_config
from fewstep_jax.inputs import Teacher

flags.DEFINE_list('presets', ['sd15', 'sdxl_base'], 'U-Net presets traced at full size.')
flags.DEFINE_list('run', ['sd15_tiny', 'sdxl_tiny'], 'U-Net presets compiled and run for one step.')
flags.DEFINE_list('methods', ['dmd2', 'cd'], 'Distillation methods of the step.')
flags.DEFINE_integer('batch', 2, 'Batch size.')
flags.DEFINE_float('guidance', 4.5, "The teacher's CFG scale.")
FLAGS = flags.FLAGS

TOKENS = 77  # CLIP's context length.


def text_condition(unet, batch: int, abstract: bool):
  """A text condition of `unet`'s widths for `batch` samples (zeros, or ShapeDtypeStructs when `abstract`), and
  the Conditioning whose null row is zeros."""
  shapes = {'tokens': (TOKENS, unet.cross_attention_dim)}
  if unet.addition_embed_type:
    pooled = unet.projection_class_embeddings_input_dim - 6 * unet.addition_time_embed_dim
    shapes.update(pooled=(pooled,), time_ids=(6,))
  null = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
  make = (lambda shape: jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)) if abstract else (
      lambda shape: jnp.ones((batch,) + shape, jnp.float32))
  return {name: make(shape) for name, shape in shapes.items()}, Conditioning('text', null_text=null)


def build(method: str, preset: str):
  """(config, method, unet, data_shape) of `method` distilling an `sd_unet` teacher of `preset` into the same
  network."""
  from fewstep_jax.nn import sd_unet
  config = base_config(method=method, network='sd_unet', dataset='latents')
  config.network.preset = preset
  config.method.update(teacher='(in memory)', teacher_guidance=FLAGS.guidance)
  if 'init_from' in config.method:
    config.method.init_from = ''
  config.train.batch_size = FLAGS.batch
  unet = sd_unet.from_config(preset)
  size = 2 ** (len(unet.block_out_channels) - 1) * 2 if preset.endswith('tiny') else sd_unet.PRESETS[preset][
      'sample_size']
  data_shape = (size, size, unet.in_channels)
  teacher = Teacher(network=config.network, readout=paths.readout('sd'), data_shape=data_shape, num_classes=0)
  return config, teacher, unet, data_shape


def one_step(method_name: str, preset: str, run: bool) -> dict:
  config, teacher, unet, data_shape = build(method_name, preset)
  condition, conditioning = text_condition(unet, FLAGS.batch, abstract=not run)
  method = methods.build_method(config, data_shape=data_shape, num_classes=0, inputs={'teacher': teacher},
                                conditioning=conditioning)
  module = nn.build_network(config.network, num_classes=0)
  example = jax.ShapeDtypeStruct((1,) + data_shape, jnp.float32)
  key = jax.random.key(0)
  init_teacher = lambda key: nn.init_params(module, key, example)
  frozen_shapes = {'teacher': jax.eval_shape(init_teacher, key)}
  if 'student_init' in type(method).inputs(config):
    frozen_shapes['student_init'] = frozen_shapes['teacher']
  batch = {'x': (jnp.ones if run else lambda s: jax.ShapeDtypeStruct(s, jnp.float32))((FLAGS.batch,) + data_shape),
           'y': condition}
  options = method.step_options(0)
  step = lambda state, batch, key: method.step(state, batch, key, **options)
  row = {'method': method_name, 'preset': preset, 'data_shape': list(data_shape),
         'unet_parameters': int(sum(np.prod(x.shape) for x in jax.tree.leaves(frozen_shapes['teacher']))),
         'step_options': {k: str(v) for k, v in options.items()}}
  if not run:
    state = jax.eval_shape(method.init, key, frozen_shapes)
    new_state, metrics = jax.eval_shape(step, state, batch, key)
    row['trained_parameters'] = {role: int(sum(np.prod(x.shape) for x in jax.tree.leaves(net.params)))
                                 for role, net in state.nets.items()}
    row['metrics'] = sorted(metrics)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(lambda a: (a.shape, a.dtype), state)
    return row
  frozen = {name: jax.jit(init_teacher)(key) for name in frozen_shapes}
  state = jax.jit(method.init)(key, frozen)
  began = time.time()
  compiled = jax.jit(step).lower(state, batch, key).compile()
  row['compile_s'] = round(time.time() - began, 1)
  new_state, metrics = compiled(state, batch, key)
  metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
  row['metrics'] = metrics
  row['finite'] = bool(all(np.isfinite(v) for v in metrics.values()))
  row['gflops'] = round(float((compiled.cost_analysis() or {}).get('flops', 0.0)) / 1e9, 2)
  return row


def main(argv):
  del argv
  for preset in FLAGS.presets:
    for method in FLAGS.methods:
      print(json.dumps(one_step(method, preset, run=False)), flush=True)
  for preset in FLAGS.run:
    for method in FLAGS.methods:
      print(json.dumps(one_step(method, preset, run=True)), flush=True)


if __name__ == '__main__':
  app.run(main)
