"""The method registry: configs select a method by `config.method.name`; the trainer never branches on it."""
import ml_collections

METHODS = {}


def register(name: str):
  """Class decorator: registers a Method subclass under `name`."""
  def decorator(cls):
    if name in METHODS:
      raise ValueError(f'method {name!r} is registered twice')
    cls.name = name
    METHODS[name] = cls
    return cls
  return decorator


def _lookup(name: str):
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; registered methods: {sorted(METHODS)}')
  return METHODS[name]


def method_defaults(name: str) -> ml_collections.ConfigDict:
  """The method's config block: `name` plus every hyperparameter the method reads, with defaults."""
  config = ml_collections.ConfigDict({'name': name})
  config.update(_lookup(name).defaults())
  return config


def build_method(config, *, data_shape: tuple, num_classes: int):
  """Instantiates the configured method for data of per-example shape `data_shape`."""
  return _lookup(config.method.name)(config, data_shape=data_shape, num_classes=num_classes)
