"""Text conditions for Stable Diffusion teachers: `tokenizer`, CLIP's BPE tokenizer read from a diffusers pipeline's
tokenizer folders, and `encoders`, which pairs it with the CLIP text encoders of `fewstep_jax.nn.clip_text` and reads
the outputs each pipeline conditions on (docs/teachers.md, "Text encoders").

  encoder = text.load_encoder('sd15/text_encoder')
  states, pooled = encoder.encode(['a photo of a cat'])            # [1, 77, 768], None
  states, pooled = text.encode(text.load_pipeline('sdxl'), prompts)  # [B, 77, 2048], [B, 1280]
  conditioning = text.pipeline_conditioning('sdxl', prompts, (1024, 1024))  # conditions.Conditioning, the null
"""
from fewstep_jax.text.encoders import (CONDITIONS, TextEncoder, encode, encode_ids, load_encoder, load_pipeline,
                                      tokenize)
from fewstep_jax.text.tokenizer import CLIPTokenizer
from fewstep_jax.text.conditions import encode_prompts, null_condition, pipeline_conditioning, read_prompts
