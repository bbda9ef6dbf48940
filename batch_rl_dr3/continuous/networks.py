"""tf-agents networks for the continuous path: a critic that exposes its penultimate features, a regularizable actor.

* `FeatureCriticNetwork((observation, action)) -> (q [B], state)` as tf-agents' SAC/CQL agents call it, plus
  `features_and_q(inputs) -> (q [B], features [B, d])` for DR3; the features are the last hidden layer (the
  input of the linear Q head).
* `RegularizedActorNetwork(observation) -> (tanh-squashed Normal, state)`, an MLP whose hidden layers can take LayerNorm,
  dropout and L2 weight decay (the actor regularizers of Tarasov et al. 2024); the L2 term goes into
  `network.losses`, which tf-agents adds to the actor loss. Dropout is stateless, seeded from a
  checkpointed `tf.random.Generator`, so that a resumed run draws the same masks.
* `ImageEncoder`: COG's conv torso for 48x48x3 uint8 images. As in COG's code (examples/cog.py), every network
  (both critics, their targets, the actor) has its own encoder; none is shared.
"""
from typing import Sequence

import gin
import tensorflow as tf
from tf_agents.agents.sac import sac_agent
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.networks import network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step
from tf_agents.utils import nest_utils


@gin.configurable
class ImageEncoder(tf.keras.layers.Layer):
  """uint8 [B, H, W, C] images -> flat float features (scaled to [0, 1] first).

  Defaults are COG's CNN (avisingh599/cog examples/cog.py cnn_params): three 3x3 convs with 16 channels,
  stride 1, 'same' padding, 2x2 max-pooling after the first two (48 -> 24 -> 12), flattened (12 * 12 * 16).
  """

  def __init__(self, filters: Sequence[int] = (16, 16, 16), kernel_size: int = 3,
               pool_sizes: Sequence[int] = (2, 2, 1), name="ImageEncoder"):
    super().__init__(name=name)
    if len(pool_sizes) != len(filters):
      raise ValueError(f"ImageEncoder: pool_sizes {tuple(pool_sizes)} needs one entry per conv {tuple(filters)}")
    self._convs = [tf.keras.layers.Conv2D(f, kernel_size, padding="same", activation="relu") for f in filters]
    self._pools = [tf.keras.layers.MaxPool2D(p) if p > 1 else None for p in pool_sizes]
    self._flatten = tf.keras.layers.Flatten()

  def call(self, images):
    x = tf.cast(images, tf.float32) / 255.0
    for conv, pool in zip(self._convs, self._pools):
      x = conv(x)
      if pool is not None:
        x = pool(x)
    return self._flatten(x)


def _has_uint8(spec) -> bool:
  return any(s.dtype == tf.uint8 for s in tf.nest.flatten(spec))


class _ZeroBuildMixin:
  """tf-agents builds a network on random inputs sampled from its spec, which fails for uint8 image specs
  (the sampler's exclusive maxval 256 overflows uint8); such networks are built on zeros instead."""

  def create_variables(self, input_tensor_spec=None, **kwargs):
    if self._network_output_spec is not None:
      return self._network_output_spec
    spec = self._input_tensor_spec if self._input_tensor_spec is not None else input_tensor_spec
    if not _has_uint8(spec):
      return super().create_variables(input_tensor_spec, **kwargs)
    zeros = tensor_spec.zero_spec_nest(spec, outer_dims=(1,))
    self.__call__(zeros, step_type=tf.fill((1,), time_step.StepType.FIRST), network_state=(), **kwargs)
    self._network_output_spec = self._built_output_spec()
    return self._network_output_spec


def _flat_float(observation):
  x = tf.cast(observation, tf.float32)
  return tf.reshape(x, [tf.shape(x)[0], -1]) if x.shape.rank > 2 else x


@gin.configurable
class FeatureCriticNetwork(_ZeroBuildMixin, network.Network):
  """Q(s, a): [encoder(s)] ++ a -> MLP (ReLU) -> features -> linear -> q."""

  def __init__(self, input_tensor_spec, hidden_units: Sequence[int] = (256, 256, 256),
               image_observations: bool = False, name: str = "FeatureCriticNetwork"):
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
    self._hidden_units = tuple(hidden_units)
    self._image_observations = image_observations
    self._encoder = ImageEncoder(name="critic_encoder") if image_observations else None
    self._hidden = [tf.keras.layers.Dense(n, activation="relu", name=f"hidden_{i}")
                    for i, n in enumerate(hidden_units)]
    self._q_head = tf.keras.layers.Dense(1, name="q_head")

  @property
  def encoder(self):
    """The image encoder (None for vector observations)."""
    return self._encoder

  def copy(self, **kwargs):
    # tf-agents copies the critic for critic 2 and the targets by re-calling the constructor.
    return type(self)(self.input_tensor_spec, hidden_units=self._hidden_units,
                      image_observations=self._image_observations, **kwargs)

  def _built_output_spec(self):
    return tf.TensorSpec([], tf.float32)

  def features_and_q(self, inputs, training=False):
    observation, action = inputs
    obs = self._encoder(observation) if self._encoder is not None else _flat_float(observation)
    x = tf.concat([obs, tf.cast(action, tf.float32)], axis=-1)
    for layer in self._hidden:
      x = layer(x, training=training)
    q = tf.squeeze(self._q_head(x), axis=-1)
    return q, x

  def call(self, inputs, step_type=(), network_state=(), training=False):
    q, _ = self.features_and_q(inputs, training=training)
    return q, network_state


@gin.configurable
class RegularizedActorNetwork(_ZeroBuildMixin, network.DistributionNetwork):
  """pi(a|s): MLP with optional LayerNorm / dropout / L2 -> TanhNormalProjectionNetwork (tf-agents' SAC head)."""

  def __init__(self, input_tensor_spec, output_tensor_spec, hidden_units: Sequence[int] = (256, 256),
               layer_norm: bool = False, dropout_rate: float = 0.0, weight_decay: float = 0.0,
               image_observations: bool = False, seed: int = 0, name: str = "RegularizedActorNetwork"):
    # log-std clipped to [-20, 2], as tf-agents' SAC examples do (the projection's default is a bare exp).
    projection = tanh_normal_projection_network.TanhNormalProjectionNetwork(
        output_tensor_spec, std_transform=sac_agent.std_clip_transform)
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(),
                     output_spec=projection.output_spec, name=name)
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"RegularizedActorNetwork.dropout_rate={dropout_rate}; expected 0 <= rate < 1")
    self._config = dict(hidden_units=tuple(hidden_units), layer_norm=layer_norm, dropout_rate=dropout_rate,
                        weight_decay=weight_decay, image_observations=image_observations, seed=seed)
    self._output_tensor_spec = output_tensor_spec
    regularizer = tf.keras.regularizers.l2(weight_decay) if weight_decay > 0 else None
    self._encoder = ImageEncoder(name="actor_encoder") if image_observations else None
    self._hidden = [tf.keras.layers.Dense(n, kernel_regularizer=regularizer, name=f"hidden_{i}")
                    for i, n in enumerate(hidden_units)]
    self._norms = [tf.keras.layers.LayerNormalization(name=f"layer_norm_{i}") if layer_norm else None
                   for i in range(len(hidden_units))]
    self._dropout_rate = dropout_rate
    self._dropout_rng = tf.random.Generator.from_seed(seed + 7919)
    self._projection = projection

  def copy(self, **kwargs):
    config = dict(self._config, **kwargs)
    return type(self)(self.input_tensor_spec, self._output_tensor_spec, **config)

  def _built_output_spec(self):
    return self.output_spec

  def call(self, observations, step_type=(), network_state=(), training=False):
    outer_rank = nest_utils.get_outer_rank(observations, self.input_tensor_spec)
    x = self._encoder(observations) if self._encoder is not None else _flat_float(observations)
    for dense, norm in zip(self._hidden, self._norms):
      x = dense(x)
      if norm is not None:
        x = norm(x)
      x = tf.nn.relu(x)
      if training and self._dropout_rate > 0:
        seed = tf.cast(self._dropout_rng.make_seeds(1)[:, 0], tf.int32)
        x = tf.nn.experimental.stateless_dropout(x, rate=self._dropout_rate, seed=seed)
    distribution, _ = self._projection(x, outer_rank, training=training)
    return distribution, network_state
