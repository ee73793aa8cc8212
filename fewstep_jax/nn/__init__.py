"""Networks and how the rest of the code builds and calls them.

Every network has the call signature

  out = module.apply({'params': params}, x, t, r=None, y=None, train=False)

with x: [B, D] or [B, H, W, C], t and r: [B] float, y: [B] int32 or None (the
null label), and out shaped like x (float32), or (out, logvar [B]) when
`logvar_head=True`. Losses never see modules: they get the callable from
`make_apply`. Attention implementations are chosen by name through
`fewstep_jax.nn.attention`.
"""

import dataclasses
from typing import Any, Callable

from flax import linen
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax.errors import ConfigError
from fewstep_jax.nn.cm_unet import CMUNet
from fewstep_jax.nn.dit import DiT
from fewstep_jax.nn.edm2_unet import EDM2UNet
from fewstep_jax.nn.edm_unets import DhariwalUNet, SongUNet
from fewstep_jax.nn.mlp import MLP
from fewstep_jax.nn.remat import check_remat
from fewstep_jax.nn.sd_unet import SDUNetNetwork
from fewstep_jax.nn.sit import SiT
from fewstep_jax.nn.unet import UNet

# 'edm_songunet' and 'edm_dhariwalunet' are EDM's published architectures with its checkpoints' parameter layout
# (DDPM++ / NCSN++ and ADM), 'edm2_unet' EDM2's; they take one time input, EDM's c_noise, and are read through the
# 'edm' readout; 'sit' is SiT's (DiT's) transformer with its checkpoints' layout, read through the 'sit' readout;
# 'cm_unet' is the consistency-models code's U-Net (guided-diffusion's), its EDM teacher's, through the 'edm' readout;
# 'sd_unet' is diffusers' UNet2DConditionModel (a preset: sd15, sd21_v, sdxl_base), whose y is a text condition.
NETWORKS: dict[str, type] = {'mlp': MLP, 'dit': DiT, 'unet': UNet, 'edm_songunet': SongUNet,
                             'edm_dhariwalunet': DhariwalUNet, 'edm2_unet': EDM2UNet, 'sit': SiT, 'cm_unet': CMUNet,
                             'sd_unet': SDUNetNetwork}

# Compute dtypes by config name (train.compute_dtype, train.param_dtype).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def dtype_named(name: str):
  if name not in DTYPES:
    raise ConfigError(f'unknown dtype {name!r}; use one of {sorted(DTYPES)}')
  return DTYPES[name]

# Module fields that are not network hyper-parameters: flax bookkeeping, the
# label count (a property of the dataset) and dtypes (chosen by the trainer).
_NOT_TUNABLE = frozenset({'parent', 'name', 'num_classes', 'dtype',
                          'param_dtype'})

ApplyFn = Callable[..., Any]


def _network_class(name: str) -> type:
  if name not in NETWORKS:
    raise ConfigError(f'unknown network {name!r}; known: {sorted(NETWORKS)}')
  return NETWORKS[name]


def _tunable_defaults(network_class: type) -> dict[str, Any]:
  return {field.name: field.default
          for field in dataclasses.fields(network_class)
          if field.name not in _NOT_TUNABLE}


def network_defaults(name: str) -> ml_collections.ConfigDict:
  """The config of network `name` with every tunable field at its default.

  The returned ConfigDict is locked: fields can be overridden, but a
  misspelled one is an error.
  """
  config = ml_collections.ConfigDict(
      {'name': name, **_tunable_defaults(_network_class(name))})
  config.lock()
  return config


def build_network(
    net_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    dtype: Any = jnp.float32,
) -> linen.Module:
  """Instantiates the network that `net_config` describes.

  Args:
    net_config: `name` plus any subset of that network's tunable fields.
    num_classes: number of labels from the dataset (0: unconditional).
    dtype: compute dtype of activations; parameters stay float32.

  Returns:
    The flax module.

  Raises:
    ValueError: unknown network name, unknown field, or num_classes in
      net_config.
  """
  fields = net_config.to_dict()
  if 'name' not in fields:
    raise ConfigError(
        f"network config has no 'name'; known networks: {sorted(NETWORKS)}")
  name = fields.pop('name')
  network_class = _network_class(name)
  if 'num_classes' in fields:
    raise ConfigError(
        f"network config sets num_classes={fields['num_classes']}, but the "
        f'label count comes from the dataset; remove it from the config')
  accepted = _tunable_defaults(network_class)
  check_remat(fields.get('remat', 'none'))
  for field in fields:
    if field not in accepted:
      raise ConfigError(f'network {name!r} has no field {field!r}; accepted: '
                        f'{sorted(accepted)}')
  # Lists (e.g. from a JSON round trip) become tuples: module fields must be
  # hashable for flax.
  fields = {key: tuple(value) if isinstance(value, list) else value
            for key, value in fields.items()}
  return network_class(num_classes=num_classes, dtype=dtype, **fields)


def make_apply(module: linen.Module) -> ApplyFn:
  """Wraps `module` as `apply(params, x, t, r=None, y=None, key=None)`.

  Passing a key switches on training mode (dropout) with that key as the
  'dropout' rng; without one the network is deterministic.
  """

  def apply(params, x, t, r=None, y=None, key=None):
    rngs = {} if key is None else {'dropout': key}
    return module.apply({'params': params}, x, t, r, y,
                        train=key is not None, rngs=rngs)

  return apply


def draws_in_training(module: linen.Module) -> bool:
  """Whether training mode (a dropout key) makes `module`'s output random: dropout, or label dropout inside the
  network (EDM's label_dropout, SiT's class_dropout_prob with train_label_dropout). Without it a training-mode
  call equals the deterministic one, so a method may reuse one for the other."""
  if getattr(module, 'dropout', 0.0) or getattr(module, 'label_dropout', 0.0):
    return True
  return bool(getattr(module, 'train_label_dropout', False) and getattr(module, 'class_dropout_prob', 0.0))


def parameter_free_fields(name: str) -> tuple:
  """The fields of network `name` that change none of its parameters (besides dropout and attention, which change
  none in any network): runs on configs that differ only there share parameters."""
  return tuple(getattr(_network_class(name), 'parameter_free_fields', ()))


def param_projection(module: linen.Module) -> Callable | None:
  """params -> params: the constraint training keeps on this network's parameters (a network's `project_params`,
  e.g. EDM2's forced weight normalisation), applied after every optimizer update; None for networks without one."""
  return getattr(module, 'project_params', None)


def make_features(module: linen.Module) -> Callable:
  """Wraps `module` as `features(params, x, t, y=None) -> [B, ...]`: the bottleneck activations every network
  sows under 'bottleneck' (U-Net: after the middle blocks; MLP and DiT: the last hidden state), deterministic.
  Under jit the layers after the bottleneck are dead code, so a features pass costs only the layers before it."""

  def features(params, x, t, y=None):
    _, variables = module.apply({'params': params}, x, t, None, y, train=False,
                                mutable=['intermediates'])
    return variables['intermediates']['bottleneck'][0]

  return features


class GanHead(linen.Module):
  """A small discriminator on bottleneck features [B, ...] -> logits [B]: for feature maps [B, H, W, C] a 3x3
  convolution, SiLU and a global average; then a two-layer MLP to one logit."""
  hidden: int = 128

  @linen.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    h = features.astype(jnp.float32)
    if h.ndim == 4:
      h = linen.silu(linen.Conv(self.hidden, (3, 3))(h)).mean(axis=(1, 2))
    elif h.ndim == 3:  # Tokens [B, N, C].
      h = linen.silu(linen.Dense(self.hidden)(h)).mean(axis=1)
    h = linen.silu(linen.Dense(self.hidden)(h.reshape(h.shape[0], -1)))
    return linen.Dense(1)(h)[:, 0]


def init_params(
    module: linen.Module,
    key: jax.Array,
    example_x: jax.Array,
    *,
    two_times: bool | None = None,
) -> Any:
  """Initialises `module` on a batch shaped like `example_x`.

  Args:
    module: a network from `build_network`.
    key: PRNG key for the initialisers.
    example_x: [B, ...] array (or ShapeDtypeStruct) with the data shape.
    two_times: whether to pass r; defaults to `module.two_times`.

  Returns:
    The 'params' collection.
  """
  if two_times is None:
    two_times = module.two_times
  batch = example_x.shape[0]
  x = jnp.zeros(example_x.shape, jnp.float32)
  t = jnp.zeros((batch,), jnp.float32)
  r = t if two_times else None
  y = jnp.zeros((batch,), jnp.int32) if module.num_classes > 0 else None
  init = jax.jit(lambda key: module.init(key, x, t, r, y, train=False))
  return init(key)['params']


__all__ = [
    'CMUNet', 'DhariwalUNet', 'DiT', 'EDM2UNet', 'MLP', 'NETWORKS', 'SiT', 'SongUNet', 'UNet', 'build_network', 'init_params',
    'make_apply', 'network_defaults', 'param_projection', 'parameter_free_fields',
]
