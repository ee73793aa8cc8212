"""Published weights, read without running code from them: `read_state_dict` turns a PyTorch file (zip or legacy
`torch.save`, or an NVlabs network pickle), a `.safetensors` or an `.npz` into {name: numpy array}, with numpy alone
(`torch_files` rebuilds tensors through a restricted unpickler). `fewstep_jax.tools.import_checkpoint` builds on it.

A file that names code to run when loaded is an `errors.RefusedWeightsError`, one that is cut short, corrupt or of
another format an `errors.UnreadableWeightsError`, a missing one a FileNotFoundError: each with a one-line message
that the commands print as `error: ...`.
"""
import os
import zipfile

import numpy as np

from fewstep_jax.weight_files import torch_files


def read_torch_file(path: str):
  """The object in the PyTorch file or NVlabs pickle `path` (torch_files.load), after checking that it exists."""
  require_file(path)
  return torch_files.load(path)


def require_file(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(f'weights file {path!r} not found; nothing is downloaded at run time: pass the path of '
                            'a downloaded file')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'weights file {path!r} is a directory; pass the file itself')


def _read_npz(path: str) -> dict:
  try:
    with np.load(path) as stored:
      return {name: stored[name] for name in stored.files}
  except (ValueError, TypeError, OSError, EOFError, AttributeError, zipfile.BadZipFile) as error:
    raise torch_files.cannot_read(path, 'an .npz of arrays', error) from None


def _read_safetensors(path: str) -> dict:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except (SafetensorError, ValueError, OSError) as error:
    raise torch_files.cannot_read(path, 'a .safetensors file', error) from None


def _read_torch(path: str, module: str | None) -> dict:
  return _torch_state_dict(torch_files.load(path), path, module)


# File extension -> reader(path, module) of its state dict.
READERS = {
    '.pth': _read_torch, '.pt': _read_torch, '.bin': _read_torch, '.pkl': _read_torch,
    '.safetensors': lambda path, module: _read_safetensors(path),
    '.npz': lambda path, module: _read_npz(path),
}
FORMATS = tuple(READERS)


def read_state_dict(path: str, module: str | None = None) -> dict:
  """name -> numpy array of the weights file `path` (one of FORMATS).

  A PyTorch file holds a state dict, or (a dict of) whole modules; `module` names the entry to read from a dict of
  modules, as NVlabs' training pickles store their network under 'ema'. A file holding one module is read as its
  state dict, a training checkpoint ({'model', 'ema', 'opt', ...}, as DiT's and SiT's) as its 'ema'.
  """
  extension = os.path.splitext(path)[1]
  require_file(path)
  if extension not in READERS:
    raise ValueError(f'{path}: unknown weights format {extension!r}; use one of {", ".join(FORMATS)}')
  return READERS[extension](path, module)


def _torch_state_dict(loaded, path: str, module: str | None) -> dict:
  if module is not None:
    if not isinstance(loaded, dict) or module not in loaded:
      keys = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
      raise ValueError(f'{path} has no entry {module!r} (it holds {keys})')
    loaded = loaded[module]
  if isinstance(loaded, torch_files.ModuleStub):
    return torch_files.state_dict(loaded)
  if isinstance(loaded, dict) and all(isinstance(value, np.ndarray) for value in loaded.values()):
    return dict(loaded)
  if isinstance(loaded, dict) and module is None and isinstance(loaded.get('ema'), dict):
    return _torch_state_dict(loaded['ema'], path, None)  # A training checkpoint (model, ema, opt): its EMA.
  if isinstance(loaded, dict) and len(loaded) == 1:  # E.g. {'state_dict': {...}} or {'model': {...}}.
    return _torch_state_dict(next(iter(loaded.values())), path, None)
  keys = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
  raise ValueError(f'{path} holds no state dict or module at its top level ({keys}); name the entry to read')
