r"""Memory and FLOPs of a config's training step under network.remat = none / full / dots, and the effect of
method.frozen_dtype: compiled only (nothing is trained), from shapes, so that no data, teacher or parameters are read.

  python experiments/remat.py --config=configs/digits/dmd2.py
  python experiments/remat.py --config=configs/imagenet256_latent/meanflow.py --data_shape=32,32,4 \
      --num_classes=1000 --config.train.batch_size=4
  python experiments/remat.py --config=configs/digits/cd.py --frozen_gradient
  python experiments/remat.py --config=configs/imagenet64/dmd2.py --data_shape=64,64,3 --num_classes=1000 --residuals

For each remat value one line: the compiled step's temporary bytes (XLA's memory_analysis: the activations and
other buffers live during the step), argument bytes (state and batch), and FLOPs (cost_analysis); then the same with
method.frozen_dtype=bfloat16 where the method has frozen networks. The step is method.step (step 0's kind: the one
that updates every network), jitted on one device with the state donated, as the trainer compiles it.

--data_shape / --num_classes describe the data where its files are not here (ImageNet); otherwise the config's
data pipeline tells them. A teacher is described as the student's network read through --teacher_readout, with
parameters made from shapes.

--residuals instead prints, per remat value, the bytes the backward pass of the network alone (its sum's gradient to
the parameters, at the config's batch) saves from the forward pass, as JAX's rematerialisation leaves them: traced
only, so it runs at any size in seconds. It is an upper bound on what XLA keeps: XLA's fusion recomputes some
elementwise residuals itself, which is why the compiled temporary bytes on XLA:CPU can move less.

--frozen_gradient instead prints the relative difference of the student's gradient with a bfloat16 teacher from the
float32 one (random teacher and student parameters, one batch of the config's data; a single-network method).
"""
import functools
import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from fewstep_jax import data as data_lib
from fewstep_jax import methods, nn, paths
from fewstep_jax.conditions import Conditioning
from fewstep_jax.inputs import InitInput, Teacher, TeacherInput
from fewstep_jax.methods.base import frozen_network_names
from fewstep_jax.nn.remat import REMAT_CHOICES

config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_list('data_shape', None, 'Shape of one example (e.g. 32,32,4), where the data is not here.')
flags.DEFINE_integer('num_classes', 0, 'Label count, with --data_shape.')
flags.DEFINE_string('teacher_readout', 'edm', 'Readout of the described teacher (paths.READOUTS).')
flags.DEFINE_list('remat', list(REMAT_CHOICES), 'network.remat values to compile.')
flags.DEFINE_bool('residuals', False, "Print the network's saved residual bytes per remat value (traced only).")
flags.DEFINE_bool('frozen_gradient', False, 'Print the student gradient difference of a bfloat16 teacher.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def describe_data(config):
  """(data shape, num_classes, conditioning, an example batch of the config's size or None)."""
  if FLAGS.data_shape:
    shape, classes = tuple(int(d) for d in FLAGS.data_shape), FLAGS.num_classes
    return shape, classes, Conditioning.of_labels(classes), None
  data = data_lib.build_data(config.data, global_batch_size=config.train.batch_size, seed=0)
  return data.data_shape, data.num_classes, data.conditioning, data.next_batch()


def random_params(module, shape, seed: int):
  """N(0, 0.1^2) parameters of `module` for examples of `shape` (numpy: no initialiser compiled)."""
  shapes = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + shape)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes)


def build(config, shape, classes, conditioning, concrete: bool = False):
  """(method, frozen): the method with every declared teacher described on the config's network (and every run to
  start from on it); frozen holds their parameters as shapes (or random values with `concrete`)."""
  specs = methods.method_class(config.method.name).inputs(config)
  others = [name for name, spec in specs.items() if not isinstance(spec, (TeacherInput, InitInput))]
  if others:
    raise SystemExit(f'experiments/remat.py describes teachers and runs to start from only; this config also reads '
                     f'{others}')
  module = nn.build_network(config.network, num_classes=classes, dtype=nn.dtype_named(config.train.compute_dtype))
  teachers, frozen = {}, {}
  for name, spec in specs.items():
    frozen[name] = (random_params(module, shape, seed=1) if concrete else
                    jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + shape))))
    if isinstance(spec, TeacherInput):
      teachers[name] = Teacher(network=config.network, readout=paths.readout(FLAGS.teacher_readout), data_shape=shape,
                               num_classes=classes, params=frozen[name], compute_dtype=config.train.compute_dtype)
  method = methods.build_method(config, data_shape=shape, num_classes=classes, inputs=teachers,
                                conditioning=conditioning)
  return method, frozen


def abstract_batch(config, shape, conditioning, batch):
  if batch is not None:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), batch)
  size = config.train.batch_size
  described = {'x': jax.ShapeDtypeStruct((size,) + shape, jnp.float32)}
  if conditioning.conditional:
    described['y'] = jax.eval_shape(lambda: conditioning.example(size))
  return described


def compile_step(config, shape, classes, conditioning, batch) -> dict:
  method, frozen = build(config, shape, classes, conditioning)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0), frozen)
  step = jax.jit(functools.partial(method.step, **method.step_options(0)), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, abstract_batch(config, shape, conditioning, batch), jax.random.PRNGKey(0)).compile()
  memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {'remat': config.network.remat, 'frozen_dtype': config.method.get('frozen_dtype'),
          'temp_bytes': int(memory.temp_size_in_bytes), 'argument_bytes': int(memory.argument_size_in_bytes),
          'output_bytes': int(memory.output_size_in_bytes), 'flops': float(cost.get('flops', 0.0)),
          'compile_s': round(time.perf_counter() - start, 1)}


def with_field(config, field: str, value):
  config = config.copy_and_resolve_references()
  section, name = field.split('.')
  config[section][name] = value
  return config


def frozen_gradient(config, shape, classes, conditioning, batch) -> dict:
  """Relative difference of the student gradient with a bfloat16 teacher from the float32 teacher's."""
  grads = {}
  for frozen_dtype in (None, 'bfloat16'):
    method, frozen = build(with_field(config, 'method.frozen_dtype', frozen_dtype), shape, classes, conditioning,
                           concrete=True)
    if not hasattr(method, 'gradients'):
      raise SystemExit('--frozen_gradient needs a single-network method (cd, scd, tcm, ...)')
    state = method.init(jax.random.PRNGKey(0), frozen)
    state = state.replace(nets={'student': state.nets['student'].replace(
        params=random_params(method.student.module, shape, seed=2))})
    grads[frozen_dtype], _ = jax.jit(method.gradients)(state, jax.tree.map(jnp.asarray, batch), jax.random.PRNGKey(1))
  difference = jax.tree.map(jnp.subtract, grads['bfloat16'], grads[None])
  return {'frozen_networks': list(frozen_network_names(type(method).inputs(config))),
          'relative_gradient_difference': float(optax.tree.norm(difference) / optax.tree.norm(grads[None]))}


def residual_bytes(config, shape, classes) -> dict:
  """Bytes of the residuals the network's backward pass saves (arguments excluded), at the config's batch."""
  # saved_residuals is what jax.ad_checkpoint.print_saved_residuals prints, as data.
  from jax._src.ad_checkpoint import saved_residuals
  module = nn.build_network(config.network, num_classes=classes, dtype=nn.dtype_named(config.train.compute_dtype))
  params = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + shape)))
  size = config.train.batch_size
  x, t = jax.ShapeDtypeStruct((size,) + shape, jnp.float32), jax.ShapeDtypeStruct((size,), jnp.float32)
  r = t if module.two_times else None
  y = jax.ShapeDtypeStruct((size,), jnp.int32) if classes else None
  apply = nn.make_apply(module)

  def total(params, x, t, r, y):
    out = apply(params, x, t, r, y)
    return jnp.sum(out[0] if isinstance(out, tuple) else out)

  saved = [aval for aval, why in saved_residuals(total, params, x, t, r, y) if 'from the argument' not in why]
  return {'remat': config.network.remat, 'batch': size,
          'residual_bytes': int(sum(np.prod(a.shape) * a.dtype.itemsize for a in saved)), 'arrays': len(saved)}


def main(argv):
  del argv
  config = FLAGS.config
  shape, classes, conditioning, batch = describe_data(config)
  if FLAGS.frozen_gradient:
    print(json.dumps(frozen_gradient(config, shape, classes, conditioning, batch)), flush=True)
    return
  if FLAGS.residuals:
    for remat in FLAGS.remat:
      print(json.dumps(residual_bytes(with_field(config, 'network.remat', remat), shape, classes)), flush=True)
    return
  for remat in FLAGS.remat:
    print(json.dumps(compile_step(with_field(config, 'network.remat', remat), shape, classes, conditioning, batch)),
          flush=True)
  if 'frozen_dtype' in config.method and frozen_network_names(methods.method_class(config.method.name).inputs(config)):
    bf16 = with_field(with_field(config, 'method.frozen_dtype', 'bfloat16'), 'network.remat', 'none')
    print(json.dumps(compile_step(bf16, shape, classes, conditioning, batch)), flush=True)


if __name__ == '__main__':
  app.run(main)
