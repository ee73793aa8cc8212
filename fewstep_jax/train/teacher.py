"""Loading a trained run (a teacher, or a student to initialise from) by its workdir.

Distillation methods name a teacher's workdir in their config; this turns it into the teacher's method object
(for its exact parameterisation: velocity, denoiser, sampler) and its parameters, placed on the current mesh,
whatever mesh the teacher was trained on.
"""
import os

import jax
import ml_collections
import numpy as np

from fewstep_jax import methods
from fewstep_jax.train import files
from fewstep_jax.train.checkpoint import Checkpointer, committed_steps
from fewstep_jax.train import sharding as sharding_lib

RUN_INFO = 'run_info.json'  # What the data told the method at training time: data_shape, num_classes.


def write_run_info(workdir: str, data_shape, num_classes: int):
  files.write_json(os.path.join(workdir, RUN_INFO),
                   {'data_shape': list(data_shape), 'num_classes': int(num_classes)}, indent=None)


def load_trained(workdir: str, *, params_name: str | None = None, mesh=None, fsdp_min_size: int = 2 ** 14):
  """Returns (method, params, step) of the run in `workdir`.

  params_name: 'params' or an EMA copy such as 'ema_0.999'; default: that run's config.eval.params.
  mesh: a ('data', 'fsdp') mesh to place the parameters on, sharded by the usual partition rules; default:
  every device on the fsdp axis.
  """
  info_path, config_path = os.path.join(workdir, RUN_INFO), os.path.join(workdir, 'config.json')
  for path in (info_path, config_path):
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{path} not found: {workdir} is not a trained fewstep_jax run. Train the teacher first '
          f'(python -m fewstep_jax.main --config=... --workdir={workdir}) or fix the path in the config.')
  config = ml_collections.ConfigDict(files.read_json(config_path))
  info = files.read_json(info_path)
  method = methods.build_method(config, data_shape=tuple(info['data_shape']),
                                num_classes=info['num_classes'])
  directory = os.path.join(workdir, 'checkpoints')
  if not committed_steps(directory):
    raise FileNotFoundError(f'no checkpoint in {directory}: the run was never saved; train it first or '
                            'point the config at a trained workdir.')
  if mesh is None:
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(1, -1), sharding_lib.BATCH_AXES)
  abstract = jax.eval_shape(method.init, jax.random.PRNGKey(0), method.frozen_params())
  checkpointer = Checkpointer(directory, max_to_keep=config.train.max_to_keep, read_only=True)
  step, (state, _, _) = checkpointer.restore_newest(
      abstract, sharding_lib.state_shardings(abstract, mesh, fsdp_min_size),
      log=lambda message: print(f'{workdir}: {message}', flush=True))
  checkpointer.close()
  return method, method.sampling_params(state, params_name), step
