"""Runs as data: what a finished run is (its config, method, parameters by name, data description), and the one place
where the inputs a method declares (fewstep_jax/inputs.py) are resolved into values.

Every training run writes `run_info.json` beside its config: the data's shape and label count, how its network is
read (its readout, and whether it can teach), the descriptions of the teachers it learnt from, and the structure of
its parameters. Opening a run reads those two files and restores only the parameters asked for (never its optimizer
state, never its own teacher's), so nothing here recurses through other runs. Each input resolved is named in one
line at startup (its directory, method or imported file, readout, step and parameter copy): a run's log says what
it learnt from.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewstep_jax import config_base, methods, nn, paths
from fewstep_jax.errors import ConfigError, InputNotFoundError
from fewstep_jax.inputs import ArraysInput, InitInput, Teacher, TeacherInput
from fewstep_jax.mesh_axes import BATCH_AXES
from fewstep_jax.nn import lora as lora_lib
from fewstep_jax.train import files
from fewstep_jax.train import sharding as sharding_lib
from fewstep_jax.train.checkpoint import Checkpointer, committed_steps
from fewstep_jax.train.state import NetState, TrainState

RUN_INFO = 'run_info.json'

# Network fields that change how the network runs but not its parameters: a run may start from (or distil) another
# whose values differ (ECT tunes an EDM model with more dropout; a teacher may use another attention kernel or remat).
PARAMETER_FREE_NETWORK_FIELDS = ('dropout', 'attention', 'remat')

# The data fields that say which distribution a run learnt, per data.name.
DISTRIBUTION_FIELDS = {'toy': ('toy',), 'digits': ('image_size',), 'tfds': ('tfds_name', 'image_size')}


def _as_json(config) -> dict:
  """A config as its JSON form: a run's stored config.json holds lists where a config file wrote tuples."""
  return json.loads(json.dumps(config.to_dict()))


def network_differences(a, b) -> list:
  """The network fields (sorted names) whose values differ between two network ConfigDicts, other than the
  PARAMETER_FREE_NETWORK_FIELDS and the network's own parameter-free fields (`nn.parameter_free_fields`)."""
  a, b = _as_json(a), _as_json(b)
  free = set(PARAMETER_FREE_NETWORK_FIELDS)
  if a.get('name') == b.get('name') and a.get('name') in nn.NETWORKS:
    free.update(nn.parameter_free_fields(a['name']))
    # A field added after a run was written (absent from its stored config) had its default there.
    defaults = _as_json(nn.network_defaults(a['name']))
    a, b = {**defaults, **a}, {**defaults, **b}
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in free)


def data_differences(theirs, ours) -> list:
  """The data fields (sorted names) in which two runs' data configs describe different distributions. Reflow
  pairs are a teacher's own samples of its data, so they match any teacher."""
  if 'reflow_pairs' in (theirs.name, ours.name):
    return []
  fields = ('name',) + DISTRIBUTION_FIELDS.get(ours.name, ())
  return sorted(f'data.{field}' for field in fields if theirs.get(field) != ours.get(field))


# --- What a run records. ---

def parameter_structure(tree):
  return jax.tree.map(lambda leaf: {'shape': list(leaf.shape), 'dtype': str(leaf.dtype)}, tree)


def write_run_info(workdir: str, method, state, inputs: dict):
  """Records what opening this run later needs (see the module docstring); `inputs` are the resolved inputs."""
  student = state.nets['student']
  info = {
      'data_shape': list(method.data_shape),
      'num_classes': int(method.num_classes),
      'readout': None if method.readout is None else method.readout.to_json(),
      'teaches': bool(method.teaches),
      'teachers': {name: value.describe() for name, value in inputs.items() if isinstance(value, Teacher)},
      'parameters': {'params': parameter_structure(student.params), 'ema': parameter_structure(student.ema)},
  }
  lora = getattr(method, 'lora', None)
  if lora is not None:  # The parameters are LoRA factors over a frozen base the checkpoint also holds.
    info['lora'] = {'rank': lora.rank, 'alpha': lora.alpha, 'targets': list(lora.targets), 'base': lora.base,
                    'base_structure': parameter_structure(state.frozen[lora.base])}
  files.write_json(os.path.join(workdir, RUN_INFO), info, indent=None)


def read_run_info(workdir: str, role: str = 'run') -> tuple:
  """(config, info) of the run in `workdir`; a clear error naming `role` if it is not a trained run."""
  info_path, config_path = os.path.join(workdir, RUN_INFO), os.path.join(workdir, 'config.json')
  for path in (info_path, config_path):
    if not os.path.exists(path):
      raise InputNotFoundError(
          f'{path} not found: {workdir} is not a trained fewstep_jax run ({role}). Train it first '
          f'(python -m fewstep_jax.main --config=... --workdir={workdir}) or fix the path in the config.')
  return ml_collections.ConfigDict(files.read_json(config_path)), files.read_json(info_path)


def describe_run(workdir: str, config, info: dict, step: int, params_name: str) -> str:
  """One line naming a run that another reads (a teacher, a start): its directory, what made it (a method, or the
  file tools.import_checkpoint read), its readout, step and parameter copy."""
  imported = config.get('imported_from')
  made = f'imported from {imported}' if imported else f'{config.method.name} run, step {step}'
  readout = (info.get('readout') or {}).get('name')
  return f'{os.path.abspath(workdir)} ({made}, readout {readout}, parameters {params_name})'


def recorded_teachers(info: dict) -> dict:
  """The Teachers a run learnt from, as descriptions (no parameters): enough to build its method again."""
  return {name: Teacher.from_description(description) for name, description in info.get('teachers', {}).items()}


# --- Opening a run. ---

@dataclasses.dataclass
class TrainedRun:
  """A finished run: its config, its method (built as it was trained), its step and the parameter copies restored
  (name -> pytree; 'params' or EMA names such as 'ema_0.999')."""
  workdir: str
  config: ml_collections.ConfigDict
  info: dict
  method: object
  step: int
  params: dict

  def state(self) -> TrainState:
    """The restored copies as a TrainState holding only the student's parameters (what sampling reads)."""
    ema = {name: value for name, value in self.params.items() if name != 'params'}
    student = NetState(params=self.params.get('params'), opt_state=None, ema=ema)
    return TrainState(step=jnp.asarray(self.step, jnp.int32), nets={'student': student}, frozen={}, extra={})


def _default_mesh():
  return jax.sharding.Mesh(np.asarray(jax.devices()).reshape(1, -1), BATCH_AXES)


def _as_abstract(tree):
  """A recorded parameter structure (`parameter_structure`) as ShapeDtypeStructs."""
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(tuple(leaf['shape']), leaf['dtype']), tree,
                      is_leaf=lambda node: isinstance(node, dict) and 'shape' in node)


def _abstract_parameters(info: dict, names):
  """{name: abstract pytree} of the student's parameter copies `names`, from the recorded structure."""
  if 'parameters' not in info:
    raise ConfigError(f'{RUN_INFO} records no parameter structure: the run was trained by an older fewstep_jax. '
                      'Train it again (or resume it for one step, which rewrites the file).')
  recorded = info['parameters']
  available = ['params'] + sorted(recorded['ema'])
  missing = [name for name in names if name not in available]
  if missing:
    raise ConfigError(f'parameters {missing} are not in this run; available: {available}')
  return {name: _as_abstract(recorded['params'] if name == 'params' else recorded['ema'][name]) for name in names}


def restore_parameters(workdir: str, info: dict, names, *, mesh=None, fsdp_min_size: int = 2 ** 14,
                       step: int = 0, max_to_keep: int = 1, log=print, merged: bool = False):
  """(step, {name: params}): the student's parameter copies `names` of the newest readable checkpoint (or `step`),
  placed on `mesh` by the usual partition rules; nothing else is read. merged: a LoRA run's copies are its factors
  merged over the base its checkpoint holds (the network's full parameters), instead of the factors alone."""
  directory = os.path.join(workdir, 'checkpoints')
  if not committed_steps(directory):
    raise InputNotFoundError(f'no checkpoint in {directory}: the run was never saved; train it first or point the '
                             'config at a trained workdir.')
  mesh = mesh or _default_mesh()
  abstract = _abstract_parameters(info, names)
  subtree = {'params': abstract['params']} if 'params' in abstract else {}
  ema = {name: value for name, value in abstract.items() if name != 'params'}
  if ema:
    subtree['ema'] = ema
  target = {'nets': {'student': subtree}}
  lora = info.get('lora') if merged else None
  if lora is not None:
    target['frozen'] = {lora['base']: _as_abstract(lora['base_structure'])}
  checkpointer = Checkpointer(directory, max_to_keep=max_to_keep, read_only=True)
  try:
    found, restored = checkpointer.restore_newest(target, sharding_lib.state_shardings(target, mesh, fsdp_min_size),
                                                  step=step, log=log, partial=True)
  finally:
    checkpointer.close()
  if found is None:
    raise InputNotFoundError(f'no checkpoint in {directory} can be read')
  student = restored[0]['nets']['student']
  copies = {name: (student['params'] if name == 'params' else student['ema'][name]) for name in names}
  if lora is not None:
    adapters = lora_lib.LoRA(rank=lora['rank'], alpha=lora['alpha'], targets=tuple(lora['targets']), base='')
    base = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), restored[0]['frozen'][lora['base']])
    merge = jax.jit(lambda base, factors: lora_lib.merge(adapters, base, factors))
    copies = {name: merge(base, factors) for name, factors in copies.items()}
  return found, copies


def open_run(workdir: str, params_names=None, *, mesh=None, fsdp_min_size: int = 2 ** 14) -> TrainedRun:
  """The run in `workdir` with its parameter copies `params_names` (default: its config.eval.params) restored."""
  config, info = read_run_info(workdir)
  names = [config.eval.params] if params_names is None else list(params_names)
  method = methods.build_method(config, data_shape=tuple(info['data_shape']), num_classes=info['num_classes'],
                                inputs=recorded_teachers(info))
  step, params = restore_parameters(workdir, info, names, mesh=mesh, fsdp_min_size=fsdp_min_size,
                                    max_to_keep=config.train.max_to_keep,
                                    log=lambda message: print(f'{workdir}: {message}', flush=True), merged=True)
  return TrainedRun(workdir, config, info, method, step, params)


def open_teacher(workdir: str, field: str = 'method.teacher', *, params_name: str | None = None, mesh=None,
                 fsdp_min_size: int = 2 ** 14) -> Teacher:
  """The trained run in `workdir` as a Teacher, with its parameters (its eval.params copy by default)."""
  if not workdir:
    raise ConfigError(f'this method needs a trained run as its {field[len("method."):]}: set '
                      f'--config.{field}=WORKDIR')
  config, info = read_run_info(workdir, field)
  if info.get('readout') is None or not info.get('teaches', False):
    raise ConfigError(f'{field}={workdir!r} is a {config.method.name!r} run, which cannot serve as a teacher: its '
                      'network is not a denoiser or velocity field. Distil an edm, flow_matching, sct or flow-map run.')
  name = params_name or config.eval.params
  step, params = restore_parameters(workdir, info, [name], mesh=mesh, fsdp_min_size=fsdp_min_size,
                                    max_to_keep=config.train.max_to_keep,
                                    log=lambda message: print(f'{workdir}: {message}', flush=True), merged=True)
  print(f'{field}: {describe_run(workdir, config, info, step, name)}', flush=True)
  return Teacher(network=config.network, readout=paths.readout_from_json(info['readout']),
                 data_shape=tuple(info['data_shape']), num_classes=int(info['num_classes']), params=params[name],
                 data=config.data, compute_dtype=config.train.compute_dtype, source=os.path.abspath(workdir))


# --- Resolving a method's declared inputs. ---

def check_teacher(teacher: Teacher, field: str, config, data_shape, num_classes, same_network: bool):
  """A clear error unless `teacher` fits this run: the same data (shape, labels, distribution) and, with
  same_network, the same network up to PARAMETER_FREE_NETWORK_FIELDS."""
  where = f'{field}={teacher.source!r}' if teacher.source else field
  if same_network and teacher.network is None:
    raise ConfigError(f'{where} has no network config, but this method starts its student from the teacher\'s '
                      'parameters: give the Teacher the network config its parameters belong to.')
  check_fits(where, teacher.data_shape, teacher.num_classes, teacher.data, teacher.network if same_network else None,
             config, data_shape, num_classes)


def check_fits(where: str, their_shape, their_classes, their_data, their_network, config, data_shape,
               num_classes):
  """A clear error naming `where` unless another run's (or Teacher's) data shape, label count, data config (None:
  not checked) and network config (None: not checked) are this run's."""
  if (tuple(their_shape), their_classes) != (tuple(data_shape), num_classes):
    raise ConfigError(f'{where} was trained on data of shape {tuple(their_shape)} with {their_classes} '
                      f'classes; this run has {tuple(data_shape)} and {num_classes}.')
  if their_data is not None and data_differences(their_data, config.data):
    differ = data_differences(their_data, config.data)
    raise ConfigError(f'{where} was trained on other data: '
                      + ', '.join(f'{name} = {their_data.get(name[5:])!r} there, '
                                  f'{config.data.get(name[5:])!r} here' for name in differ)
                      + '. Train a teacher on this data, or set the same data fields.')
  if their_network is not None:
    _check_network(where, their_network, config.network)


def _check_network(where: str, theirs, ours):
  differ = network_differences(theirs, ours)
  if differ:
    a, b = _as_json(theirs), _as_json(ours)
    raise ConfigError(f'{where} has a different network: fields {differ} differ '
                      f'(run: {[a.get(k) for k in differ]}, this config: {[b.get(k) for k in differ]}). '
                      'Use the same network config, or another run.')


def _resolve(spec, config, data_shape, num_classes, mesh, fsdp_min_size):
  if isinstance(spec, TeacherInput):
    teacher = open_teacher(spec.workdir, spec.field, mesh=mesh, fsdp_min_size=fsdp_min_size)
    check_teacher(teacher, spec.field, config, data_shape, num_classes, spec.same_network)
    return teacher
  if isinstance(spec, InitInput):
    their_config, info = read_run_info(spec.workdir, spec.field)
    where = f'{spec.field}={spec.workdir!r}'
    check_fits(where, info['data_shape'], info['num_classes'], their_config.data, their_config.network, config,
               data_shape, num_classes)
    their_readout = (info.get('readout') or {}).get('name')
    if their_readout != spec.readout:
      raise ConfigError(f'{where} is a {their_config.method.name!r} run whose network predicts in the '
                        f'{their_readout!r} parameterisation; this {config.method.name!r} run uses {spec.readout!r}.'
                        + (' Set --config.method.parameterization to match.' if 'parameterization' in config.method
                           else ''))
    name = their_config.eval.params
    step, params = restore_parameters(spec.workdir, info, [name], mesh=mesh, fsdp_min_size=fsdp_min_size,
                                      max_to_keep=their_config.train.max_to_keep, merged=True)
    print(f'{spec.field}: {describe_run(spec.workdir, their_config, info, step, name)}', flush=True)
    return params[name]
  if isinstance(spec, ArraysInput):
    node, leaf = config_base.config_node(config, spec.field)
    print(f'{spec.field}: {node[leaf]} (arrays)', flush=True)
    return spec.load(tuple(data_shape), num_classes)
  raise TypeError(f'unknown input spec {spec!r}')


def resolve_inputs(config, data_shape, num_classes, given: dict | None = None, *, mesh=None,
                   fsdp_min_size: int = 2 ** 14) -> dict:
  """name -> value for every input the configured method declares (Teacher, parameters, arrays), read once on the
  host. `given` supplies values directly (a Teacher built from parameters in a notebook, an imported checkpoint);
  a given Teacher is checked like one read from a run."""
  given = dict(given or {})
  specs = methods.method_class(config.method.name).inputs(config)
  for name, value in given.items():
    if isinstance(value, Teacher):
      spec = specs.get(name)
      check_teacher(value, f'inputs[{name!r}]', config, data_shape, num_classes,
                    same_network=bool(getattr(spec, 'same_network', False)))
      print(f'inputs[{name!r}]: {value.source} (readout {value.readout.name})', flush=True)
  resolved = {name: _resolve(spec, config, data_shape, num_classes, mesh, fsdp_min_size)
              for name, spec in specs.items() if name not in given}
  return {**resolved, **given}


def frozen_values(inputs: dict) -> dict:
  """What enters Method.init as `frozen`: each Teacher's parameters and every other resolved value; Teachers given
  as descriptions only (params None) contribute nothing."""
  frozen = {}
  for name, value in inputs.items():
    value = value.params if isinstance(value, Teacher) else value
    if value is not None:
      frozen[name] = value
  return frozen
