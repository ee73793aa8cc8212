"""Published weights, read without running code from them: `read_state_dict` turns a PyTorch file (zip or legacy
`torch.save`, or an NVlabs network pickle), a `.safetensors` or an `.npz` into {name: numpy array}, with numpy alone
(`torch_files` rebuilds tensors through a restricted unpickler). `fewstep_jax.import_weights` builds on it."""
import os

import numpy as np

from fewstep_jax.weights import torch_files

FORMATS = ('.pth', '.pt', '.bin', '.pkl', '.safetensors', '.npz')


def read_state_dict(path: str, module: str | None = None) -> dict:
  """name -> numpy array of the weights file `path` (one of FORMATS).

  A PyTorch file holds a state dict, or (a dict of) whole modules; `module` names the entry to read from a dict of
  modules, as NVlabs' training pickles store their network under 'ema'. A file holding one module is read as its
  state dict, a training checkpoint ({'model', 'ema', 'opt', ...}, as DiT's and SiT's) as its 'ema'.
  """
  extension = os.path.splitext(path)[1]
  if not os.path.exists(path):
    raise FileNotFoundError(f'weights file {path!r} not found; nothing is downloaded at run time: pass the path of '
                            'a downloaded file')
  if extension == '.npz':
    with np.load(path) as stored:
      return {name: stored[name] for name in stored.files}
  if extension == '.safetensors':
    from safetensors.numpy import load_file
    return load_file(path)
  if extension in ('.pth', '.pt', '.bin', '.pkl'):
    return _torch_state_dict(torch_files.load(path), path, module)
  raise ValueError(f'{path}: unknown weights format {extension!r}; use one of {", ".join(FORMATS)}')


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
