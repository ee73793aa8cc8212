"""Reading published network weights without running code from them: name -> numpy array from a PyTorch
checkpoint (`torch.load(weights_only=True)`, which rebuilds only tensors and plain containers), a `.safetensors`
file (no PyTorch needed) or an `.npz`. The feature networks convert a checkpoint once to `.npz`, which later loads
read with numpy alone."""
import os

import numpy as np

FORMATS = ('.pth', '.pt', '.safetensors', '.npz')


def read_state_dict(path: str, convert_command: str) -> dict:
  """name -> numpy array of the weights file `path` (one of FORMATS). `convert_command` is how to turn the file into
  an .npz, named when PyTorch is missing."""
  extension = os.path.splitext(path)[1]
  if extension == '.npz':
    with np.load(path) as stored:
      return {name: stored[name] for name in stored.files}
  if extension == '.safetensors':
    from safetensors.numpy import load_file
    return load_file(path)
  if extension in ('.pth', '.pt'):
    try:
      import torch
    except ImportError as error:
      raise ImportError(f'reading {path} needs PyTorch (pip install torch); or convert it once to .npz on a machine '
                        f'that has it: {convert_command}') from error
    state_dict = torch.load(path, map_location='cpu', weights_only=True)  # Tensors only: no code is run.
    return {name: value.numpy() for name, value in state_dict.items()}
  raise ValueError(f'{path}: unknown weights format {extension!r}; use one of {", ".join(FORMATS)}')
