"""The actor regularizers of Tarasov, Surina & Gulcehre 2024 ("The Role of Deep Learning Regularizations on Actors
in Offline RL"; authors' code DT6A/ActoReg), composable, gin-bound, usable by every continuous agent's actor.

One gin-configurable `ActorRegularization` holds every switch; each acts where the reference (§3) places it:

* in the network (`ActorTorso`): after each hidden Dense -> ReLU comes the "reg block", in this order, each only if
  on: LayerNorm (scale/bias, eps 1e-6), FeatureNorm (LayerNorm without scale and bias), GroupNorm (32 groups,
  scale/bias, eps 1e-6), BatchNorm (momentum 0.99, eps 1e-5; running statistics outside training), Dropout (last;
  active only with `training=True`, i.e. only in the actor loss). Spectral norm wraps the last hidden Dense only
  (one power iteration per forward, its vector stored only in training). Input noise s <- s + sigma xi is added
  to what the actor sees, in training mode only.
* in the optimizer (`RegularizedAdam`): the decoupled weight-decay family through one optimizer
  (u = adam + lambda [(1 - rho) theta + rho sign(theta)], rho 0 = AdamW, 1 = L1, 0.5 = elastic net), gradient
  noise g <- g + N(0, sigma_t^2), sigma_t = sigma / (1 + t)^0.55 with t the actor optimizer's step count, and the
  learning-rate schedules (linear to lr/10, cosine to 0, exponential x0.99, each over `schedule_steps`).
* in the agent's actor loss: BC/target noise (`bc_noise`; ReBRAC: on the BC target, IQL: on the log-weight).

All randomness comes from checkpointed `tf.random.Generator`s (stateless ops), so resumed runs draw the same noise.
"""
import collections
import dataclasses
import math
from typing import List, Optional, Sequence

import gin
import tensorflow as tf

from batch_rl_dr3.errors import ConfigError

SCHEDULES = (None, "linear", "cosine", "exp")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ActorRegularization:
  """Every actor regularizer of the study; all off by default (the unregularized baselines).

  Names follow the authors' config keys: layer_norm = actor_ln, feature_norm = actor_fn, group_norm = actor_gn,
  spectral_norm = actor_sn, batch_norm = actor_bn, dropout_rate = actor_dropout, weight_decay = actor_wd,
  l1_ratio = l1_ratio, input_noise = actor_input_noise, bc_noise = actor_bc_noise, grad_noise = actor_grad_noise,
  schedule = decay_schedule.
  """
  layer_norm: bool = False
  feature_norm: bool = False
  group_norm: bool = False
  group_norm_groups: int = 32  # flax.linen.GroupNorm's default num_groups
  spectral_norm: bool = False
  batch_norm: bool = False
  dropout_rate: float = 0.0
  input_noise: float = 0.0
  bc_noise: float = 0.0
  grad_noise: float = 0.0
  grad_noise_decay: float = 0.55  # ActoReg update_actor: noise_std / (1 + step) ** 0.55
  weight_decay: float = 0.0
  l1_ratio: float = 0.0
  schedule: Optional[str] = None
  schedule_steps: int = 1_000_000  # ActoReg: the schedules' horizon is num_epochs * num_updates_on_epoch

  def __post_init__(self):
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"ActorRegularization.dropout_rate={self.dropout_rate}; expected 0 <= rate < 1")
    if not 0.0 <= self.l1_ratio <= 1.0:
      raise ConfigError(f"ActorRegularization.l1_ratio={self.l1_ratio}; expected a value in [0, 1]")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"ActorRegularization.schedule={self.schedule!r}; expected one of {SCHEDULES}")
    for name in ("input_noise", "bc_noise", "grad_noise", "weight_decay"):
      if getattr(self, name) < 0:
        raise ConfigError(f"ActorRegularization.{name}={getattr(self, name)}; expected >= 0")

  def non_default(self) -> dict:
    """The settings that differ from the defaults (what a run's record lists)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

  @property
  def uses_optimizer(self) -> bool:
    """Whether the optimizer-side regularizers (weight decay, gradient noise, schedule) are on."""
    return self.weight_decay > 0 or self.grad_noise > 0 or self.schedule is not None

  def short_label(self) -> str:
    """The study's abbreviations of what is on, e.g. 'LN+DO+GrN' ('' when nothing is)."""
    parts = [("LN", self.layer_norm), ("FN", self.feature_norm), ("GN", self.group_norm),
             ("SN", self.spectral_norm), ("BN", self.batch_norm), ("DO", self.dropout_rate > 0),
             ("InN", self.input_noise > 0), ("BCN", self.bc_noise > 0), ("GrN", self.grad_noise > 0),
             (_decay_label(self.l1_ratio), self.weight_decay > 0), ("Sch", self.schedule is not None)]
    return "+".join(name for name, on in parts if on)


def _decay_label(l1_ratio: float) -> str:
  return {0.0: "L2", 1.0: "L1"}.get(float(l1_ratio), "EN")


# ------------------------------------------------------------------------------------------ pure definitions


def feature_norm(x, epsilon: float = 1e-6):
  """FeatureNorm: (x - mean_j x) / sqrt(var_j x + eps) per row (a LayerNorm without scale and bias)."""
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  return (x - mean) * tf.math.rsqrt(variance + epsilon)


def grad_noise_stddev(sigma, step, decay: float = 0.55):
  """The standard deviation of gradient noise at optimizer step `step` (0 for the first update): sigma/(1+t)^decay."""
  return sigma / tf.pow(1.0 + tf.cast(step, tf.float32), decay)


def elastic_decay(theta, weight_decay, l1_ratio):
  """The decoupled decay direction lambda * [(1 - rho) theta + rho sign(theta)] (ActoReg add_elastic_weights)."""
  return weight_decay * ((1.0 - l1_ratio) * theta + l1_ratio * tf.sign(theta))


def scheduled_learning_rate(base_lr, step, schedule: Optional[str], horizon: int):
  """lr at optimizer step `step` (0-based) under the study's schedules (optax's, as ActoReg builds them):
  linear: base -> base/10 over `horizon` steps then constant; cosine: base * (1 + cos(pi min(t, T)/T)) / 2;
  exp: base * 0.99^(t/T). None: constant."""
  base_lr = tf.cast(base_lr, tf.float32)
  t = tf.cast(step, tf.float32)
  frac = tf.minimum(t, float(horizon)) / float(horizon)
  if schedule is None:
    return base_lr
  if schedule == "linear":
    return base_lr + (base_lr / 10.0 - base_lr) * frac
  if schedule == "cosine":
    return base_lr * 0.5 * (1.0 + tf.cos(math.pi * frac))
  if schedule == "exp":
    return base_lr * tf.pow(0.99, t / float(horizon))
  raise ConfigError(f"ActorRegularization.schedule={schedule!r}; expected one of {SCHEDULES}")


# ------------------------------------------------------------------------------------------ the optimizer


class RegularizedAdam(tf.Module):
  """Adam (optax.scale_by_adam: bias-corrected moments, eps outside the square root) + the decoupled elastic
  decay + gradient noise + a learning-rate schedule; ActoReg's `adamw_elastic` chained after its gradient noise.

  Per variable theta with gradient g at step t (0-based):
    g <- g + sigma_t xi                                  (sigma_t = grad_noise / (1 + t)^decay)
    m, v <- Adam moments of g;  u = m_hat / (sqrt(v_hat) + eps) + lambda [(1 - rho) theta + rho sign(theta)]
    theta <- theta - lr_t u
  `apply_gradients(grads_and_vars)` has Keras' calling convention (tf-agents' agents call it that way); the
  variables are given at construction so that every slot exists before a compiled step or a checkpoint restore.
  """

  def __init__(self, learning_rate: float, variables: Sequence[tf.Variable],
               regularization: Optional[ActorRegularization] = None, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-8, seed: int = 0, name: str = "RegularizedAdam"):
    super().__init__(name=name)
    reg = regularization or ActorRegularization()
    self._reg = reg
    self._base_lr = float(learning_rate)
    self._beta_1, self._beta_2, self._epsilon = beta_1, beta_2, epsilon
    self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
    variables = list(variables)
    self._index = {v.ref(): i for i, v in enumerate(variables)}
    self._m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
    self._v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]
    self._noise_rng = tf.random.Generator.from_seed(seed + 104_729)

  def learning_rate(self):
    """The learning rate of the next update."""
    return scheduled_learning_rate(self._base_lr, self.iterations, self._reg.schedule, self._reg.schedule_steps)

  def apply_gradients(self, grads_and_vars):
    reg = self._reg
    step = self.iterations
    lr = self.learning_rate()
    t = tf.cast(step + 1, tf.float32)
    correction_1 = 1.0 - tf.pow(self._beta_1, t)
    correction_2 = 1.0 - tf.pow(self._beta_2, t)
    noise_std = grad_noise_stddev(reg.grad_noise, step, reg.grad_noise_decay) if reg.grad_noise > 0 else None
    for grad, var in grads_and_vars:
      if grad is None:
        continue
      i = self._index.get(var.ref())
      if i is None:
        raise ConfigError(f"RegularizedAdam: variable {var.name} was not given at construction")
      if noise_std is not None:
        seed = tf.cast(self._noise_rng.make_seeds(1)[:, 0], tf.int32)
        grad = grad + noise_std * tf.random.stateless_normal(tf.shape(grad), seed, dtype=grad.dtype)
      m = self._m[i].assign(self._beta_1 * self._m[i] + (1.0 - self._beta_1) * grad)
      v = self._v[i].assign(self._beta_2 * self._v[i] + (1.0 - self._beta_2) * tf.square(grad))
      update = (m / correction_1) / (tf.sqrt(v / correction_2) + self._epsilon)
      if reg.weight_decay > 0:
        update += elastic_decay(var, reg.weight_decay, reg.l1_ratio)
      var.assign_sub(lr * update)
    self.iterations.assign_add(1)
    return self.iterations


# ------------------------------------------------------------------------------------------ the network side

ActorFeatures = collections.namedtuple("ActorFeatures", ["actions", "pre_activations", "features"])
ActorFeatures.__doc__ = """What `agent.actor_features(observations, training=False)` returns.

actions: the actor's deterministic action [B, A] (ReBRAC: pi(s); IQL: the tanh mean mu(s); SAC/CQL/BRAC: tanh of
  the Gaussian's mean). pre_activations: one [B, H] tensor per hidden Dense, before its ReLU (the last one is the
  study's "trunk", on which its dead-neuron / norm / PCA-rank metrics are computed). features: the penultimate
  features [B, H], the input of the output layer (after the last reg block)."""


class SpectralNormDense(tf.keras.layers.Layer):
  """Dense whose kernel W [in, out] is divided by sigma_max estimated by one power iteration per forward
  (flax.linen.SpectralNorm, n_steps 1, eps 1e-12): v = norm(u W^T), u' = norm(v W), sigma = v W u'^T.
  The vector u is stored only when `training` (the reference's update_stats)."""

  def __init__(self, units: int, kernel_initializer, bias_initializer, epsilon: float = 1e-12, **kwargs):
    super().__init__(**kwargs)
    self._units, self._epsilon = units, epsilon
    self._kernel_init, self._bias_init = kernel_initializer, bias_initializer

  def build(self, input_shape):
    self.kernel = self.add_weight("kernel", [int(input_shape[-1]), self._units], initializer=self._kernel_init)
    self.bias = self.add_weight("bias", [self._units], initializer=self._bias_init)
    self.u = self.add_weight("u", [1, self._units], initializer=tf.keras.initializers.RandomNormal(),
                             trainable=False)

  def normalized_kernel(self, training=False):
    normalize = lambda x: x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + self._epsilon)
    v = normalize(tf.matmul(self.u, self.kernel, transpose_b=True))
    u_new = normalize(tf.matmul(v, self.kernel))
    u_new, v = tf.stop_gradient(u_new), tf.stop_gradient(v)
    sigma = tf.squeeze(tf.matmul(tf.matmul(v, self.kernel), u_new, transpose_b=True))
    if training:
      self.u.assign(u_new)
    return self.kernel / tf.where(tf.not_equal(sigma, 0.0), sigma, 1.0)

  def call(self, x, training=False):
    return tf.matmul(x, self.normalized_kernel(training)) + self.bias


class ActorTorso(tf.keras.layers.Layer):
  """x -> [Dense -> ReLU -> reg block] x n -> penultimate features; see the module docstring for the block.

  `forward(x, training)` returns (features, pre_activations). `kernel_initializer`/`bias_initializer` are those
  of the hidden Dense layers (ReBRAC: U(+-1/sqrt(fan_in)) and 0.1; IQL: orthogonal sqrt(2) and 0).
  """

  def __init__(self, hidden_units: Sequence[int], regularization: Optional[ActorRegularization] = None,
               hidden_init: str = "glorot", seed: int = 0, name: str = "ActorTorso"):
    super().__init__(name=name)
    reg = regularization or ActorRegularization()
    self.regularization = reg
    self._hidden = []
    for i, units in enumerate(hidden_units):
      kernel_init, bias_init = hidden_initializers(hidden_init)
      if reg.spectral_norm and i == len(hidden_units) - 1:
        layer = SpectralNormDense(units, kernel_init, bias_init, name=f"hidden_{i}")
      else:
        layer = tf.keras.layers.Dense(units, kernel_initializer=kernel_init, bias_initializer=bias_init,
                                      name=f"hidden_{i}")
      self._hidden.append(layer)
    self._blocks: List[list] = []  # Keras layers, or feature_norm (no weights)
    for i, units in enumerate(hidden_units):
      block = []
      if reg.layer_norm:
        block.append(tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"layer_norm_{i}"))
      if reg.feature_norm:
        block.append(feature_norm)
      if reg.group_norm:
        if units % reg.group_norm_groups:
          raise ConfigError(f"ActorRegularization.group_norm_groups={reg.group_norm_groups} does not divide "
                            f"the hidden width {units}")
        block.append(tf.keras.layers.GroupNormalization(groups=reg.group_norm_groups, epsilon=1e-6,
                                                        name=f"group_norm_{i}"))
      if reg.batch_norm:
        block.append(tf.keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-5, name=f"batch_norm_{i}"))
      self._blocks.append(block)
    self._rng = tf.random.Generator.from_seed(seed + 7919)

  def _seed(self):
    return tf.cast(self._rng.make_seeds(1)[:, 0], tf.int32)

  def forward(self, x, training=False):
    reg = self.regularization
    if training and reg.input_noise > 0:
      x = x + reg.input_noise * tf.random.stateless_normal(tf.shape(x), self._seed(), dtype=x.dtype)
    pre_activations = []
    for dense, block in zip(self._hidden, self._blocks):
      h = dense(x, training=training) if isinstance(dense, SpectralNormDense) else dense(x)
      pre_activations.append(h)
      x = tf.nn.relu(h)
      for layer in block:
        x = layer(x, training=training) if isinstance(layer, tf.keras.layers.Layer) else layer(x)
      if training and reg.dropout_rate > 0:
        x = tf.nn.experimental.stateless_dropout(x, rate=reg.dropout_rate, seed=self._seed())
    return x, pre_activations

  def call(self, x, training=False):
    return self.forward(x, training)[0]

  @property
  def hidden_layers(self):
    return list(self._hidden)


def hidden_initializers(kind: str):
  """(kernel, bias) initializers of hidden Dense layers: 'rebrac' = EDAC's U(+-1/sqrt(fan_in)) kernels and 0.1
  biases (ReBRAC/ActoReg pytorch_init); 'iql' = orthogonal(sqrt 2) and zeros; 'glorot' = Keras' defaults."""
  if kind == "rebrac":
    return tf.keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"), tf.keras.initializers.Constant(0.1)
  if kind == "iql":
    return tf.keras.initializers.Orthogonal(math.sqrt(2.0)), tf.keras.initializers.Zeros()
  if kind == "glorot":
    return tf.keras.initializers.GlorotUniform(), tf.keras.initializers.Zeros()
  raise ConfigError(f"hidden initializer {kind!r}; expected 'rebrac', 'iql' or 'glorot'")


def polyak_variables(network) -> List[tf.Variable]:
  """The floating-point variables of a network (weights, norm statistics, spectral-norm vectors), in order:
  what a Polyak target averages (random-generator states are integers and are left out)."""
  return [v for v in network.variables if v.dtype.is_floating]
