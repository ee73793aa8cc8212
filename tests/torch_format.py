"""Writes PyTorch's file layouts without PyTorch, for the importer's tests: `torch.save`'s zip and legacy layouts of
a state dict, and an NVlabs-style network pickle (whole modules as persistent objects). Each refers to torch's
globals by name, through stand-in modules installed in sys.modules only while writing. experiments/parity/edm.py
checks the reader against files that PyTorch itself writes."""
import collections
import contextlib
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_STORAGE_NAMES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.float16): 'HalfStorage'}


def _global(module: str, name: str):
  """A stand-in object that pickles as the global `module.name`."""
  stand_in = type(name, (), {'__module__': module, '__qualname__': name}) if name[0].isupper() else None
  if stand_in is None:
    def stand_in(*args):
      return args
    stand_in.__module__, stand_in.__qualname__, stand_in.__name__ = module, name, name
  return stand_in


@contextlib.contextmanager
def _torch_names(*qualified):
  """Installs stand-in modules so that pickle can refer to each 'module.name' of `qualified`."""
  saved = {}
  objects = {}
  try:
    for entry in qualified:
      module, name = entry.rsplit('.', 1)
      for prefix in [module[:i] for i in range(len(module)) if module[i] == '.'] + [module]:
        if prefix not in saved:
          saved[prefix] = sys.modules.get(prefix)
          sys.modules[prefix] = types.ModuleType(prefix)
      objects[entry] = _global(module, name)
      setattr(sys.modules[module], name, objects[entry])
    yield objects
  finally:
    for prefix, module in saved.items():
      if module is None:
        sys.modules.pop(prefix, None)
      else:
        sys.modules[prefix] = module


class _Tensor:
  def __init__(self, array, rebuild, storage):
    self.array, self.rebuild, self.storage = array, rebuild, storage

  def __reduce__(self):
    array = self.array
    stride = tuple(s // array.itemsize for s in array.strides)
    return self.rebuild, (self.storage, 0, array.shape, stride, False, collections.OrderedDict())


class _StorageRef:
  """A storage, pickled by persistent id (zip and legacy layouts)."""

  def __init__(self, key, array):
    self.key, self.array = key, array


def _storage_names():
  return [f'torch.{name}' for name in _STORAGE_NAMES.values()]


class _Pickler(pickle._Pickler):
  def __init__(self, file, objects, legacy: bool):
    super().__init__(file, protocol=2)
    self.objects, self.legacy = objects, legacy

  def persistent_id(self, obj):
    if not isinstance(obj, _StorageRef):
      return None
    storage_type = self.objects[f'torch.{_STORAGE_NAMES[obj.array.dtype]}']
    if self.legacy:
      return ('storage', storage_type, obj.key, 'cpu', obj.array.size, None)
    return ('storage', storage_type, obj.key, 'cpu', obj.array.size)


def _tensors(state_dict, objects):
  rebuild = objects['torch._utils._rebuild_tensor_v2']
  # ravel(order='K') is the memory order, which the strides index, for contiguous arrays and their transposes.
  return {name: _Tensor(np.asarray(value), rebuild, _StorageRef(str(i), np.asarray(value).ravel(order='K')))
          for i, (name, value) in enumerate(state_dict.items())}


def save_zip(state_dict: dict, path: str):
  """`torch.save(state_dict, path)`'s zip layout."""
  with _torch_names('torch._utils._rebuild_tensor_v2', *_storage_names()) as objects:
    tensors = _tensors(state_dict, objects)
    stream = io.BytesIO()
    _Pickler(stream, objects, legacy=False).dump(collections.OrderedDict(tensors))
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', stream.getvalue())
    archive.writestr('archive/byteorder', 'little')
    archive.writestr('archive/version', '3\n')
    for tensor in tensors.values():
      archive.writestr(f'archive/data/{tensor.storage.key}', tensor.storage.array.tobytes())


def _legacy_bytes(obj, storages, objects) -> bytes:
  stream = io.BytesIO()
  for value in (LEGACY_MAGIC_NUMBER, 1001, {'protocol_version': 1001, 'little_endian': True}):
    pickle.dump(value, stream, protocol=2)
  _Pickler(stream, objects, legacy=True).dump(obj)
  keys = sorted(storage.key for storage in storages)
  pickle.dump(keys, stream, protocol=2)
  by_key = {storage.key: storage for storage in storages}
  for key in keys:
    stream.write(np.int64(by_key[key].array.size).tobytes())
    stream.write(by_key[key].array.tobytes())
  return stream.getvalue()


def save_legacy(state_dict: dict, path: str):
  """`torch.save(state_dict, path, _use_new_zipfile_serialization=False)`."""
  with _torch_names('torch._utils._rebuild_tensor_v2', *_storage_names()) as objects:
    tensors = _tensors(state_dict, objects)
    data = _legacy_bytes(collections.OrderedDict(tensors), [t.storage for t in tensors.values()], objects)
  with open(path, 'wb') as file:
    file.write(data)


class _PickledStorage:
  """A storage as plain pickle writes it: torch.storage._load_from_bytes(legacy torch.save bytes)."""

  def __init__(self, array, objects):
    self.array, self.objects = np.ascontiguousarray(array), objects

  def __reduce__(self):
    ref = _StorageRef('0', self.array)
    return self.objects['torch.storage._load_from_bytes'], (_legacy_bytes(ref, [ref], self.objects),)


class _PersistentModule:
  """An NVlabs persistent-class module: _reconstruct_persistent_obj(meta), meta holding source and state."""

  def __init__(self, class_name, state, objects):
    self.class_name, self.state, self.objects = class_name, state, objects

  def __reduce__(self):
    meta = dict(type='class', version=6, module_src='raise SystemExit("module source must never run")\n',
                class_name=self.class_name, state=self.state)
    return self.objects['torch_utils.persistence._reconstruct_persistent_obj'], (meta,)


def save_nvlabs_pickle(state_dict: dict, path: str, class_name: str, init_kwargs: dict, buffers=(),
                       precond: str = 'EDMPrecond', inner: str | None = 'model', init_args: tuple = ()):
  """A network pickle as EDM's training loop writes it: {'ema': EDMPrecond(model=<class_name>), ...}, with the
  state dict's entries as parameters (names in `buffers` as buffers) of nested modules, and the preconditioning's
  recorded constructor arguments `init_args` (positional) and `init_kwargs`. EDM2's: precond='Precond', inner=None
  (its state dict is already the preconditioning's: unet.*, logvar_*)."""
  names = ('torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', 'torch.storage._load_from_bytes',
           'torch_utils.persistence._reconstruct_persistent_obj', *_storage_names())
  with _torch_names(*names) as objects:
    def module(name, children, tensors, kwargs=None, args=()):
      parameters = collections.OrderedDict()
      own_buffers = collections.OrderedDict()
      for key, value in tensors.items():
        tensor = _Tensor(np.asarray(value), objects['torch._utils._rebuild_tensor_v2'],
                         _PickledStorage(np.asarray(value).ravel(), objects))
        if key in buffers:
          own_buffers[key] = tensor
        else:
          parameters[key] = _ParameterOf(tensor, objects)
      state = {'training': False, '_parameters': parameters, '_buffers': own_buffers,
               '_non_persistent_buffers_set': set(), '_modules': collections.OrderedDict(children),
               '_init_args': tuple(args), '_init_kwargs': kwargs or {}}
      return _PersistentModule(name, state, objects)

    def build(prefix_items, name):
      tensors, groups = {}, collections.OrderedDict()
      for key, value in prefix_items:
        head, _, rest = key.partition('.')
        if rest:
          groups.setdefault(head, []).append((rest, value))
        else:
          tensors[key] = value
      children = [(child, build(items, 'Block')) for child, items in groups.items()]
      return module(name, children, tensors)

    if inner is None:
      ema = build(list(state_dict.items()), precond)
      ema.state['_init_args'], ema.state['_init_kwargs'] = tuple(init_args), init_kwargs
    else:
      ema = module(precond, [(inner, build(list(state_dict.items()), class_name))], {}, init_kwargs, init_args)
    with open(path, 'wb') as file:
      pickle._Pickler(file, protocol=2).dump({'ema': ema, 'loss_fn': None, 'dataset_kwargs': {'path': 'data'}})


class _CallsOnLoad:
  """Pickles as a call of function(*args) when loaded, as a file that runs code does."""

  def __init__(self, function, args):
    self.function, self.args = function, args

  def __reduce__(self):
    return self.function, self.args


def save_code_running_pickle(path: str, marker: str):
  """A pickle that plain `pickle.load` (or torch.load without weights_only) would answer by running the shell
  command `touch marker` through os.system: the reader must refuse it before calling anything, which the marker's
  absence shows. Written only; nothing here loads it."""
  with open(path, 'wb') as file:
    pickle.dump({'ema': _CallsOnLoad(os.system, (f'touch {marker}',))}, file, protocol=2)


def cut_short(path: str):
  """Keeps the first half of the file `path`, as an interrupted download does."""
  with open(path, 'rb') as file:
    data = file.read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])


class _ParameterOf:
  def __init__(self, tensor, objects):
    self.tensor, self.objects = tensor, objects

  def __reduce__(self):
    return self.objects['torch._utils._rebuild_parameter'], (self.tensor, False, collections.OrderedDict())
