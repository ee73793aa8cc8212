"""PyTorch files read with numpy alone, and without running code from them.

Three layouts hold PyTorch tensors:

  zip        `torch.save`'s default (.pt / .pth): `<archive>/data.pkl` plus one file per storage, `<archive>/data/<key>`.
  legacy     `torch.save(..., _use_new_zipfile_serialization=False)`: four pickles in a row (magic number, version,
             system info, the object), the sorted storage keys, then each storage as int64 element count + bytes.
             A tensor that is pickled with plain `pickle` (as NVlabs' network pickles are) carries its storage as
             legacy bytes, through `torch.storage._load_from_bytes`.
  pickle     a plain pickle of whole torch modules (NVlabs' `.pkl` network snapshots, whose classes come from
             `torch_utils.persistence` with their source code embedded).

All three are read by one restricted unpickler (`SafeUnpickler`): it rebuilds tensors (as numpy arrays), storages and
known containers, turns torch modules into `ModuleStub`s (their attribute dict, nothing run) and refuses every other
global with an `UnsafePickleError` (an `errors.RefusedWeightsError`) that names it, before calling anything: a pickle
runs code by naming a function for the reader to call, so a file that names one off the list is refused, not
repaired. The source code that NVlabs pickles embed is kept as a string and never executed. A file cut short, corrupt
or of another format is an `errors.UnreadableWeightsError` instead. `state_dict(module)` then flattens a module into
`{dotted name: array}`, as `torch.nn.Module.state_dict` would.
"""
import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import ml_dtypes
import numpy as np

from fewstep_jax import errors

# torch's storage classes -> the numpy dtype of their elements.
STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
    'UntypedStorage': np.uint8,
}
# torch dtypes as pickled (torch.float32 ...) -> their numpy names.
TORCH_DTYPES = {'float32': 'float32', 'float': 'float32', 'float64': 'float64', 'double': 'float64',
                'float16': 'float16', 'half': 'float16', 'bfloat16': 'bfloat16', 'int64': 'int64', 'long': 'int64',
                'int32': 'int32', 'int': 'int32', 'int16': 'int16', 'int8': 'int8', 'uint8': 'uint8', 'bool': 'bool'}

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c


# What to do with a refused file, by the module of the code it names (the first prefix that matches; '' matches all).
REFUSAL_ADVICE = (
    (('training.', 'torch_utils.', 'dnnlib.'),
     "It names NVlabs' code: NVlabs network pickles are read when their classes are persistent (torch_utils."
     "persistence, as in EDM's and EDM2's published pickles, whose embedded source is kept as text and never run), "
     'and this one is not. Only if you trust it, load it on a machine with PyTorch and NVlabs\' code and save the '
     "network's state_dict() with safetensors.torch.save_file; pass that file (to tools.import_checkpoint with "
     '--arch).'),
    (('',),
     'Take the weights as a state dict from a source you trust (.safetensors, .npz, or a torch.save of a '
     'state_dict); only if you trust this file, load it on a machine with PyTorch and save its state_dict() with '
     'safetensors.torch.save_file.'),
)


class UnsafePickleError(errors.RefusedWeightsError):
  """The file names a callable that is not a tensor, storage or known container (`what`); nothing was called."""

  def __init__(self, source: str, what: str, module: str = ''):
    advice = next(text for prefixes, text in REFUSAL_ADVICE if module.startswith(prefixes))
    super().__init__(f'refused {source}: loading it would call {what} (not a tensor, storage or known container), '
                     f'and a pickle can run any code that way; nothing in it was run. {advice}')
    self.source, self.what = source, what


def _unreadable(source: str, reason: str) -> errors.UnreadableWeightsError:
  return errors.UnreadableWeightsError(f'{source} {reason}')


def cannot_read(source: str, kind: str, error: Exception) -> errors.UnreadableWeightsError:
  """The error for a file that its format's reader fails on: `kind` names the format."""
  return _unreadable(source, f'cannot be read as {kind} ({error}): it is damaged (a partial download?) or of '
                     'another kind')


class ModuleStub:
  """A torch module (or other known torch object) from a pickle, never constructed: `qualified_name` is its class
  (for a persistent NVlabs class, the class name its embedded source defines) and `state` its attribute dict."""
  qualified_name = 'object'

  def __init__(self, qualified_name: str | None = None, state=None):
    if qualified_name is not None:
      self.qualified_name = qualified_name
    self.state = {} if state is None else state

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f'ModuleStub({self.qualified_name})'


class _EasyDict(dict):
  """dnnlib's EasyDict, a dict with attribute access, read as the plain dict it is."""


def _stub_class(qualified_name: str) -> type:
  return type(qualified_name.rsplit('.', 1)[-1], (ModuleStub,), {'qualified_name': qualified_name})


class _Storage:
  """A storage's elements as a flat numpy array, filled in once its bytes are read."""

  def __init__(self, dtype, numel: int):
    self.dtype, self.numel, self.array = np.dtype(dtype), int(numel), None


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """torch._utils._rebuild_tensor(_v2): a strided view of the storage, copied into its own array."""
  del unused  # requires_grad, backward hooks, metadata: training state, not values.
  if isinstance(storage, _Storage) and storage.array is None:
    # A legacy stream: the storages' bytes follow the pickle; load_legacy rebuilds the tensor once they are read.
    return _DeferredTensor((storage, storage_offset, size, stride))
  data = storage.array if isinstance(storage, _Storage) else storage
  size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
  if not size:
    return np.array(data[storage_offset])
  needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if min(size) > 0 and needed > data.size:
    raise _Damaged(f'a tensor of size {size} and stride {stride} at offset {storage_offset} reaches past the end '
                   f'of its storage ({data.size} elements)')
  item = data.itemsize
  view = np.lib.stride_tricks.as_strided(data[storage_offset:], shape=size, strides=tuple(s * item for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Refused(Exception):
  """Raised by the allowed functions on arguments that would build more than data; SafeUnpickler names the file."""


class _Damaged(Exception):
  """Raised by the allowed functions on arguments that contradict each other; SafeUnpickler names the file."""


def _reconstructor(cls, base, state):
  """copyreg._reconstructor for the classes this unpickler allows: only stubs and dicts are created."""
  del base, state
  if isinstance(cls, type) and issubclass(cls, (ModuleStub, dict)):
    return cls.__new__(cls)
  raise _Refused(f'copyreg._reconstructor on {cls!r}')


def _numpy_dtype(name, *unused):
  del unused
  dtype = np.dtype(name)
  if dtype.hasobject:
    raise _Refused(f'a numpy array of Python objects ({name!r})')
  return dtype


def _numpy_scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
    raise _Refused('a numpy scalar of Python objects')
  return np.frombuffer(data, dtype)[0]


def _numpy_reconstruct(cls, shape, dtype_code):
  if cls is not np.ndarray:
    raise _Refused(f'numpy reconstruction of {cls!r}')
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _latin1_bytes(text, encoding='latin1'):
  """_codecs.encode as protocol 2 pickles bytes: only the latin-1 encoding of a string."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise _Refused(f'_codecs.encode({type(text).__name__}, {encoding!r})')
  return text.encode('latin1')


def _persistent_object(meta):
  """torch_utils.persistence._reconstruct_persistent_obj: the object's state, its embedded source left unrun."""
  if not isinstance(meta, dict) or 'class_name' not in meta:
    raise _Damaged('a persistent NVlabs object has no class name')
  return ModuleStub(f'persistent.{meta["class_name"]}', meta.get('state') or {})


class SafeUnpickler(pickle.Unpickler):
  """Rebuilds only tensors, storages and known containers; any other global is an UnsafePickleError naming it.

  `storage_bytes(key, dtype, numel)` returns the bytes of a storage that the pickle refers to by persistent id (zip
  and legacy layouts); legacy layouts fill them in after the pickle, through `storages`.
  """

  def __init__(self, file, source: str, storage_bytes=None):
    super().__init__(file)
    self.source = source
    self.storage_bytes = storage_bytes
    self.storages = {}

  _ALLOWED = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset, ('builtins', 'dict'): dict,
      ('builtins', 'list'): list, ('builtins', 'tuple'): tuple, ('builtins', 'object'): object,
      ('copyreg', '_reconstructor'): _reconstructor,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
      ('torch', 'Size'): tuple,
      ('torch', 'device'): str,
      ('torch_utils.persistence', '_reconstruct_persistent_obj'): _persistent_object,
      ('dnnlib.util', 'EasyDict'): _EasyDict,
      ('_codecs', 'encode'): _latin1_bytes,
      ('numpy', 'dtype'): _numpy_dtype, ('numpy', 'ndarray'): np.ndarray,
      **{(module, name): function for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
         for name, function in (('scalar', _numpy_scalar), ('_reconstruct', _numpy_reconstruct))},
  }

  def find_class(self, module, name):
    module = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}.get(module, module)  # Protocol 2's Python 2 names.
    key = (module, name)
    if key in self._ALLOWED:
      return self._ALLOWED[key]
    if key == ('torch.storage', '_load_from_bytes'):
      return lambda data: load_legacy(io.BytesIO(data), f'{self.source} (a tensor\'s storage)')
    if module == 'torch' and name in STORAGE_DTYPES:
      return STORAGE_DTYPES[name]
    if module == 'torch' and name in TORCH_DTYPES:
      return TORCH_DTYPES[name]
    if key == ('argparse', 'Namespace'):  # A training checkpoint's command-line arguments: attributes only.
      return _stub_class('argparse.Namespace')
    if module.startswith('torch.nn.modules.') and name[:1].isupper():
      return _stub_class(f'{module}.{name}')  # A torch layer or container: its attributes, nothing constructed.
    raise UnsafePickleError(self.source, f'{module}.{name}', module)

  def load(self):
    try:
      return super().load()
    except _Refused as refused:
      raise UnsafePickleError(self.source, str(refused)) from None
    except _Damaged as damaged:
      raise _unreadable(self.source, f'is damaged: {damaged}') from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
      raise _unreadable(self.source, f'refers to an unknown persistent id {pid!r:.80}: it is not a PyTorch file')
    if len(pid) == 5:  # zip: ('storage', type, key, location, numel)
      _, dtype, key, _, numel = pid
      view = None
    else:  # legacy: ('storage', type, key, location, numel, view_metadata)
      _, dtype, key, _, numel, view = pid
    if not isinstance(dtype, type) or dtype not in {np.dtype(d).type for d in STORAGE_DTYPES.values()}:
      raise _unreadable(self.source, f'holds a storage of unknown type {dtype!r}: it is not a PyTorch file')
    if key not in self.storages:
      storage = _Storage(dtype, numel)
      if self.storage_bytes is not None:
        storage.array = np.frombuffer(self.storage_bytes(key, storage.dtype, storage.numel), storage.dtype)
      self.storages[key] = storage
    if view is not None:  # An old torch's view (key, offset, size) into a storage.
      _, offset, size = view
      base = self.storages[key]
      sliced = _Storage(base.dtype, size)
      sliced.base, sliced.offset = base, offset
      return sliced
    return self.storages[key]


def load_legacy(file, source: str):
  """The object in a legacy `torch.save` stream (see the module docstring)."""
  plain = lambda: SafeUnpickler(file, source).load()
  if plain() != LEGACY_MAGIC_NUMBER:
    raise _unreadable(source, 'is not a PyTorch file (wrong magic number)')
  plain()  # Protocol version.
  system = plain()
  if isinstance(system, dict) and not system.get('little_endian', True):
    raise _unreadable(source, 'was written on a big-endian machine; convert it on one')
  unpickler = SafeUnpickler(file, source)
  result = unpickler.load()
  keys = plain()
  for key in keys:
    storage = unpickler.storages[key]
    numel = int(np.frombuffer(file.read(8), '<i8')[0])
    data = file.read(numel * storage.dtype.itemsize)
    if numel != storage.numel or len(data) != numel * storage.dtype.itemsize:
      raise _unreadable(source, f'is damaged: storage {key} is cut short (a partial download?)')
    storage.array = np.frombuffer(data, storage.dtype)
  for storage in unpickler.storages.values():
    if getattr(storage, 'base', None) is not None:
      storage.array = storage.base.array[storage.offset:storage.offset + storage.numel]
  return _resolve_deferred(result)


def _resolve_deferred(value, seen=None):
  """Legacy streams pickle tensors before their storages' bytes: rebuild them now that the bytes are in."""
  seen = set() if seen is None else seen
  if isinstance(value, _DeferredTensor):
    return _rebuild_tensor(*value.args)
  if id(value) in seen:
    return value
  seen.add(id(value))
  if isinstance(value, dict):
    for key, item in value.items():
      value[key] = _resolve_deferred(item, seen)
  elif isinstance(value, list):
    value[:] = [_resolve_deferred(item, seen) for item in value]
  elif isinstance(value, tuple):
    return tuple(_resolve_deferred(item, seen) for item in value)
  elif isinstance(value, ModuleStub):
    value.state = _resolve_deferred(value.state, seen)
  return value


class _DeferredTensor:
  def __init__(self, args):
    self.args = args


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    pickles = [name for name in archive.namelist() if name.endswith('/data.pkl') or name == 'data.pkl']
    if len(pickles) != 1:
      raise _unreadable(path, 'is a zip file but not a PyTorch one (no single data.pkl)')
    prefix = pickles[0][:-len('data.pkl')]
    byteorder = f'{prefix}byteorder'
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b'little':
      raise _unreadable(path, 'was written on a big-endian machine; convert it on one')

    def storage_bytes(key, dtype, numel):
      name = f'{prefix}data/{key}'
      if name not in archive.namelist():
        raise _unreadable(path, f'is damaged: storage {name} is missing')
      data = archive.read(name)
      if len(data) < numel * dtype.itemsize:
        raise _unreadable(path, f'is damaged: storage {name} is cut short')
      return data[:numel * dtype.itemsize]

    with archive.open(pickles[0]) as stream:
      return SafeUnpickler(io.BytesIO(stream.read()), path, storage_bytes).load()


# How a file that is cut short, corrupt or not a pickle fails in the unpickler, zipfile or numpy.
_READ_FAILURES = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                  ArithmeticError, struct.error, zipfile.BadZipFile, zlib.error)
ZIP_MAGIC = b'PK\x03\x04'


def load(path: str):
  """The object in the PyTorch file `path` (zip or legacy torch.save, or a plain pickle of torch modules), with
  tensors as numpy arrays and modules as ModuleStubs; nothing in the file is run.

  Raises UnsafePickleError (errors.RefusedWeightsError) for a file that names code to run, and
  errors.UnreadableWeightsError for one that is cut short, corrupt or not a PyTorch file.
  """
  try:
    return _load(path)
  except (errors.RefusedWeightsError, errors.UnreadableWeightsError):
    raise
  except _Damaged as damaged:  # Found after the pickle: a legacy stream's tensors are built once its storages are in.
    raise _unreadable(path, f'is damaged: {damaged}') from None
  except _READ_FAILURES as error:
    raise cannot_read(path, 'a PyTorch file or network pickle', error) from None


def _load(path: str):
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  with open(path, 'rb') as file:
    head = file.read(16)
    file.seek(0)
    if head.startswith(ZIP_MAGIC):  # A zip archive without its directory, which is written last.
      raise _unreadable(path, 'is a zip archive (torch.save\'s layout) that is cut short or damaged: download it again')
    if _starts_with_legacy_magic(head):
      return load_legacy(file, path)
    return SafeUnpickler(file, path).load()


def _starts_with_legacy_magic(head: bytes) -> bool:
  try:
    return pickle.loads(head[:head.index(b'.') + 1] if b'.' in head else head) == LEGACY_MAGIC_NUMBER
  except Exception:  # Not a pickle of the magic number: some other file.
    return False


def state_dict(module, prefix: str = '') -> dict:
  """{dotted name: array} of a ModuleStub's parameters and persistent buffers, recursively, as torch's
  `Module.state_dict()` names them."""
  if not isinstance(module, ModuleStub):
    raise TypeError(f'expected a torch module from a pickle, got {type(module).__name__}')
  state = module.state
  result = {}
  skip = set(state.get('_non_persistent_buffers_set') or ())
  for group in ('_parameters', '_buffers'):
    for name, value in (state.get(group) or {}).items():
      if value is not None and name not in skip:
        result[prefix + name] = np.asarray(value)
  for name, child in (state.get('_modules') or {}).items():
    if child is not None:
      result.update(state_dict(child, f'{prefix}{name}.'))
  return result


def constructor_arguments(module, parameters: tuple = ()) -> dict:
  """{name: value} of the constructor arguments an NVlabs persistent class recorded: its keyword arguments
  (`_init_kwargs`) and its positional ones (`_init_args`), named by `parameters`, the constructor's parameter names
  in their order (after self), as Python binds them."""
  state = module.state if isinstance(module, ModuleStub) else {}
  kwargs, args = state.get('_init_kwargs'), state.get('_init_args') or ()
  if kwargs is None:
    raise ValueError(f'{module!r} records no constructor arguments (not an NVlabs persistent class)')
  if len(args) > len(parameters):
    raise ValueError(f'{module!r} was constructed with {len(args)} positional arguments, but its constructor takes '
                     f'{len(parameters)} ({", ".join(parameters) or "none"})')
  positional = dict(zip(parameters, args))
  both = sorted(set(positional) & set(kwargs))
  if both:
    raise ValueError(f'{module!r} records {both} both by position and by keyword: the file is damaged')
  return _plain({**positional, **kwargs})


def _plain(value):
  if isinstance(value, dict):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(item) for item in value]
  return value


def file_kind(path: str) -> str:
  """'zip', 'legacy' or 'pickle': how the PyTorch file `path` is laid out."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if zipfile.is_zipfile(path):
    return 'zip'
  with open(path, 'rb') as file:
    return 'legacy' if _starts_with_legacy_magic(file.read(16)) else 'pickle'
