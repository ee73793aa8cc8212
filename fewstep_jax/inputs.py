"""What a method reads besides its batch, declared as data: another run (a teacher, a run to start from) or arrays
stored in files (teacher ODE pairs, a distance's weights).

A method states them with `Method.inputs(config) -> {name: spec}`, without building anything. `fewstep_jax.runs`
resolves every spec once, on the host, before the method is built: a TeacherInput becomes a `Teacher`, an InitInput
the parameters to start from, an ArraysInput its arrays. The method's constructor receives the Teachers (it reads
their networks through their readouts); the parameters and arrays enter `Method.init` as `frozen`, so that they reach
the compiled step as sharded arguments, never as constants. No method opens a file.

A `Teacher` need not come from a fewstep_jax run: any parameter pytree of a network the project builds, with the
readout it was trained with, is one (an imported checkpoint, or parameters made in a notebook).
"""
import dataclasses
from typing import Any, Callable

import ml_collections

from fewstep_jax import nn, paths


@dataclasses.dataclass(frozen=True)
class TeacherInput:
  """The trained run in `workdir`, as a Teacher. `field` is the config field that names it (for messages); with
  `same_network` the student starts from the teacher's parameters, so the run's network must be this config's."""
  workdir: str
  field: str = 'method.teacher'
  same_network: bool = False


@dataclasses.dataclass(frozen=True)
class InitInput:
  """The parameters of the trained run in `workdir`, to start the student from: its network must be this config's
  and its readout `readout` (the name this method reads its network with), so that they mean the same here. frozen:
  the parameters stay frozen in the state (a stage-1 model), rather than starting a trained network."""
  workdir: str
  readout: str
  field: str = 'method.init_from'
  frozen: bool = False


@dataclasses.dataclass(frozen=True)
class ArraysInput:
  """Arrays that `load() -> pytree` reads on the host (a function of the data or network modules, given the paths
  from the config); `field` names the config field they come from, for messages."""
  load: Callable[[], Any]
  field: str


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen network a method learns from: parameters of a network that `network` (a network ConfigDict) builds,
  read through `readout` (what its raw output predicts, on which path; paths.READOUTS).

  params: the parameter pytree, or None for a description only (enough to build a method that was distilled from
  it, e.g. to sample its student). data: the data config it learnt, checked against the student's when given.
  apply: the raw network function apply(params, x, c_noise, r, y, key), when it is not one `network` builds (an
  exact formula in a test).
  """
  network: ml_collections.ConfigDict
  readout: paths.Readout
  data_shape: tuple
  num_classes: int
  params: Any = None
  data: Any = None
  compute_dtype: str = 'float32'
  source: str = 'parameters given in memory'
  apply: Callable | None = None

  def model(self, apply=None):
    """(params, z, time, r=None, y=None, key=None) -> the readout's prediction on its own path, of the raw network
    `apply` (the teacher's own network by default; a student on the same network reads itself this way)."""
    if apply is None and self.apply is not None:
      return self.readout.model(self.apply)
    if apply is None:
      module = nn.build_network(self.network, num_classes=self.num_classes, dtype=nn.dtype_named(self.compute_dtype))
      apply = nn.make_apply(module)
    if self.network.get('logvar_head', False):  # The prediction, without the learned log-variance.
      raw = apply
      apply = lambda *args: raw(*args)[0]
    return self.readout.model(apply)

  def prediction(self, path, kind: str, apply=None):
    """(params, z, time, y=None) -> the prediction `kind` [B, ...] on `path`, converted exactly and directly from the
    readout's own path and kind (paths.reparameterize)."""
    model = paths.reparameterize(self.model(apply), self.readout.path, self.readout.kind, path, kind)
    return lambda params, z, time, y=None: model(params, z, time, y=y)

  def with_params(self, params) -> 'Teacher':
    return dataclasses.replace(self, params=params)

  def describe(self) -> dict:
    """The teacher without its parameters, as JSON (what a run distilled from it records)."""
    as_dict = lambda config: None if config is None else config.to_dict()
    return {'network': as_dict(self.network), 'readout': self.readout.to_json(),
            'data_shape': list(self.data_shape), 'num_classes': int(self.num_classes), 'data': as_dict(self.data),
            'compute_dtype': self.compute_dtype, 'source': self.source}

  @classmethod
  def from_description(cls, description: dict, params=None) -> 'Teacher':
    as_config = lambda d: None if d is None else ml_collections.ConfigDict(d)
    return cls(network=as_config(description['network']), readout=paths.readout_from_json(description['readout']),
               data_shape=tuple(description['data_shape']), num_classes=int(description['num_classes']),
               params=params, data=as_config(description.get('data')),
               compute_dtype=description.get('compute_dtype', 'float32'), source=description.get('source', ''))
