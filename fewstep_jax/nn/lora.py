"""LoRA (Hu et al. 2021): low-rank adapters, as a reparameterisation of a network's parameters.

A trained LoRA network holds only its factors. For each targeted weight W it keeps A (down, rank r) and B (up), and
the network runs on

    W' = W + (alpha / r) B A

with W the frozen base. The base is not trained, not in the optimizer and not copied: a student that starts from its
teacher merges over the teacher's own arrays (state.frozen['teacher']), so one copy is in memory. B starts at zero,
so W' = W at the start. A starts as PyTorch's default initialisation, which peft uses for lora_A (kaiming-uniform:
U(-1/sqrt(fan_in), 1/sqrt(fan_in))).

The merge happens once per network call, on the weights, not on the activations. A layer then costs what it costs
without LoRA, plus a rank-r product per weight per call. This is less than 1% of a U-Net forward pass at any batch
that trains. Gradients reach the factors through that product. The backward pass thus forms each targeted weight's
full gradient, as full fine-tuning does, before reducing it to the factors. What LoRA saves here is the optimizer
state and the EMA copies, which are the factors' size, not the network's; the step's FLOPs are those of full
fine-tuning (experiments/plan.py prints both).

Targets are module names as diffusers and peft name them: a weight is adapted when its module's dotted name (list
entries as `down_blocks.1`, `to_out.0`) equals a target or ends with '.' + target. Two weight layouts are handled:
  'weight' [out, in] or [out, in, kh, kw] (PyTorch's, which `sd_unet` keeps): A [r, in(, kh, kw)], B [out, r];
  'kernel' [in, out] or [kh, kw, in, out] (flax's): A [(kh, kw,) in, r], B [r, out].
A convolution's A has the kernel's size and B is 1 x 1, as peft adapts Conv2d.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fewstep_jax.errors import ConfigError
from fewstep_jax.nn import sd_unet

# The modules diffusers' LCM-LoRA script adapts in the SD U-Net
# (examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py: its LoraConfig's target_modules).
SD_UNET_TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2', 'conv1',
                   'conv2', 'conv_shortcut', 'downsamplers.0.conv', 'upsamplers.0.conv', 'time_emb_proj')
DEFAULT_TARGETS = {'sd_unet': SD_UNET_TARGETS}


@dataclasses.dataclass(frozen=True)
class LoRA:
  """rank r, alpha (scale alpha / r), targets (module names), base: the key of state.frozen the factors merge over."""
  rank: int
  alpha: float
  targets: tuple
  base: str

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def from_config(config, base: str) -> 'LoRA | None':
  """The LoRA of config.lora (None where lora.rank is 0), merging over state.frozen[base]."""
  lora = config.get('lora')
  if lora is None or not lora.rank:
    return None
  if lora.rank < 0:
    raise ConfigError(f'lora.rank={lora.rank} is negative; use a positive rank, or 0 for no adapters')
  targets = tuple(lora.targets) or DEFAULT_TARGETS.get(config.network.name)
  if not targets:
    raise ConfigError(f'network {config.network.name!r} has no default LoRA targets: set --config.lora.targets to the '
                      "module names to adapt (e.g. \"('qkv', 'proj')\")")
  return LoRA(rank=int(lora.rank), alpha=float(lora.alpha or lora.rank), targets=targets, base=base)


def module_name(path) -> str:
  """The dotted module name of a parameter path (its last entry, the leaf's name, dropped)."""
  return sd_unet.torch_name(path[:-1])


def _matches(name: str, targets) -> bool:
  return any(name == target or name.endswith('.' + target) for target in targets)


def targeted(base, targets) -> list:
  """The paths of `base`'s weights that `targets` adapt, in order; a ConfigError if a target adapts none."""
  flat = traverse_util.flatten_dict(base)
  paths = [path for path in flat if path[-1] in ('weight', 'kernel') and np.ndim(flat[path]) in (2, 4)
           and _matches(module_name(path), targets)]
  unused = [target for target in targets if not any(_matches(module_name(path), [target]) for path in paths)]
  if unused:
    raise ConfigError(f'lora.targets {unused} match no weight of this network; module names look like '
                      f'{module_name(next(iter(flat)))!r}')
  return paths


def factor_shapes(shape: tuple, leaf: str, rank: int) -> tuple:
  """(A's shape, B's shape) for a weight of `shape` stored as `leaf` ('weight' or 'kernel')."""
  if leaf == 'weight':
    return (rank,) + tuple(shape[1:]), (shape[0], rank)
  return tuple(shape[:-1]) + (rank,), (rank, shape[-1])


def init(lora: LoRA, base, key) -> dict:
  """Fresh factors over `base`: A kaiming-uniform, B zero. {path...: {'down': A, 'up': B}} nested like `base`."""
  flat = traverse_util.flatten_dict(base)
  factors = {}
  for index, path in enumerate(targeted(base, lora.targets)):
    down_shape, up_shape = factor_shapes(flat[path].shape, path[-1], lora.rank)
    fan_in = math.prod(down_shape[1:]) if path[-1] == 'weight' else math.prod(down_shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    factors[path] = {'down': jax.random.uniform(jax.random.fold_in(key, index), down_shape, jnp.float32, -bound,
                                                bound),
                     'up': jnp.zeros(up_shape, jnp.float32)}
  return traverse_util.unflatten_dict(factors)


def delta(down, up, leaf: str, scale: float):
  """scale * B A in the weight's layout."""
  if leaf == 'weight':  # [out, r] x [r, in(, kh, kw)].
    return scale * jnp.tensordot(up, down, axes=1)
  return scale * jnp.tensordot(down, up, axes=1)  # [(kh, kw,) in, r] x [r, out].


def merge(lora: LoRA, base, factors):
  """The network's parameters: `base` with scale * B A added to each adapted weight."""
  flat = traverse_util.flatten_dict(base)
  for path, pair in _factor_items(factors):
    flat[path] = flat[path] + delta(pair['down'], pair['up'], path[-1], lora.scale).astype(flat[path].dtype)
  return traverse_util.unflatten_dict(flat)


def _factor_items(factors):
  """[(weight path, {'down', 'up'})] of a factors pytree."""
  flat = traverse_util.flatten_dict(factors)
  return [(path[:-1], {'down': flat[path[:-1] + ('down',)], 'up': flat[path]})
          for path in flat if path[-1] == 'up']


def to_diffusers(lora: LoRA, factors, prefix: str = 'unet') -> dict:
  """The factors as diffusers' peft-format LoRA state dict (`pipe.load_lora_weights` reads it): per module
  '<prefix>.<module>.lora_A.weight' and '.lora_B.weight', with the scale folded into B so that the default scale
  (alpha = rank) gives W + (alpha / r) B A. Only PyTorch-layout ('weight') networks have this layout."""
  out = {}
  for path, pair in _factor_items(factors):
    if path[-1] != 'weight':
      raise ConfigError('only networks with PyTorch-layout weights (sd_unet) write the diffusers LoRA layout')
    up = np.asarray(pair['up'], np.float32) * lora.scale
    down = np.asarray(pair['down'], np.float32)
    if down.ndim == 4:
      up = up[:, :, None, None]
    name = f'{prefix}.{module_name(path)}'
    out[f'{name}.lora_A.weight'], out[f'{name}.lora_B.weight'] = down, up
  return out
