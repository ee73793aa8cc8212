"""What the parity scripts of OpenAI-style U-Nets (consistency_models, sony/ctm) share: stand-ins for the training-side
modules their packages import at module level, and the flash attention kernel's arithmetic in float32."""
import math
import sys
import types


def stub_modules(stubs: dict):
  """Registers {module name: {attribute: value}} as empty modules, unless the real ones are installed."""
  for name, attributes in stubs.items():
    sys.modules.setdefault(name, types.SimpleNamespace(**attributes))


def float32_attention():
  """A drop-in for the checkouts' QKVFlashAttention(channels, heads): qkv [B, (3 H D), T] -> [B, (H D), T], softmax
  attention scaled by 1 / sqrt(D), in float32 (the flash kernels need CUDA; the legacy one casts to float16)."""
  import torch

  class Float32Attention(torch.nn.Module):

    def __init__(self, channels, heads, **kwargs):
      super().__init__()
      self.heads = heads

    def forward(self, qkv, **kwargs):
      batch, width, length = qkv.shape
      q, k, v = qkv.reshape(batch, 3, self.heads, width // (3 * self.heads), length).unbind(1)
      weight = torch.softmax(torch.einsum('bhdt,bhds->bhts', q, k) / math.sqrt(q.shape[2]), dim=-1)
      return torch.einsum('bhts,bhds->bhdt', weight, v).reshape(batch, -1, length)

  return Float32Attention
