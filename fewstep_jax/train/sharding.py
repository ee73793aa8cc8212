"""Device mesh and partition rules (docs/scaling.md).

Mesh axes ('data', 'fsdp'). The batch is split over both axes. A parameter with at least
`mesh.fsdp_min_size` elements is sharded over 'fsdp' on its largest dimension that the fsdp size divides;
everything else is replicated. Optimizer state and EMA copies follow the same rule, since they have the
parameters' shapes, so one rule applied to the whole TrainState covers them.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fewstep_jax.errors import ConfigError
from fewstep_jax.mesh_axes import BATCH_AXES


def make_mesh(mesh_config) -> Mesh:
  """The ('data', 'fsdp') mesh over every device, laid out along the physical topology (TPU pods)."""
  wanted, available = mesh_config.data * mesh_config.fsdp, jax.device_count()
  if wanted != available:
    raise ConfigError(
        f'mesh.data * mesh.fsdp = {mesh_config.data} * {mesh_config.fsdp} = {wanted}, but there are '
        f'{available} devices ({jax.process_count()} process(es)). Set --config.mesh.data and '
        f'--config.mesh.fsdp so that their product is {available}.')
  # Auto axes: XLA propagates shardings from the ones we set (no sharding-in-types annotations needed).
  return jax.make_mesh((mesh_config.data, mesh_config.fsdp), BATCH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def param_spec(shape, fsdp_size: int, min_size: int) -> P:
  """PartitionSpec for one array: its largest fsdp-divisible dimension on 'fsdp', if big enough."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, min_size: int):
  """NamedShardings for every leaf of a (possibly abstract) state pytree."""
  fsdp_size = mesh.shape['fsdp']
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, param_spec(leaf.shape, fsdp_size, min_size)), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def device_multiple(batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh's device count that is at least batch_size (and 1): a batch that splits
  evenly over the devices, padded where it must be."""
  return -(-max(1, batch_size) // mesh.size) * mesh.size


def check_batch_size(global_batch_size: int, micro_batches: int, mesh: Mesh):
  devices = mesh.size
  if global_batch_size % micro_batches:
    raise ConfigError(f'train.batch_size={global_batch_size} is not divisible by '
                      f'train.micro_batches={micro_batches}.')
  if (global_batch_size // micro_batches) % devices:
    raise ConfigError(
        f'each micro-batch ({global_batch_size // micro_batches} examples) must split evenly over the '
        f'{devices} devices of the mesh: choose train.batch_size as a multiple of '
        f'{devices * micro_batches}.')


def global_batch_from_process_batch(process_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's host batch (numpy, [B / num_processes, ...]; any pytree of them, e.g. a text condition
  {'tokens', 'pooled'} as 'y') into global jax arrays split along the batch."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda value: jax.make_array_from_process_local_data(sharding, np.asarray(value)),
                      process_batch)
