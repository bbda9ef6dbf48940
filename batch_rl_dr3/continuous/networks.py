"""tf-agents networks for the continuous path: a critic that exposes its penultimate features, a regularizable actor.

* `FeatureCriticNetwork((observation, action)) -> (q [B], state)` as tf-agents' SAC/CQL agents call it, plus
  `features_and_q(inputs) -> (q [B], features [B, d])` for DR3; the features are the last hidden layer (the
  input of the linear Q head).
* Actors (`RegularizedActorNetwork` for SAC / CQL-SAC / BRAC, `DeterministicActorNetwork` for ReBRAC,
  `GaussianActorNetwork` for IQL) share `actor_regularization.ActorTorso`, which carries every actor regularizer
  of Tarasov et al. 2024, and expose `actor_features(observations, training=False)` (hidden pre-activations and
  penultimate features, for the actor diagnostics).
* `MlpCriticNetwork`: ReBRAC's LayerNorm critics (scalar or HL-Gauss logits) and IQL's Q and V networks, with
  `features_and_q` for DR3.
* `ImageEncoder`: COG's conv torso for 48x48x3 uint8 images. As in COG's code (examples/cog.py), every network
  (both critics, their targets, the actor) has its own encoder; none is shared. With `augmentation_padding > 0`
  it applies COG's random-crop augmentation (`pad_and_random_crop`) to every batch of more than one image.
"""
import math
import zlib
from typing import Optional, Sequence

import gin
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.agents.sac import sac_agent
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.networks import network
from tf_agents.specs import distribution_spec
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step
from tf_agents.utils import nest_utils

from batch_rl_dr3.continuous import actor_regularization


def pad_and_random_crop(images: tf.Tensor, padding: int, offsets: tf.Tensor) -> tf.Tensor:
  """COG's random crop (avisingh599/cog rlkit/torch/conv_networks.py `RandomCrop`, padding 4 in examples/cog.py):
  each [H, W, C] image is zero-padded by `padding` on all four sides and the H x W window whose top-left corner is
  at `offsets[b] = (row, column)`, both in [0, 2 * padding], is cut out. images [B, H, W, C]; offsets int [B, 2].
  """
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
  offsets = tf.cast(offsets, tf.int32)
  rows = offsets[:, 0:1] + tf.range(height)[None]  # [B, H]
  columns = offsets[:, 1:2] + tf.range(width)[None]  # [B, W]
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W + 2p, C]
  return tf.gather(cropped, columns, axis=2, batch_dims=1)  # [B, H, W, C]


@gin.configurable
class ImageEncoder(tf.keras.layers.Layer):
  """uint8 [B, H, W, C] images -> flat float features (scaled to [0, 1] first).

  Defaults are COG's CNN (avisingh599/cog examples/cog.py cnn_params): three 3x3 convs with 16 channels,
  stride 1, 'same' padding, 2x2 max-pooling after the first two (48 -> 24 -> 12), flattened (12 * 12 * 16).

  augmentation_padding > 0: COG's `image_augmentation=True, image_augmentation_padding=4`: every call on a batch
  of more than one image (COG: "h.shape[0] > 1 ensures we apply this only during training", so the targets'
  and the policy's training calls are cropped too, a single evaluation observation is not) crops each image at
  its own uniform offset in [0, 2 * padding]^2 (`pad_and_random_crop`). The offsets come from this encoder's
  own checkpointed `tf.random.Generator` (seeded by `seed`), so every network draws its own crops, as each
  COG network has its own RandomCrop, and a resumed run draws the same ones.
  """

  def __init__(self, filters: Sequence[int] = (16, 16, 16), kernel_size: int = 3,
               pool_sizes: Sequence[int] = (2, 2, 1), augmentation_padding: int = 0, seed: int = 0,
               name="ImageEncoder"):
    super().__init__(name=name)
    if len(pool_sizes) != len(filters):
      raise ValueError(f"ImageEncoder: pool_sizes {tuple(pool_sizes)} needs one entry per conv {tuple(filters)}")
    if augmentation_padding < 0:
      raise ValueError(f"ImageEncoder.augmentation_padding={augmentation_padding}; expected >= 0 (0 = no crop)")
    self._convs = [tf.keras.layers.Conv2D(f, kernel_size, padding="same", activation="relu") for f in filters]
    self._pools = [tf.keras.layers.MaxPool2D(p) if p > 1 else None for p in pool_sizes]
    self._flatten = tf.keras.layers.Flatten()
    self._padding = augmentation_padding
    self._crop_rng = tf.random.Generator.from_seed(seed)

  def augment(self, images):
    """The images, each cropped at a fresh random offset (COG's RandomCrop); unchanged without padding."""
    if self._padding == 0:
      return images
    seed = tf.cast(self._crop_rng.make_seeds(1)[:, 0], tf.int32)
    offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed, minval=0, maxval=2 * self._padding + 1,
                                          dtype=tf.int32)
    return pad_and_random_crop(images, self._padding, offsets)

  def call(self, images):
    if self._padding > 0:
      images = tf.cond(tf.shape(images)[0] > 1, lambda: self.augment(images), lambda: images)
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


def encoder_seed(seed: int, network_name: str) -> int:
  """A distinct crop seed per network (tf-agents names its copies 'CriticNetwork2', 'TargetCriticNetwork1', ...)."""
  return (seed * 1_000_003 + zlib.crc32(network_name.encode())) % (2 ** 31)


def _flat_float(observation):
  x = tf.cast(observation, tf.float32)
  return tf.reshape(x, [tf.shape(x)[0], -1]) if x.shape.rank > 2 else x


@gin.configurable
class FeatureCriticNetwork(_ZeroBuildMixin, network.Network):
  """Q(s, a): [encoder(s)] ++ a -> MLP (ReLU) -> features -> linear -> q."""

  def __init__(self, input_tensor_spec, hidden_units: Sequence[int] = (256, 256, 256),
               image_observations: bool = False, seed: int = 0, name: str = "FeatureCriticNetwork"):
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
    self._hidden_units = tuple(hidden_units)
    self._image_observations = image_observations
    self._seed = seed
    self._encoder = (ImageEncoder(seed=encoder_seed(seed, name), name="critic_encoder") if image_observations
                     else None)
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
                      image_observations=self._image_observations, **dict(dict(seed=self._seed), **kwargs))

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


def _actor_features(torso, head_fn, x, training):
  features, pre_activations = torso.forward(x, training=training)
  return actor_regularization.ActorFeatures(head_fn(features), pre_activations, features)


@gin.configurable
class RegularizedActorNetwork(_ZeroBuildMixin, network.DistributionNetwork):
  """pi(a|s) of SAC / CQL-SAC / BRAC: `ActorTorso` (every actor regularizer) -> TanhNormalProjectionNetwork
  (tf-agents' SAC head). Dropout and input noise act only with training=True (tf-agents' SAC calls the actor
  with training=True in the actor loss only; our agents sample a' for the targets with training=False)."""

  def __init__(self, input_tensor_spec, output_tensor_spec, hidden_units: Sequence[int] = (256, 256),
               regularization: Optional[actor_regularization.ActorRegularization] = None,
               image_observations: bool = False, seed: int = 0, name: str = "RegularizedActorNetwork"):
    # log-std clipped to [-20, 2], as tf-agents' SAC examples do (the projection's default is a bare exp).
    projection = tanh_normal_projection_network.TanhNormalProjectionNetwork(
        output_tensor_spec, std_transform=sac_agent.std_clip_transform)
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(),
                     output_spec=projection.output_spec, name=name)
    self._config = dict(hidden_units=tuple(hidden_units), regularization=regularization,
                        image_observations=image_observations, seed=seed)
    self._output_tensor_spec = output_tensor_spec
    self._encoder = (ImageEncoder(seed=encoder_seed(seed, name), name="actor_encoder") if image_observations
                     else None)
    self._torso = actor_regularization.ActorTorso(hidden_units, regularization, hidden_init="glorot", seed=seed)
    self._projection = projection

  def copy(self, **kwargs):
    config = dict(self._config, **kwargs)
    return type(self)(self.input_tensor_spec, self._output_tensor_spec, **config)

  def _built_output_spec(self):
    return self.output_spec

  @property
  def torso(self) -> actor_regularization.ActorTorso:
    return self._torso

  def _inputs(self, observations):
    return self._encoder(observations) if self._encoder is not None else _flat_float(observations)

  def actor_features(self, observations, training=False):
    """ActorFeatures: tanh of the Gaussian's mean, hidden pre-activations, penultimate features."""
    observations = tf.nest.map_structure(tf.convert_to_tensor, observations)
    outer_rank = nest_utils.get_outer_rank(observations, self.input_tensor_spec)
    head = lambda features: self._projection(features, outer_rank, training=False)[0].mode()
    return _actor_features(self._torso, head, self._inputs(observations), training)

  def call(self, observations, step_type=(), network_state=(), training=False):
    outer_rank = nest_utils.get_outer_rank(observations, self.input_tensor_spec)
    x = self._torso(self._inputs(observations), training=training)
    distribution, _ = self._projection(x, outer_rank, training=training)
    return distribution, network_state


def _uniform(bound: float):
  return tf.keras.initializers.RandomUniform(-bound, bound)


@gin.configurable
class DeterministicActorNetwork(network.Network):
  """ReBRAC's actor (ActoReg DetActor): ActorTorso (256 x 3, EDAC init, every regularizer) -> Dense(A) with
  kernel and bias U(+-1e-3) -> tanh. Returns (actions [B, A], state)."""

  def __init__(self, input_tensor_spec, output_tensor_spec, hidden_units: Sequence[int] = (256, 256, 256),
               regularization: Optional[actor_regularization.ActorRegularization] = None, seed: int = 0,
               name: str = "DeterministicActorNetwork"):
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
    self._config = dict(hidden_units=tuple(hidden_units), regularization=regularization, seed=seed)
    self._output_tensor_spec = output_tensor_spec
    self._torso = actor_regularization.ActorTorso(hidden_units, regularization, hidden_init="rebrac", seed=seed)
    self._head = tf.keras.layers.Dense(int(output_tensor_spec.shape.num_elements()), activation="tanh",
                                       kernel_initializer=_uniform(1e-3), bias_initializer=_uniform(1e-3),
                                       name="action_head")

  def copy(self, **kwargs):
    return type(self)(self.input_tensor_spec, self._output_tensor_spec, **dict(self._config, **kwargs))

  @property
  def torso(self) -> actor_regularization.ActorTorso:
    return self._torso

  def actor_features(self, observations, training=False):
    return _actor_features(self._torso, self._head, _flat_float(observations), training)

  def call(self, observations, step_type=(), network_state=(), training=False):
    return self._head(self._torso(_flat_float(observations), training=training)), network_state


@gin.configurable
class GaussianActorNetwork(network.DistributionNetwork):
  """IQL's actor (ActoReg iql.py, tanh_squash_distribution False, state_dependent_std True): ActorTorso (256 x 2,
  orthogonal sqrt(2) init, every regularizer) -> N(mu(s), diag sigma(s)^2) with mu = tanh(W_mu h + b_mu) and
  log sigma = clip(W_s h + b_s, log_std_min, log_std_max); no tanh on samples. Mean head orthogonal(sqrt 2), log-std
  head orthogonal(log_std_scale), zero biases."""

  def __init__(self, input_tensor_spec, output_tensor_spec, hidden_units: Sequence[int] = (256, 256),
               regularization: Optional[actor_regularization.ActorRegularization] = None,
               log_std_min: float = -20.0, log_std_max: float = 2.0, log_std_scale: float = 1.0, seed: int = 0,
               name: str = "GaussianActorNetwork"):
    action_shape = output_tensor_spec.shape
    params = {"loc": tf.TensorSpec(action_shape, tf.float32), "scale_diag": tf.TensorSpec(action_shape, tf.float32)}
    output_spec = distribution_spec.DistributionSpec(tfp.distributions.MultivariateNormalDiag, params,
                                                     sample_spec=output_tensor_spec)
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), output_spec=output_spec, name=name)
    self._config = dict(hidden_units=tuple(hidden_units), regularization=regularization, log_std_min=log_std_min,
                        log_std_max=log_std_max, log_std_scale=log_std_scale, seed=seed)
    self._output_tensor_spec = output_tensor_spec
    self._log_std_range = (log_std_min, log_std_max)
    self._torso = actor_regularization.ActorTorso(hidden_units, regularization, hidden_init="iql", seed=seed)
    units = int(action_shape.num_elements())
    self._mean_head = tf.keras.layers.Dense(units, activation="tanh",
                                            kernel_initializer=tf.keras.initializers.Orthogonal(math.sqrt(2.0)),
                                            name="mean_head")
    self._log_std_head = tf.keras.layers.Dense(units, kernel_initializer=tf.keras.initializers.Orthogonal(
        log_std_scale), name="log_std_head")

  def copy(self, **kwargs):
    return type(self)(self.input_tensor_spec, self._output_tensor_spec, **dict(self._config, **kwargs))

  @property
  def torso(self) -> actor_regularization.ActorTorso:
    return self._torso

  def mean_and_log_std(self, observations, training=False):
    features = self._torso(_flat_float(observations), training=training)
    log_std = tf.clip_by_value(self._log_std_head(features), *self._log_std_range)
    return self._mean_head(features), log_std

  def actor_features(self, observations, training=False):
    return _actor_features(self._torso, self._mean_head, _flat_float(observations), training)

  def call(self, observations, step_type=(), network_state=(), training=False):
    mean, log_std = self.mean_and_log_std(observations, training)
    return self.output_spec.build_distribution(loc=mean, scale_diag=tf.exp(log_std)), network_state


@gin.configurable
class MlpCriticNetwork(network.Network):
  """Q(s, a) (or V(s) with `with_action=False`) for ReBRAC and IQL: [s, a] -> (Dense -> ReLU [-> LayerNorm]) x n
  -> Dense(num_outputs). `features_and_q` returns (outputs, penultimate features); outputs are [B] when
  num_outputs = 1 (a scalar Q or V), else [B, num_outputs] logits (ReBRAC's HL-Gauss head).

  init 'rebrac': hidden U(+-1/sqrt(fan_in)) / bias 0.1, output U(+-3e-3) (ReBRAC's Critic, EDAC init);
  init 'iql': orthogonal sqrt(2) everywhere, zero biases (ActoReg iql.py's MLP default_init)."""

  def __init__(self, input_tensor_spec, hidden_units: Sequence[int] = (256, 256, 256), layer_norm: bool = True,
               num_outputs: int = 1, init: str = "rebrac", with_action: bool = True, name: str = "MlpCriticNetwork"):
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
    self._config = dict(hidden_units=tuple(hidden_units), layer_norm=layer_norm, num_outputs=num_outputs, init=init,
                        with_action=with_action)
    kernel_init, bias_init = actor_regularization.hidden_initializers(init)
    self._hidden = [tf.keras.layers.Dense(n, activation="relu", kernel_initializer=kernel_init,
                                          bias_initializer=bias_init, name=f"hidden_{i}")
                    for i, n in enumerate(hidden_units)]
    self._norms = [tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"layer_norm_{i}") if layer_norm else None
                   for i in range(len(hidden_units))]
    if init == "rebrac":
      out_kernel, out_bias = _uniform(3e-3), _uniform(3e-3)
    else:
      out_kernel, out_bias = kernel_init, bias_init
    self._head = tf.keras.layers.Dense(num_outputs, kernel_initializer=out_kernel, bias_initializer=out_bias,
                                       name="head")
    self._num_outputs, self._with_action = num_outputs, with_action

  def copy(self, **kwargs):
    return type(self)(self.input_tensor_spec, **dict(self._config, **kwargs))

  def features_and_q(self, inputs, training=False):
    if self._with_action:
      observation, action = inputs
      x = tf.concat([_flat_float(observation), tf.cast(action, tf.float32)], axis=-1)
    else:
      x = _flat_float(inputs)
    for dense, norm in zip(self._hidden, self._norms):
      x = dense(x)
      if norm is not None:
        x = norm(x)
    out = self._head(x)
    return (tf.squeeze(out, -1) if self._num_outputs == 1 else out), x

  def call(self, inputs, step_type=(), network_state=(), training=False):
    return self.features_and_q(inputs, training)[0], network_state
