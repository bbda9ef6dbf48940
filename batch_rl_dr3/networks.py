"""Q-networks for the Atari agents: the Nature-DQN torso and the DQN / multi-head (REM) / quantile heads.

Every network returns a namedtuple holding its head outputs AND `features`, the penultimate layer phi(s)
([B, 512] for the Nature torso) on which DR3, srank and the feature diagnostics are computed. For discrete
actions phi does not depend on the action (the action only picks an output), so phi(s, a) = phi(s).

The torso follows Dopamine's `atari_lib.NatureDQNNetwork`, which batch_rl and Dopamine's offline DR3 agent use:
uint8 frames / 255, conv 32x8 stride 4, 64x4 stride 2, 64x3 stride 1 (padding 'same', as Dopamine), ReLU,
dense 512 ReLU. Plain Keras 2 (tf-keras) layers, so the networks are checkpointable with `tf.train.Checkpoint`.
"""
import collections
from typing import Dict

import gin
import tensorflow as tf

from batch_rl_dr3.errors import ConfigError

FEATURE_DIM = 512

DQNOutput = collections.namedtuple("DQNOutput", ["q_values", "features"])
# heads: [B, A, K] per-head Q-values; q_values: their mean over heads (what acting uses).
MultiHeadOutput = collections.namedtuple("MultiHeadOutput", ["q_values", "heads", "features"])
# quantiles: [B, A, N] quantile values at midpoints (i + 0.5) / N; q_values: their mean.
QuantileOutput = collections.namedtuple("QuantileOutput", ["q_values", "quantiles", "features"])


@gin.configurable
class NatureTorso(tf.keras.layers.Layer):
  """uint8 [B, 84, 84, 4] -> features [B, feature_dim] (the Nature DQN convolutions + dense ReLU layer)."""

  def __init__(self, feature_dim: int = FEATURE_DIM, padding: str = "same", filters=(32, 64, 64),
               name: str = "torso"):
    """`filters`: channels of the three convolutions (the Nature network's 32, 64, 64). Narrower torsos are for
    small-scale experiments on CPU (`launch/small_evidence.py`), never for the paper's settings."""
    super().__init__(name=name)
    if padding not in ("same", "valid"):
      raise ConfigError(f"NatureTorso.padding={padding!r}; expected 'same' (Dopamine) or 'valid' (Nature paper)")
    if len(filters) != 3 or min(filters) < 1:
      raise ConfigError(f"NatureTorso.filters={filters!r}; expected three positive channel counts")
    self.convs = [
        tf.keras.layers.Conv2D(filters[0], 8, strides=4, padding=padding, activation="relu", name="conv1"),
        tf.keras.layers.Conv2D(filters[1], 4, strides=2, padding=padding, activation="relu", name="conv2"),
        tf.keras.layers.Conv2D(filters[2], 3, strides=1, padding=padding, activation="relu", name="conv3"),
    ]
    self.flatten = tf.keras.layers.Flatten()
    self.dense = tf.keras.layers.Dense(feature_dim, activation="relu", name="features")

  def call(self, states):
    x = tf.cast(states, tf.float32) / 255.0
    for conv in self.convs:
      x = conv(x)
    return self.dense(self.flatten(x))


def named_layers(network) -> Dict[str, tf.keras.layers.Layer]:
  """The layers of a torso network by name, input to output: conv1, conv2, conv3, features (the penultimate
  dense layer), head (the output layer)."""
  layers = {conv.name: conv for conv in network.torso.convs}
  layers[network.torso.dense.name] = network.torso.dense
  layers[network.head.name] = network.head
  return layers


class _TorsoNetwork(tf.keras.Model):
  """Shared plumbing: a torso and one dense output layer; subclasses reshape the outputs."""

  def __init__(self, num_actions: int, outputs_per_action: int, name: str):
    super().__init__(name=name)
    if num_actions < 1:
      raise ConfigError(f"{name}: num_actions={num_actions}; expected >= 1")
    if outputs_per_action < 1:
      raise ConfigError(f"{name}: heads/quantiles={outputs_per_action}; expected >= 1")
    self.num_actions = num_actions
    self.outputs_per_action = outputs_per_action
    self.torso = NatureTorso()
    self.head = tf.keras.layers.Dense(num_actions * outputs_per_action, name="head")

  def _features_and_outputs(self, states):
    features = self.torso(states)
    outputs = tf.reshape(self.head(features), [-1, self.num_actions, self.outputs_per_action])
    return features, outputs


@gin.configurable
class DQNNetwork(_TorsoNetwork):
  """Q(s, .) for DQN: returns DQNOutput(q_values [B, A], features [B, 512])."""

  def __init__(self, num_actions: int, name: str = "dqn_network"):
    super().__init__(num_actions, 1, name)

  def call(self, states):
    features, outputs = self._features_and_outputs(states)
    return DQNOutput(q_values=outputs[..., 0], features=features)


@gin.configurable
class MultiHeadQNetwork(_TorsoNetwork):
  """K Q-heads on one torso (REM, Agarwal et al. 2020): MultiHeadOutput(q_values, heads [B, A, K], features)."""

  def __init__(self, num_actions: int, num_heads: int = 200, name: str = "multi_head_network"):
    super().__init__(num_actions, num_heads, name)
    self.num_heads = num_heads

  def call(self, states):
    features, heads = self._features_and_outputs(states)
    return MultiHeadOutput(q_values=tf.reduce_mean(heads, axis=-1), heads=heads, features=features)


@gin.configurable
class QuantileNetwork(_TorsoNetwork):
  """QR-DQN (Dabney et al. 2018): QuantileOutput(q_values, quantiles [B, A, N], features)."""

  def __init__(self, num_actions: int, num_quantiles: int = 200, name: str = "quantile_network"):
    super().__init__(num_actions, num_quantiles, name)
    self.num_quantiles = num_quantiles

  def call(self, states):
    features, quantiles = self._features_and_outputs(states)
    return QuantileOutput(q_values=tf.reduce_mean(quantiles, axis=-1), quantiles=quantiles, features=features)
