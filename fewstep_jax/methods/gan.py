"""GAN discriminators on a network's own features, shared by the methods with an adversarial term (DMD2's and
f-distill's head on the critic or the frozen teacher, CTM's on the frozen teacher).

A `Discriminator` is a small head (nn.GanHead) on the bottleneck activations of a network of the run (nn.make_features:
the U-Net's middle, the MLP's or DiT's last hidden state), read at the inputs that network's own preconditioned call
gives it at (x_sigma, sigma): EDM's c_in(sigma) x_sigma and c_noise(sigma), or a flow or TrigFlow network's own path
sample and time (paths.network_input), as DMD2's `return_bottleneck=True` call of its preconditioned fake score.
Which network's parameters it reads (the critic's, the teacher's) is the caller's: `logits` takes them.

Its losses are a registered pair (GAN_LOSSES): the discriminator's on real and generated logits, the generator's on
the generated ones.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fewstep_jax import nn, paths
from fewstep_jax.methods.base import check_choice


class GanLoss(NamedTuple):
  discriminator: Callable  # (real logits [B], fake logits [B]) -> scalar
  generator: Callable      # (fake logits [B]) -> scalar


GAN_LOSSES = {
    # Non-saturating (DMD2's and FastGen's): softplus(l(fake)) + softplus(-l(real)); the generator softplus(-l).
    'softplus': GanLoss(lambda real, fake: jnp.mean(jax.nn.softplus(fake)) + jnp.mean(jax.nn.softplus(-real)),
                        lambda fake: jnp.mean(jax.nn.softplus(-fake))),
    # Hinge (sony/ctm's `get_GAN_loss`): relu(1 + l(fake)) + relu(1 - l(real)); the generator -l.
    'hinge': GanLoss(lambda real, fake: jnp.mean(jax.nn.relu(1 + fake)) + jnp.mean(jax.nn.relu(1 - real)),
                     lambda fake: -jnp.mean(fake)),
}


class Discriminator:
  """A GanHead of width `hidden` on the bottleneck of `network` (a flax module of the run), whose parameters are read
  through `readout` on `path` (the time variable of x_sigma and sigma); `loss` names its GAN_LOSSES pair."""

  def __init__(self, network, readout, path, *, hidden: int, loss: str):
    check_choice({'gan_loss': loss}, 'gan_loss', GAN_LOSSES)
    if readout.name not in paths.NETWORK_INPUTS:
      raise ValueError(f'a GAN head reads the bottleneck of a network read as {readout.name!r}, whose network '
                       'inputs are not known: use an edm, flow_matching or TrigFlow (sct) network')
    self.features = nn.make_features(network)
    self.head = nn.GanHead(hidden=hidden)
    self.readout, self.path = readout, path
    self.loss = GAN_LOSSES[loss]

  def bottleneck(self, feature_params, x_sigma, sigma, y=None):
    """The bottleneck features [B, ...] of the network with `feature_params` at x_sigma [B, ...], sigma [B]."""
    x_net, c_noise = paths.network_input(self.readout.name, x_sigma, sigma, self.path, self.readout.sigma_data)
    return self.features(feature_params, x_net, c_noise, y)

  def init_head(self, key, feature_params, data_shape: tuple, conditioning):
    """Fresh head parameters for the features `feature_params` give at examples of `data_shape` and conditions of
    `conditioning` (conditions.Conditioning)."""
    example = jnp.zeros((1,) + tuple(data_shape), jnp.float32)
    features = jax.eval_shape(self.bottleneck, feature_params, example, jnp.ones((1,)), conditioning.example(1))
    return self.head.init(key, jnp.zeros(features.shape, features.dtype))['params']

  def logits(self, head_params, feature_params, x_sigma, sigma, y=None):
    """l [B]: the head on the bottleneck at x_sigma and sigma [B] (gradient flows into x_sigma and the head; the
    caller stops what it must)."""
    return self.head.apply({'params': head_params}, self.bottleneck(feature_params, x_sigma, sigma, y))
