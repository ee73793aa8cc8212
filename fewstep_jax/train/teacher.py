"""Loading a trained run (a teacher, or a student to initialise from) by its workdir.

Distillation methods name a teacher's workdir in their config; this turns it into the teacher's method object
(for its exact parameterisation: velocity, denoiser, sampler) and its parameters, placed on the current mesh,
whatever mesh the teacher was trained on.
"""
import json
import os

import jax
import ml_collections

from fewstep_jax import methods
from fewstep_jax.train.checkpoint import Checkpointer
from fewstep_jax.train import sharding as sharding_lib

RUN_INFO = 'run_info.json'  # What the data told the method at training time: data_shape, num_classes.


def write_run_info(workdir: str, data_shape, num_classes: int):
  with open(os.path.join(workdir, RUN_INFO), 'w') as f:
    json.dump({'data_shape': list(data_shape), 'num_classes': int(num_classes)}, f)


def load_trained(workdir: str, *, params_name: str | None = None, mesh=None):
  """Returns (method, params, step) of the run in `workdir`.

  params_name: 'params' or an EMA copy such as 'ema_0.999'; default: that run's config.eval.params.
  mesh: the mesh to replicate the parameters over; default: every device.
  """
  info_path, config_path = os.path.join(workdir, RUN_INFO), os.path.join(workdir, 'config.json')
  for path in (info_path, config_path):
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{path} not found: {workdir} is not a trained fewstep_jax run. Train the teacher first '
          f'(python -m fewstep_jax.main --config=... --workdir={workdir}) or fix the path in the config.')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(info_path) as f:
    info = json.load(f)
  method = methods.build_method(config, data_shape=tuple(info['data_shape']),
                                num_classes=info['num_classes'])
  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=config.train.max_to_keep)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints: the run was never saved; train it '
                            'first or point the config at a trained workdir.')
  abstract = jax.eval_shape(method.init, jax.random.PRNGKey(0))
  if mesh is None:
    mesh = jax.sharding.Mesh(jax.devices(), ('data',))
  replicated = jax.tree.map(lambda _: sharding_lib.replicated(mesh), abstract)
  state, _ = checkpointer.restore(step, abstract, replicated)
  checkpointer.close()
  if params_name is not None:
    config.eval.params = params_name
  return method, method.sampling_params(state), step
