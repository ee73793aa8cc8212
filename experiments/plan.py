r"""Memory and time plan of one config's training step at full size, on a simulated mesh, before a device is rented.

  python experiments/plan.py --config=configs/imagenet64/dmd2.py [--devices=56] [--hardware=h100] [--mfu=0.4]
      [--config.mesh.fsdp=8] [--trace_only] [--json]
  python experiments/plan.py --all [--compile=CONFIG,...] [--compile_budget_s=1800]   # every paper row -> docs/plan.md

The script sets XLA_FLAGS=--xla_force_host_platform_device_count=N (N = --devices) before JAX starts, so that the
step is partitioned for N devices on this CPU: the mesh is the config's mesh.fsdp (which must divide N) times
mesh.data = N / fsdp, and each device holds train.batch_size / N examples. The step is built by trainer.Run as a
training run builds it, with two things replaced:
  data     the dataset's shapes (SHAPES_ONLY: CIFAR-10, ImageNet-64, ImageNet-256 SD-VAE latents, reflow pairs), not
           its files; toy and digits data are built for real (they are local);
  inputs   every teacher and start (method.teacher, method.init_from, TCM's stage1) becomes abstract parameters of
           the config's own network; LPIPS weights and DMD's regression pairs (--regression_pairs of them) become
           abstract arrays of their shapes (PLANNED_ARRAYS). Nothing is read from runs/ or teachers/.
Every kind of step the method's schedule runs (method.step_options: a critic-only step and a critic-and-student
step for DMD2's two time-scale rule) is lowered with abstract arguments and compiled; nothing is allocated.

Printed per device:
  state split     bytes of the TrainState's leaves, walked by what they are: params (trained networks), opt_state,
                  ema (EMA copies and targets kept there), frozen (teachers, starts, pairs, LPIPS), other (step,
                  metrics carry); each leaf counted at its shard's shape (mesh.fsdp shards leaves of at least
                  mesh.fsdp_min_size elements).
  per step kind   compiled.memory_analysis(): temp (XLA's scratch: activations kept for the backward pass and the
                  rest), argument, output and alias bytes (the donated state's outputs reuse its arguments); the
                  peak is argument + output - alias + temp. compiled.cost_analysis()'s FLOPs: XLA analyses the
                  SPMD-partitioned module, i.e. one device's program, so they are per device (checked: the same
                  global batch on 1 and 2 devices gives half the FLOPs on each of the 2; docs/plan.md).
  projection      step time = FLOPs per device / (peak bf16 FLOP/s x --mfu), averaged over the step kinds by how
                  often the schedule runs each; images/s = global batch / step time; accelerator-hours =
                  devices x train.num_steps x step time.
--trace_only skips lowering and compiling: the state split only (jax.eval_shape of method.init), in seconds where a
full-size compile takes minutes. tests/test_plan.py traces each step kind at full size (jax.eval_shape).

Config overrides pass through (--config.network.remat=..., --config.train.batch_size=...), as in bench.py whose
--config, --json flags and cost reader this script shares.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _device_count_argument(argv) -> int:
  """--devices=N from the command line (read before JAX starts, which fixes the host device count); 1 if absent."""
  for index, arg in enumerate(argv):
    if arg.startswith('--devices='):
      return int(arg.split('=', 1)[1])
    if arg == '--devices' and index + 1 < len(argv):
      return int(argv[index + 1])
  return 1


if __name__ == '__main__':
  try:
    _DEVICES = _device_count_argument(sys.argv[1:])
  except ValueError:
    sys.exit('error: --devices must be a whole number of devices, e.g. --devices=64')
  # LLVM's optimisation level changes how fast the compiled code runs, not its buffers or FLOPs (checked:
  # configs/digits/edm.py compiles to the same temp, argument bytes and FLOPs at levels 0 and 2), and level 0
  # compiles the full-size steps in about two thirds of the time.
  os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''),
                                      f'--xla_force_host_platform_device_count={_DEVICES}',
                                      '--xla_backend_optimization_level=0']).strip()

import collections  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, HERE)
import bench  # noqa: E402  (its --config and --json flags are this script's too: define_flags)

from fewstep_jax import data as data_lib  # noqa: E402
from fewstep_jax import methods, nn, paths, trainer  # noqa: E402
from fewstep_jax.conditions import Conditioning  # noqa: E402
from fewstep_jax.data import latents  # noqa: E402
from fewstep_jax.errors import ConfigError  # noqa: E402
from fewstep_jax.inputs import ArraysInput, InitInput, Teacher, TeacherInput  # noqa: E402
from fewstep_jax.train import offload  # noqa: E402
from fewstep_jax.train import sharding as sharding_lib  # noqa: E402


def define_flags():
  bench.define_shared_flags()
  flags.DEFINE_integer('devices', 1, 'Simulated devices (host CPU devices standing in for accelerators).')
  flags.DEFINE_string('hardware', 'h100', 'The accelerator the projection is for: a key of HARDWARE.')
  flags.DEFINE_float('mfu', 0.4, 'Model FLOP utilisation assumed for the projected step time, in (0, 1].')
  flags.DEFINE_bool('trace_only', False, 'jax.eval_shape of the state only: its split, no compile (no temp bytes, no '
                    'FLOPs).')
  flags.DEFINE_integer('regression_pairs', 100_000, "DMD's stored teacher pairs (method.regression_pairs), held in "
                       'the state as frozen arrays.')
  flags.DEFINE_string('pairs_of', 'cifar10', 'The TFDS dataset whose shapes reflow pairs (data.name=reflow_pairs) '
                      'have.')
  flags.DEFINE_list('trace_configs', [], 'Plan these configs (repository paths) --trace_only, one JSON line each (what '
                    '--all runs for the rows it does not compile).')
  flags.DEFINE_bool('all', False, 'Plan every paper-row config at its paper batch and write docs/plan.md.')
  flags.DEFINE_integer('compile_budget_s', 1800, '--all: seconds of compiling, after which the remaining rows are '
                       'planned --trace_only.')
  flags.DEFINE_list('compile', [], '--all: the configs to compile (paths as the paper table names them), in this '
                    'order, while the budget lasts; the others are planned --trace_only. Empty: every row, in the '
                    "table's order.")
  flags.DEFINE_string('results', os.path.join(REPO, 'docs', 'plan_rows.jsonl'), '--all: one JSON line per planned '
                      "row; rows already there are reused (a compiled row is not compiled again, a trace-only row is "
                      'compiled if --compile names it), so that an interrupted --all continues.')
  flags.DEFINE_integer('row_timeout_s', 900, '--all: the most seconds one config may compile for.')
  flags.DEFINE_string('out', os.path.join(REPO, 'docs', 'plan.md'), '--all: the page whose generated part is written.')
  flags.DEFINE_string('readme', os.path.join(REPO, 'README.md'), '--all: the page whose plan summary is written '
                      "('' for none).")


FLAGS = flags.FLAGS

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Hardware:
  name: str
  peak_bf16_flops: float  # Dense (no structured sparsity) bf16 FLOP/s per chip.
  memory_bytes: float  # HBM per chip.
  source: str


HARDWARE = {
    'h100': Hardware('NVIDIA H100 SXM5 80GB', 989e12, 80 * GB,
                     'NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOP/s with sparsity (989 dense), 80 GB HBM3'),
    'h200': Hardware('NVIDIA H200 SXM 141GB', 989e12, 141 * GB,
                     'NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOP/s with sparsity (989 dense), 141 GB '
                     'HBM3e'),
    'a100': Hardware('NVIDIA A100 SXM4 80GB', 312e12, 80 * GB,
                     'NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOP/s dense (624 with sparsity), 80 GB HBM2e'),
    'tpu_v5p': Hardware('Google TPU v5p', 459e12, 95 * GB,
                        'Cloud TPU documentation, TPU v5p: 459 TFLOP/s BF16 and 95 GB HBM2e per chip'),
    'tpu_v6e': Hardware('Google TPU v6e (Trillium)', 918e12, 32 * GB,
                        'Cloud TPU documentation, TPU v6e: 918 TFLOP/s BF16 and 32 GB HBM per chip'),
}

# --- Data and inputs as shapes. ---

# TFDS datasets the paper configs train on: (per-example shape, label count).
TFDS_SHAPES = {'cifar10': ((32, 32, 3), 10), 'imagenet_resized/64x64': ((64, 64, 3), 1000),
               'imagenet_resized/32x32': ((32, 32, 3), 1000)}
IMAGENET256_LATENTS = ((32, 32, 4), 1000)  # SD-VAE latents of ImageNet 256x256 (configs/imagenet256_latent).


@dataclasses.dataclass(frozen=True)
class ShapesOnly:
  """What the training step reads of a DataPipeline, without its files: the per-example shape, the label count
  (0: unlabelled), the per-example arrays its batches carry besides 'x' (of x's shape: reflow's 'eps', the latents'
  posterior 'x_std') and its on-device transform of a batch."""
  data_shape: tuple
  num_classes: int
  extra_keys: tuple = ()
  on_device: Callable = lambda key, batch, params=None: batch
  text: dict | None = None  # A text condition's per-example shapes ({'tokens': (77, 768), ...}), else labels.
  kind = 'host'

  @property
  def conditioning(self) -> Conditioning:
    if self.text is not None:
      return Conditioning('text', null_text={name: np.zeros(shape, np.float32) for name, shape in self.text.items()})
    return Conditioning.of_labels(self.num_classes)


def _tfds_shapes(config_data, pairs_of: str, network=None) -> ShapesOnly:
  del pairs_of, network
  if config_data.tfds_name not in TFDS_SHAPES:
    raise ConfigError(f'the planner knows the shapes of the TFDS datasets {sorted(TFDS_SHAPES)}, not '
                      f'{config_data.tfds_name!r}: add it to TFDS_SHAPES in experiments/plan.py')
  shape, classes = TFDS_SHAPES[config_data.tfds_name]
  if config_data.image_size:
    shape = (config_data.image_size, config_data.image_size, shape[-1])
  return ShapesOnly(shape, classes)


# Captioned latents of the SD pipelines (encode_latents --text_encoders), by the sd_unet preset that reads them: the
# latents' shape at the pipeline's resolution and the text condition's per-example shapes.
CAPTIONED_LATENTS = {
    'sd15': ((64, 64, 4), {'tokens': (77, 768)}),
    'sdxl_base': ((128, 128, 4), {'tokens': (77, 2048), 'pooled': (1280,), 'time_ids': (6,)}),
}


def _latent_shapes(config_data, pairs_of: str, network=None) -> ShapesOnly:
  """VAE latents as posterior moments (encode_latents' format: the larger batch of the two): ImageNet-256's with
  labels, or an SD pipeline's captioned ones for an sd_unet preset of CAPTIONED_LATENTS."""
  del config_data, pairs_of
  sample = lambda key, batch, params=None: latents.sample_moments(key, batch)
  if network is not None and network.name == 'sd_unet':
    if network.preset not in CAPTIONED_LATENTS:
      raise ConfigError(f'the planner knows the captioned latents of the presets {sorted(CAPTIONED_LATENTS)}, not '
                        f'{network.preset!r}: add it to CAPTIONED_LATENTS in experiments/plan.py')
    shape, text = CAPTIONED_LATENTS[network.preset]
    return ShapesOnly(shape, 0, extra_keys=('x_std',), on_device=sample, text=text)
  return ShapesOnly(*IMAGENET256_LATENTS, extra_keys=('x_std',), on_device=sample)


def _pair_shapes(config_data, pairs_of: str, network=None) -> ShapesOnly:
  del config_data, network
  if pairs_of not in TFDS_SHAPES:
    raise ConfigError(f'--pairs_of={pairs_of!r} is not a dataset the planner knows; use one of {sorted(TFDS_SHAPES)}')
  return ShapesOnly(*TFDS_SHAPES[pairs_of], extra_keys=('eps',))


# data.name -> (config.data, --pairs_of) -> ShapesOnly, for the datasets whose files are not on this machine; the
# others (toy, digits, digits_text) are local and built for real.
SHAPES_ONLY = {'tfds': _tfds_shapes, 'latents': _latent_shapes, 'reflow_pairs': _pair_shapes}


def planned_data(config, pairs_of: str = 'cifar10'):
  """The run's data: its shapes for a dataset in SHAPES_ONLY, else the real (local) pipeline."""
  if config.data.name not in SHAPES_ONLY:
    return data_lib.build_data(config.data, global_batch_size=config.train.batch_size, seed=config.train.seed)
  shapes = SHAPES_ONLY[config.data.name](config.data, pairs_of, config.network)
  return shapes if config.data.conditional else dataclasses.replace(shapes, num_classes=0)


def _abstract(tree):
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)


def _lpips_weights(data_shape, num_classes, pairs: int) -> dict:
  del data_shape, num_classes, pairs
  from fewstep_jax.nn import lpips
  return {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in lpips.weight_shapes().items()}


def _regression_pairs(data_shape, num_classes, pairs: int) -> dict:
  """ode_pairs.load_pairs' arrays: noise and data [pairs, *data_shape], labels [pairs]."""
  arrays = {name: jax.ShapeDtypeStruct((pairs,) + tuple(data_shape), jnp.float32) for name in ('noise', 'x')}
  if num_classes:
    arrays['y'] = jax.ShapeDtypeStruct((pairs,), jnp.int32)
  return arrays


# An ArraysInput's config field -> (data_shape, num_classes, pairs) -> the arrays it loads, as shapes.
PLANNED_ARRAYS = {'method.lpips_weights': _lpips_weights, 'method.regression_pairs': _regression_pairs}


def network_params(network, data_shape, num_classes):
  """Abstract parameters of `network` (a network ConfigDict)."""
  module = nn.build_network(network, num_classes=num_classes)
  example = jax.ShapeDtypeStruct((1,) + tuple(data_shape), jnp.float32)
  return jax.eval_shape(lambda key: nn.init_params(module, key, example), jax.random.key(0))


def planned_inputs(config, data, pairs: int = 100_000) -> dict:
  """Every input the configured method declares, abstract: teachers and starts on the config's own network."""
  specs = methods.method_class(config.method.name).inputs(config)
  shape, classes = data.data_shape, data.num_classes
  inputs = {}
  for name, spec in specs.items():
    if isinstance(spec, InitInput):
      inputs[name] = network_params(config.network, shape, classes)
    elif isinstance(spec, TeacherInput):
      readout = getattr(methods.method_class(config.method.name), 'readout_of', lambda config: None)(config)
      readout = readout or paths.readout('edm')
      network = config.network
      if not spec.same_network and readout.name != 'flow_map' and network.get('two_times', False):
        network = network.copy_and_resolve_references()  # A one-time teacher of a two-time student (CTM).
        network.two_times = False
      if network.get('guidance_embedding', 0):
        network = network.copy_and_resolve_references()  # LCM's student reads w; its teacher does not.
        network.guidance_embedding = 0
      inputs[name] = Teacher(network=network, readout=readout, data_shape=tuple(shape), num_classes=classes,
                             params=network_params(network, shape, classes), compute_dtype=config.train.compute_dtype,
                             source=f'abstract {network.name} (planning {spec.field}={spec.workdir!r})')
    elif isinstance(spec, ArraysInput) and spec.field in PLANNED_ARRAYS:
      inputs[name] = PLANNED_ARRAYS[spec.field](shape, classes, pairs)
    else:
      raise ConfigError(f'the planner cannot stand in for input {name!r} ({spec!r}): add its shapes to '
                        'PLANNED_ARRAYS in experiments/plan.py')
  return inputs


def scaled_mesh(config, devices: int):
  """The config with mesh.data = devices / mesh.fsdp (its fsdp kept), checked against its batch."""
  fsdp = config.mesh.fsdp
  if devices < 1 or devices % fsdp:
    raise ConfigError(f'--devices={devices} is not a multiple of mesh.fsdp={fsdp}: choose a multiple, or set '
                      '--config.mesh.fsdp')
  config = config.copy_and_resolve_references()
  config.mesh.data = devices // fsdp
  return config


def planned_run(config, devices: int, pairs_of: str = 'cifar10', pairs: int = 100_000) -> trainer.Run:
  """trainer.Run of `config` on `devices` devices, on the data's shapes and abstract inputs: nothing is read."""
  config = scaled_mesh(config, devices)
  data = planned_data(config, pairs_of)
  return trainer.Run(config, planned_inputs(config, data, pairs), data=data)


def abstract_batch(run):
  """The global batch as ShapeDtypeStructs split over the mesh (None for data sampled on the device)."""
  if run.data.kind == 'device':
    return None
  size = run.config.train.batch_size
  example = jax.ShapeDtypeStruct((size,) + tuple(run.data.data_shape), jnp.float32)
  batch = {'x': example, **{key: example for key in getattr(run.data, 'extra_keys', ())}}
  if run.data.conditioning.conditional:
    batch['y'] = jax.eval_shape(lambda: run.data.conditioning.example(size))
  sharding = sharding_lib.batch_sharding(run.mesh)
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), batch)


def abstract_state(run):
  """The TrainState as ShapeDtypeStructs carrying their training shardings (mesh.offload's parts in host memory)."""
  return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      run.abstract_state, run.train_shardings)


# --- What the state holds, per device. ---

def _shard_bytes(leaf) -> int:
  shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, 'sharding', None) is not None else leaf.shape
  return math.prod(shape) * jnp.dtype(leaf.dtype).itemsize


def _bytes(tree) -> int:
  return sum(_shard_bytes(leaf) for leaf in jax.tree.leaves(tree))


def _host_bytes(tree) -> int:
  """Bytes of the leaves placed in host memory (mesh.offload)."""
  return sum(_shard_bytes(leaf) for leaf in jax.tree.leaves(tree)
             if getattr(getattr(leaf, 'sharding', None), 'memory_kind', None) == offload.HOST)


def state_split(state) -> dict:
  """Per-device bytes of a TrainState (abstract with shardings, or real) by what they are: params, opt_state, ema
  of the trained networks; frozen inputs; other (step, state.extra). The five sum to the whole state; 'host' is the
  part of them mesh.offload keeps in host memory between steps."""
  nets = state.nets.values()
  return {'params': sum(_bytes(net.params) for net in nets), 'opt_state': sum(_bytes(net.opt_state) for net in nets),
          'ema': sum(_bytes(net.ema) for net in nets), 'frozen': _bytes(state.frozen),
          'other': _bytes(state.step) + _bytes(state.extra), 'host': _host_bytes(state)}


def parameter_counts(state) -> dict:
  """{trained role or frozen input: element count} (whole, not per device)."""
  count = lambda tree: int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
  return {**{role: count(net.params) for role, net in state.nets.items()},
          **{f'frozen:{name}': count(value) for name, value in state.frozen.items()}}


# --- The kinds of step. ---

def step_kinds(method, num_steps: int) -> list:
  """[(name, step options, steps of that kind among num_steps)]: one per distinct `method.step_options` the run
  compiles (a MultiNetworkMethod: one per phase of its schedule that runs), named by the updates it runs."""
  schedule = getattr(method, 'schedule', None)
  if schedule is None:
    return [('every step', method.step_options(0), num_steps)]
  counts = collections.Counter({schedule.before: min(num_steps, schedule.start)})
  after, period = max(num_steps - schedule.start, 0), len(schedule.pattern)
  first_step = {schedule.before: 0} if schedule.start else {}
  for offset, phase in enumerate(schedule.pattern):
    counts[phase] += after // period + (offset < after % period)
    first_step.setdefault(phase, schedule.start + offset)
  return [('+'.join(schedule.phases[phase]) or 'idle', method.step_options(first_step[phase]), counts[phase])
          for phase in sorted(counts) if counts[phase]]


def compile_kind(run, state, batch, options) -> dict:
  """One step kind lowered and compiled: its per-device memory and FLOPs, and the compile seconds."""
  began = time.perf_counter()
  compiled = run.make_train_step(**options).lower(state, batch).compile()
  seconds = time.perf_counter() - began
  memory = compiled.memory_analysis()
  sizes = {name: int(getattr(memory, f'{name}_size_in_bytes')) for name in ('argument', 'output', 'alias', 'temp')}
  return {**sizes, 'peak': sizes['argument'] + sizes['output'] - sizes['alias'] + sizes['temp'],
          'flops': bench.compiled_cost(compiled, 'flops'),
          'bytes_accessed': bench.compiled_cost(compiled, 'bytes accessed'), 'compile_s': round(seconds, 1)}


def trace_kind(run, state, batch, options):
  """One step kind traced (jax.eval_shape, no compile): a check that it builds at this size and keeps the state's
  shapes (tests/test_plan.py)."""
  step = run.make_train_step(**options)
  new_state, _ = jax.eval_shape(step, state, batch)
  if jax.tree.map(lambda a: (a.shape, a.dtype), new_state) != jax.tree.map(lambda a: (a.shape, a.dtype), state):
    raise AssertionError('the step changes the shapes or dtypes of the state')


def plan(config, devices: int, *, trace_only: bool = False, pairs_of: str = 'cifar10', pairs: int = 100_000) -> dict:
  """The plan of `config` on `devices` devices (the module docstring's figures), as a JSON-ready dict."""
  began = time.perf_counter()
  result = plan_run(planned_run(config, devices, pairs_of, pairs), trace_only=trace_only)
  return {**result, 'seconds': round(time.perf_counter() - began, 1)}


def plan_run(run, *, trace_only: bool = False) -> dict:
  """The plan of a built run (`planned_run`), as a JSON-ready dict."""
  state, batch = abstract_state(run), abstract_batch(run)
  config, devices = run.config, run.mesh.size
  kinds = []
  for name, options, steps in step_kinds(run.method, config.train.num_steps):
    figures = {} if trace_only else compile_kind(run, state, batch, options)
    kinds.append({'kind': name, 'options': {k: str(v) for k, v in options.items()}, 'steps': steps, **figures})
  split = state_split(state)
  host = split.pop('host')
  # What crosses the host link each step: the offloaded frozen networks in, and for host-averaged EMA copies the
  # updated parameters of the networks that keep any, out.
  moved = (_host_bytes(state.frozen)
           + sum(_bytes(net.params) for net in state.nets.values() if _host_bytes(net.ema)))
  # XLA:CPU counts host-memory arguments and outputs with the device's, and moves nothing for a transfer between
  # the two (they are one memory), so its peak is the device's plus what stays in host memory, less the offloaded
  # frozen networks' copies that a device holds during the step (they are in no CPU figure).
  for kind in kinds:
    if 'peak' in kind:
      kind['peak'] -= host - _host_bytes(state.frozen)
  return {'config': f'{config.method.name}/{config.data.name}/{config.network.name}', 'devices': devices,
          'mesh': {'data': config.mesh.data, 'fsdp': config.mesh.fsdp}, 'global_batch': config.train.batch_size,
          'device_batch': config.train.batch_size // devices, 'num_steps': config.train.num_steps,
          'compute_dtype': config.train.compute_dtype, 'parameters': parameter_counts(state),
          'state_bytes': {**split, 'total': sum(split.values())}, 'batch_bytes': _bytes(batch),
          'offload': list(run.offload), 'host_bytes': host, 'host_link_bytes_per_step': moved,
          'trace_only': trace_only, 'kinds': kinds}


def projection(result: dict, hardware: Hardware, mfu: float) -> dict:
  """Step time, images/s and accelerator-hours of a compiled plan on `hardware` at `mfu`; the per-device peak
  memory (the largest step kind's) against the hardware's."""
  kinds = result['kinds']
  state_on_device = result['state_bytes']['total'] - result.get('host_bytes', 0)
  peak = max(kind['peak'] for kind in kinds) if kinds and 'peak' in kinds[0] else state_on_device
  out = {'hardware': hardware.name, 'mfu': mfu, 'peak_bytes': peak, 'peak_is_state_only': 'peak' not in kinds[0],
         'fits': peak <= hardware.memory_bytes}
  if 'flops' in kinds[0]:
    steps = sum(kind['steps'] for kind in kinds)
    flops = sum(kind['flops'] * kind['steps'] for kind in kinds) / steps  # Per device, per step, on average.
    step_s = flops / (hardware.peak_bf16_flops * mfu)
    out.update(flops_per_device=flops, step_s=step_s, images_per_s=result['global_batch'] / step_s,
               accelerator_hours=result['devices'] * result['num_steps'] * step_s / 3600)
  return out


def _gb(value) -> str:
  return f'{value / GB:.2f} GB' if value >= 0.01 * GB else f'{value / 1e6:.2f} MB'


def report(result: dict, projected: dict) -> str:
  """The plan as text, per device."""
  lines = [f"{result['config']}: {result['devices']} devices (mesh data={result['mesh']['data']} x "
           f"fsdp={result['mesh']['fsdp']}), batch {result['global_batch']} ({result['device_batch']} per device), "
           f"{result['num_steps']:,} steps, compute {result['compute_dtype']}",
           'parameters: ' + ', '.join(f'{name} {count:,}' for name, count in result['parameters'].items()),
           'per device:']
  for name, value in result['state_bytes'].items():
    lines.append(f'  state {name:10s} {_gb(value)}')
  lines.append(f"  batch            {_gb(result['batch_bytes'])}")
  if result.get('offload'):
    lines.append(f"  in host memory   {_gb(result['host_bytes'])} (mesh.offload={','.join(result['offload'])}); "
                 f"{_gb(result['host_link_bytes_per_step'])} over the host link a step")
  for kind in result['kinds']:
    if 'peak' not in kind:
      lines.append(f"  step kind {kind['kind']!r} ({kind['steps']:,} steps): not compiled (--trace_only)")
      continue
    lines.append(f"  step kind {kind['kind']!r} ({kind['steps']:,} steps): temp {_gb(kind['temp'])}, arguments "
                 f"{_gb(kind['argument'])}, outputs {_gb(kind['output'])} (aliased {_gb(kind['alias'])}), peak "
                 f"{_gb(kind['peak'])}; {kind['flops'] / 1e12:.3f} TFLOP per device; compiled in "
                 f"{kind['compile_s']} s")
  memory = HARDWARE_BY_NAME[projected['hardware']].memory_bytes
  lines.append(f"on {projected['hardware']}: peak {_gb(projected['peak_bytes'])} of {_gb(memory)}"
               + (' (state only: --trace_only)' if projected['peak_is_state_only'] else '')
               + ('' if projected['fits'] else ' -- DOES NOT FIT'))
  if 'step_s' in projected:
    lines.append(f"at MFU {projected['mfu']}: {projected['step_s'] * 1e3:.1f} ms a step, "
                 f"{projected['images_per_s']:,.0f} images/s, {projected['accelerator_hours']:,.0f} "
                 'accelerator-hours for the run')
  return '\n'.join(lines)


HARDWARE_BY_NAME = {hardware.name: hardware for hardware in HARDWARE.values()}


# --- Every paper row (--all). ---

DEFAULT_DEVICES = 64  # No config docstring or paper-table source names its paper's device count: 64 H100s.
BEGIN = '<!-- plan: begin (generated by experiments/plan.py --all) -->'
END = '<!-- plan: end -->'
SUMMARY_BEGIN = '<!-- plan summary: begin (generated by experiments/plan.py --all) -->'
SUMMARY_END = '<!-- plan summary: end -->'


def row_devices(batch: int, most: int = DEFAULT_DEVICES) -> int:
  """The most devices, at most `most`, that split `batch` evenly (56 for DMD2's 280)."""
  return max(n for n in range(1, most + 1) if batch % n == 0)


def _run_self(arguments: list, timeout: float) -> tuple:
  """(JSON lines printed, the error line or None) of this script run with `arguments` in its own process (each device
  count needs its own), from the repository (its fewstep_jax first on the path)."""
  command = [sys.executable, os.path.join(HERE, 'plan.py'), '--json', *arguments]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
  try:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    stdout, error = done.stdout, None
    if done.returncode:
      error = (done.stderr.strip().splitlines() or ['no output'])[-1][:200]
  except subprocess.TimeoutExpired as expired:
    stdout, error = expired.stdout or '', f'over {timeout:.0f} s'
    stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
  return [json.loads(line) for line in stdout.splitlines() if line.startswith('{')], error


def plan_in_subprocess(config_path: str, devices: int, hardware: str, mfu: float, timeout: float) -> dict:
  """This script's compiled plan of one config, or {'error': the reason}."""
  results, error = _run_self([f'--config={config_path}', f'--devices={devices}', f'--hardware={hardware}',
                              f'--mfu={mfu}'], timeout)
  return results[-1] if results and not error else {'error': error or 'no output'}


def traced_in_subprocess(config_paths: list, devices: int, hardware: str, mfu: float, timeout: float) -> dict:
  """{config path: its --trace_only plan, or {'error': the reason}} of configs planned on `devices` devices in one
  process."""
  results, error = _run_self([f'--trace_configs={",".join(config_paths)}', f'--devices={devices}',
                              f'--hardware={hardware}', f'--mfu={mfu}'], timeout)
  planned = {result.pop('path'): result for result in results}
  return {path: planned.get(path, {'error': error or 'no output'}) for path in config_paths}


def trace_configs(config_paths: list, devices: int, hardware: Hardware, mfu: float, pairs_of: str, pairs: int):
  """Prints a JSON line per config (a repository path): its --trace_only plan and projection, or its error."""
  from fewstep_jax.config_base import load_config
  for path in config_paths:
    try:
      result = plan(load_config(os.path.join(REPO, path)), devices, trace_only=True, pairs_of=pairs_of, pairs=pairs)
      result['projection'] = projection(result, hardware, mfu)
    except Exception as error:  # Reported in the row; the other configs are still planned.
      result = {'error': f'failed: {type(error).__name__}: {error}'[:200]}
    print(json.dumps({'path': path, **result}), flush=True)


def fixes(result: dict, memory: float) -> str:
  """What would bring a plan that does not fit `memory` bytes per device under it."""
  split, fsdp = result['state_bytes'], result['mesh']['fsdp']
  shardable = split['params'] + split['opt_state'] + split['ema'] + split['frozen']
  temp = max((kind.get('temp', 0) for kind in result['kinds']), default=0)
  advice = []
  if fsdp < 8 and result['devices'] % 8 == 0 and shardable > 0.1 * memory:
    advice.append(f"mesh.fsdp=8 (state {shardable / GB:.1f} -> ~{shardable / 8 / GB:.1f} GB)")
  if split['ema'] > 0.05 * memory and 'ema' not in result.get('offload', ()):
    advice.append(f"mesh.offload=ema ({split['ema'] / GB:.1f} GB of EMA copies to host memory)")
  room = memory - (shardable / (8 if advice else 1)) - split['other']
  if temp > room:
    factor = 2 ** math.ceil(math.log2(temp / max(room, 0.05 * memory)))
    advice.append(f'network.remat, or train.micro_batches={factor} (activations: temp {temp / GB:.1f} GB)')
  return '; '.join(advice) or 'more fsdp'


def _count(value) -> str:
  return '–' if value is None else f'{value:,.0f}'


def _cell(value, scale=GB, digits=1) -> str:
  return '–' if value is None else f'{value / scale:.{digits}f}'


def table(rows: list, hardware: Hardware) -> str:
  """The markdown table of every planned row (dicts of plan() and projection(), or errors)."""
  lines = [f'| Config | Devices (data x fsdp) | Batch / device | Compute | Trained params (M) | State GB / device: '
           f'params / opt / EMA / frozen | Temp GB (largest step) | Peak GB '
           f'| Fits {hardware.memory_bytes / GB:.0f} GB? | TFLOP / device / step | Step ms | Images/s '
           f'| {hardware.name.split()[1]}-hours | Compile s | Plan |',
           '|' + '---|' * 15]
  for row in rows:
    name = f"`{row['path']}`"
    if 'error' in row:
      lines.append(f"| {name} | {row['devices']} |" + ' |' * 12 + f" {row['error']} |")
      continue
    split, projected, kinds = row['state_bytes'], row['projection'], row['kinds']
    compiled = 'peak' in kinds[0]
    trained = sum(count for role, count in row['parameters'].items() if not role.startswith('frozen:'))
    temp = max(kind['temp'] for kind in kinds) if compiled else None
    fits = 'yes' if projected['fits'] else f"**no**: {fixes(row, hardware.memory_bytes)}"
    lines.append('| ' + ' | '.join([
        name, f"{row['devices']} ({row['mesh']['data']} x {row['mesh']['fsdp']})", str(row['device_batch']),
        row['compute_dtype'], f'{trained / 1e6:.0f}',
        ' / '.join(_cell(split[key], digits=2) for key in ('params', 'opt_state', 'ema', 'frozen')),
        _cell(temp), _cell(projected['peak_bytes']) + ('' if compiled else ' (state only)'), fits,
        _cell(projected.get('flops_per_device'), 1e12, 2), _cell(projected.get('step_s'), 1e-3, 1),
        _count(projected.get('images_per_s')), _count(projected.get('accelerator_hours')),
        ' + '.join(str(kind['compile_s']) for kind in kinds) if compiled else '–',
        'compiled' if compiled else '**trace only**']) + ' |')
  return '\n'.join(lines) + '\n'


def _read_results(path: str) -> dict:
  """{config path: its latest compiled row, else its latest row} of a --results file (absent: none)."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {row['path']: row for row in sorted(rows, key=_compiled)}  # Stable: the latest of each kind last.


def _compiled(row) -> bool:
  return 'error' not in row and bool(row['kinds']) and 'peak' in row['kinds'][0]


def write_page(out: str, hardware_key: str, mfu: float, budget_s: float, row_timeout_s: float, compile_first=(),
               results_path: str = '', readme: str = ''):
  """Plans every paper-row config and writes the table between the BEGIN and END markers of `out`: the configs of
  `compile_first` (all, in the table's order, if empty) compiled while `budget_s` seconds of compiling last, every
  other row trace-only. Each planned row is appended to `results_path`, whose rows are reused."""
  _check_markers(out)
  if readme:
    _check_markers(readme, SUMMARY_BEGIN, SUMMARY_END)
  sys.path.insert(0, os.path.join(HERE, 'paper_tables'))
  from render import load_rows
  hardware, spent = HARDWARE[hardware_key], 0.0
  paths_in_table = list(dict.fromkeys(row['config'] for row in load_rows()))
  unknown = sorted(set(compile_first) - set(paths_in_table))
  if unknown:
    raise ConfigError(f'--compile names configs that are not paper rows: {unknown}')
  devices = {path: row_devices(_config_batch(path)) for path in paths_in_table}
  results = _read_results(results_path) if results_path else {}

  def keep(path, result, how):
    results[path] = row = {'path': path, 'devices': devices[path], **result}
    if results_path:
      with open(results_path, 'a') as f:
        f.write(json.dumps(row) + '\n')
    print(f"{path}: {devices[path]} devices, {how}: {result.get('error', 'ok')}", flush=True)

  for path in list(compile_first) or paths_in_table:
    if spent >= budget_s:
      break
    if path in results and _compiled(results[path]):
      continue
    began = time.perf_counter()
    result = plan_in_subprocess(path, devices[path], hardware_key, mfu, min(row_timeout_s, budget_s - spent))
    spent += time.perf_counter() - began
    if 'error' not in result:
      keep(path, result, 'compiled')
  for count in sorted(set(devices.values())):  # One process per device count.
    rest = [path for path in paths_in_table if devices[path] == count and 'error' in results.get(path, {'error': 1})]
    if rest:
      for path, result in traced_in_subprocess(rest, count, hardware_key, mfu, row_timeout_s * len(rest)).items():
        keep(path, result, 'traced')
  rows = [results[path] for path in paths_in_table]
  render_page(out, rows, hardware, mfu)
  if readme:
    _replace_between(readme, SUMMARY_BEGIN, SUMMARY_END, summary(rows, hardware, mfu, os.path.relpath(out, REPO)))


def _check_markers(out: str, begin: str = BEGIN, end: str = END):
  with open(out) as f:
    page = f.read()
  if begin not in page or end not in page:
    raise ConfigError(f'{out} lacks the markers {begin} and {end} that the generated part goes between: add them')


def _replace_between(path: str, begin: str, end: str, text: str):
  with open(path) as f:
    page = f.read()
  before, rest = page.split(begin, 1)
  with open(path, 'w') as f:
    f.write(before + begin + '\n' + text + end + rest.split(end, 1)[1])


def summary(rows: list, hardware: Hardware, mfu: float, page: str) -> str:
  """The README's few lines on the plan of every paper row: how many fit (by their compiled peak, or by their state
  where only traced), which do not and what would make them fit, what the compiled rows cost."""
  planned = [row for row in rows if 'error' not in row]
  compiled = [row for row in planned if _compiled(row)]
  short, memory = hardware.name.split()[1], f'{hardware.memory_bytes / GB:.0f} GB'
  over = [f"`{row['path']}` (peak {row['projection']['peak_bytes'] / GB:.0f} GB: {fixes(row, hardware.memory_bytes)})"
          for row in planned if not row['projection']['fits']]
  text = (f"Planned for {hardware.name} ({page}), at each paper's batch on its device count: "
          f"{len(planned) - len(over)} of {len(rows)} paper-row configs fit {memory} per device. "
          f"{len(compiled)} of them {'was' if len(compiled) == 1 else 'were'} compiled at full size, activations "
          f"included; the other {len(planned) - len(compiled)} "
          f"{'is' if len(planned) - len(compiled) == 1 else 'are'} judged by the training state alone (parameters, "
          'optimizer, EMA, frozen networks), since a full-size compile takes longer than this CPU gives it.')
  if len(planned) < len(rows):
    text += f' {len(rows) - len(planned)} could not be planned.'
  text += (' Over the limit: ' + '; '.join(over) + '.') if over else ''
  costs = sorted((row['projection']['accelerator_hours'], row['path']) for row in compiled
                 if 'accelerator_hours' in row['projection'])
  if len(costs) == 1:
    text += f' Projected at MFU {mfu}: `{costs[0][1]}` {costs[0][0]:,.0f} {short}-hours.'
  elif costs:
    (low, cheapest), (high, costliest) = costs[0], costs[-1]
    text += (f' Projected at MFU {mfu}, the compiled rows cost from {low:,.0f} (`{cheapest}`) to {high:,.0f} '
             f'(`{costliest}`) {short}-hours each.')
  return textwrap.fill(text, width=118, break_on_hyphens=False, break_long_words=False) + '\n'



def render_page(out: str, rows: list, hardware: Hardware, mfu: float):
  """Writes the table of `rows` between the BEGIN and END markers of `out`, the rest of the page kept."""
  _check_markers(out)
  with open(out) as f:
    page = f.read()
  stamp = (f'{hardware.name} at MFU {mfu}: peak {hardware.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 dense, '
           f'{hardware.memory_bytes / GB:.0f} GB ({hardware.source}). Rows that compute in float32 are projected '
           'at the bf16 peak too: on the GPU their matmuls run as TF32 at half of it, or slower.\n\n')
  before, rest = page.split(BEGIN, 1)
  with open(out, 'w') as f:
    f.write(before + BEGIN + '\n' + stamp + table(rows, hardware) + END + rest.split(END, 1)[1])


def _config_batch(path: str) -> int:
  from fewstep_jax.config_base import load_config
  return load_config(os.path.join(REPO, path)).train.batch_size


def check_flags():
  """A clear error for a bad --hardware / --mfu / --devices."""
  if FLAGS.hardware not in HARDWARE:
    raise ConfigError(f'--hardware={FLAGS.hardware!r} is unknown; use one of {sorted(HARDWARE)}')
  if not 0 < FLAGS.mfu <= 1:
    raise ConfigError(f'--mfu={FLAGS.mfu} is not in (0, 1]: give a fraction such as 0.4')
  if FLAGS.devices < 1:
    raise ConfigError(f'--devices={FLAGS.devices}: give at least 1')
  if jax.device_count() != FLAGS.devices:
    raise ConfigError(f'JAX sees {jax.device_count()} devices, not --devices={FLAGS.devices}: run the script itself '
                      '(python experiments/plan.py), which sets the host device count before JAX starts')


def main(argv):
  del argv
  try:
    check_flags()
    if FLAGS.all:
      write_page(FLAGS.out, FLAGS.hardware, FLAGS.mfu, FLAGS.compile_budget_s, FLAGS.row_timeout_s, FLAGS.compile,
                 FLAGS.results, FLAGS.readme)
      return
    if FLAGS.trace_configs:
      trace_configs(FLAGS.trace_configs, FLAGS.devices, HARDWARE[FLAGS.hardware], FLAGS.mfu, FLAGS.pairs_of,
                    FLAGS.regression_pairs)
      return
    if FLAGS.config is None:
      raise ConfigError('give --config=FILE (an experiment config), or --all')
    result = plan(FLAGS.config, FLAGS.devices, trace_only=FLAGS.trace_only, pairs_of=FLAGS.pairs_of,
                  pairs=FLAGS.regression_pairs)
  except ConfigError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)
  projected = projection(result, HARDWARE[FLAGS.hardware], FLAGS.mfu)
  if FLAGS.json:
    print(json.dumps({**result, 'projection': projected}))
  else:
    print(report(result, projected))


if __name__ == '__main__':
  define_flags()
  app.run(main)
