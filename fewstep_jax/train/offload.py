"""Host offload: parts of the TrainState kept in host memory between steps (docs/scaling.md#host-offload).

`mesh.offload` names the parts ('ema', 'frozen', or both, comma-separated):
  ema     the trained networks' EMA copies. They never come to the device: each step sends the updated parameters to
          host memory and averages them there (`jax.experimental.compute_on('device_host')`). A loss that reads an
          EMA copy (a consistency target) gets that one copy moved in.
  frozen  teachers, stage-1 models, starts, LPIPS and pairs. Moved to the device at the start of each step and
          dropped after it; the step returns the host copy it was given, so nothing is written back.
Both go through JAX memory kinds: a leaf's sharding carries memory_kind='pinned_host'. The results are the same as
without offload (tests/test_offload.py); what it buys is device memory between steps, at the price of moving the
frozen networks (and one copy of the parameters) over the host link each step: `experiments/plan.py` prints both.
"""
import jax
from jax.experimental.compute_on import compute_on

from fewstep_jax.errors import ConfigError

PARTS = ('ema', 'frozen')
HOST = 'pinned_host'


def parts_named(value) -> tuple:
  """mesh.offload ('' | 'ema' | 'frozen' | 'ema,frozen', or a sequence of those names) as a tuple of parts."""
  names = [part.strip() for part in value.split(',')] if isinstance(value, str) else list(value or ())
  names = [name for name in names if name]
  unknown = [name for name in names if name not in PARTS]
  if unknown:
    raise ConfigError(f'unknown mesh.offload part {unknown[0]!r}; use a comma-separated list of {", ".join(PARTS)} '
                      "(or '' to keep everything on the device)")
  return tuple(dict.fromkeys(names))


def check_backend(parts: tuple, devices, setting: str = '') -> None:
  """A ConfigError unless every device has host memory to offload to. setting: the config line that asks for it
  and the value that does not (default: mesh.offload's)."""
  if not parts:
    return
  setting = setting or f"mesh.offload={','.join(parts)!r}"
  for device in devices:
    kinds = [memory.kind for memory in device.addressable_memories()]
    if HOST not in kinds:
      instead = "mesh.offload=''" if setting.startswith('mesh.offload') else "network.remat='dots'"
      raise ConfigError(f'{setting} needs {HOST!r} memory, which the {device.platform} device {device.id} does not '
                        f'have (it has {", ".join(kinds)}); set --config.{instead} on this backend')


def _offloaded(path, parts: tuple) -> bool:
  """Whether the TrainState leaf at `path` (jax.tree_util key path) is in an offloaded part."""
  names = [getattr(key, 'name', getattr(key, 'key', None)) for key in path]
  if 'frozen' in parts and names[:1] == ['frozen']:
    return True
  return 'ema' in parts and names[:1] == ['nets'] and len(names) > 2 and names[2] == 'ema'


def host_shardings(shardings, parts: tuple):
  """The state's shardings with the offloaded parts' leaves in host memory."""
  if not parts:
    return shardings
  return jax.tree_util.tree_map_with_path(
      lambda path, sharding: sharding.with_memory_kind(HOST) if _offloaded(path, parts) else sharding, shardings)


def device_shardings(shardings):
  """The same shardings with every leaf in device memory."""
  return jax.tree.map(lambda sharding: sharding.with_memory_kind('device'), shardings)


def in_host_memory(leaf) -> bool:
  """Whether a traced or concrete array lives in host memory."""
  return getattr(jax.typeof(leaf), 'memory_space', None) == jax.memory.Space.Host


def to_device(tree):
  """Inside a jitted step: the tree with every leaf in host memory moved to the device (the others as they are); the
  tree itself where none is in host memory."""
  if not any(in_host_memory(leaf) for leaf in jax.tree.leaves(tree)):
    return tree
  return jax.tree.map(lambda leaf: jax.device_put(leaf, jax.memory.Space.Device) if in_host_memory(leaf) else leaf,
                      tree)


def average_on_host(update, ema: dict, params, rates: dict):
  """update(ema, params, rates) (an EMA update) computed in host memory: `params` and `rates` are sent there, `ema`
  is already there, and the result stays there."""
  to_host = lambda tree: jax.device_put(tree, jax.memory.Space.Host)
  return compute_on('device_host')(jax.jit(update))(ema, to_host(params), to_host(rates))


def device_copy(tree):
  """Outside a step: `tree` with its host-memory leaves copied to device memory under the same placement (sampling
  from an offloaded EMA copy or teacher)."""
  def copy(leaf):
    sharding = getattr(leaf, 'sharding', None)
    if getattr(sharding, 'memory_kind', None) == HOST:
      return jax.device_put(leaf, sharding.with_memory_kind('device'))
    return leaf
  return jax.tree.map(copy, tree)
