"""What a sample is conditioned on, in one place: every method, sampler and evaluator reads conditions through the
run's `Conditioning`, so that none assumes an integer label.

A condition is a pytree whose leaves share the batch as their leading axis, or None for unconditional data:
  a class label    int32 [B]  (the null class is the label count, `num_classes`);
  a text condition {'tokens': [B, L, D] (the text encoders' token states), and where the network reads them
                   'pooled': [B, P] (a projected pooled vector) and 'time_ids': [B, 6] (SDXL's sizes and crop)}.
The null condition, what classifier-free guidance subtracts and label dropout trains, is the null class, or a text
condition of the run's own: the empty prompt's encoding (SD 1.5), or zeros where the pipeline uses zeros (SDXL's
`force_zeros_for_empty_prompt`), given as one row (no batch axis) and broadcast.

  conditioning.null(like)             the null condition with the batch of `like`
  conditioning.drop(key, c, p)        each row of c replaced by the null with probability p (CFG training)
  conditioning.is_conditional(c)      [B] bool: the rows that are not the null
  conditioning.guided(model, c, w)    m_null + w (m_c - m_null) around model(*args, y=c); one call where w = 1
  conditioning.for_samples(indices)   the conditions of evaluation samples `indices`: sample i has label i % classes,
                                      or the i-th (cyclically) of the run's evaluation prompts
  conditioning.example(n)             zeros shaped like a batch of n conditions (shapes for initialising networks)
  rows(c, index)                      the rows `index` of a condition (labels or a text pytree), None for None
A method whose mathematics needs classes (a per-class coupling, a per-class batch posterior) calls
`require_classes(what)`, a clear error for text.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.errors import ConfigError

KINDS = ('none', 'label', 'text')


@dataclasses.dataclass(frozen=True, eq=False)
class Conditioning:
  """A run's conditions: kind 'none', 'label' (num_classes > 0) or 'text' (null_text: the null condition as one row,
  {'tokens': [L, D], ...}; prompts: the evaluation prompts' conditions, {'tokens': [N, L, D], ...}, or None)."""
  kind: str = 'none'
  num_classes: int = 0
  null_text: Any = None
  prompts: Any = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'unknown condition kind {self.kind!r}; known: {KINDS}')
    if self.kind == 'label' and self.num_classes < 1:
      raise ValueError('label conditions need num_classes >= 1')
    if self.kind == 'text' and self.null_text is None:
      raise ValueError("text conditions need their null (the empty prompt's encoding, or zeros)")

  @classmethod
  def of_labels(cls, num_classes: int) -> 'Conditioning':
    """Class labels 0..num_classes - 1 (null: num_classes), or unconditional where num_classes is 0."""
    return cls('label', num_classes) if num_classes else cls('none')

  @property
  def conditional(self) -> bool:
    return self.kind != 'none'

  def require_classes(self, what: str):
    """A clear error unless the conditions are class labels (or none): `what` needs classes."""
    if self.kind == 'text':
      raise ConfigError(f'{what} needs class labels, and this run is conditioned on text; use a method or option '
                        'that does not group samples by class')

  def null(self, like):
    """The null condition with the batch of `like` (a condition)."""
    if like is None:
      return None
    if self.kind == 'text':
      batch = jax.tree.leaves(like)[0].shape[0]
      return jax.tree.map(lambda row, leaf: jnp.broadcast_to(jnp.asarray(row, leaf.dtype), (batch,) + row.shape),
                          self.null_text, like)
    return jnp.full_like(like, self.num_classes)

  def drop(self, key, condition, probability: float):
    """Classifier-free guidance training: each row becomes the null condition with `probability`."""
    if condition is None or probability <= 0:
      return condition
    batch = jax.tree.leaves(condition)[0].shape[0]
    dropped = jax.random.bernoulli(key, probability, (batch,))
    return self.where(dropped, self.null(condition), condition)

  def is_conditional(self, condition):
    """[B] bool: the rows of `condition` that are not the null condition."""
    null = self.null(condition)
    same = [jnp.all((leaf == empty).reshape(leaf.shape[0], -1), axis=1)
            for leaf, empty in zip(jax.tree.leaves(condition), jax.tree.leaves(null))]
    return ~jnp.all(jnp.stack(same), axis=0)

  @staticmethod
  def where(rows, a, b):
    """The rows of condition a where rows [B] holds, of b elsewhere."""
    return jax.tree.map(lambda x, y: jnp.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)

  def guided(self, model, condition, guidance):
    """Classifier-free guidance around model(*args, y=condition) -> prediction: m_null + w (m_y - m_null), m_null the
    prediction for the null condition; one call where unconditional or w = 1. guidance: a float, or one scale per
    example [B] (LCM's training draws)."""
    def guided_model(*args):
      cond = model(*args, y=condition)
      if condition is None or (isinstance(guidance, (int, float)) and guidance == 1.0):
        return cond
      uncond = model(*args, y=self.null(condition))
      scale = jnp.asarray(guidance)
      return uncond + scale.reshape(scale.shape + (1,) * (cond.ndim - scale.ndim)) * (cond - uncond)
    return guided_model

  def for_samples(self, indices):
    """The conditions of evaluation samples `indices` (numpy or jnp [n]): label i % num_classes, or the
    (i mod N)-th evaluation prompt; None where unconditional."""
    if self.kind == 'none':
      return None
    if self.kind == 'label':
      return indices % self.num_classes
    if self.prompts is None:
      raise ConfigError('this text-conditioned run has no evaluation prompts: set the data\'s prompt set')
    count = jax.tree.leaves(self.prompts)[0].shape[0]
    xp = jnp if isinstance(indices, jax.Array) else np
    return jax.tree.map(lambda leaf: xp.asarray(leaf)[indices % count], self.prompts)

  def example(self, n: int):
    """Zeros shaped like a batch of n conditions (for initialising networks), or None."""
    if self.kind == 'none':
      return None
    if self.kind == 'label':
      return jnp.zeros((n,), jnp.int32)
    return jax.tree.map(lambda row: jnp.zeros((n,) + np.shape(row), jnp.asarray(row).dtype), self.null_text)

  def describe(self) -> dict:
    """The conditioning without its arrays, as JSON (what a run records)."""
    shapes = None if self.null_text is None else jax.tree.map(lambda row: list(np.shape(row)), self.null_text)
    return {'kind': self.kind, 'num_classes': int(self.num_classes), 'text_shapes': shapes}


def rows(condition, index):
  """The rows `index` (a slice or an index array) of `condition`: labels [B] or every leaf of a text condition;
  None stays None. Methods that split a batch use it, never `y[index]`, which a text condition's dict refuses."""
  return None if condition is None else jax.tree.map(lambda leaf: leaf[index], condition)
