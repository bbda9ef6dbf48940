"""Representation diagnostics of the DR3 paper: feature dot products, srank, feature norms, average Q.

All are plain TF functions of the penultimate features phi ([B, d]) and Q-values, usable inside the compiled
train step (dot products, norms, Q) or on a fixed evaluation batch (srank needs an SVD, which is kept out of
XLA-compiled code).
"""
import tensorflow as tf

from batch_rl_dr3.regularizers import feature_dot_products

SRANK_DELTA = 0.01

# A step's metrics may carry, for a metric `name`, its weight `name + WEIGHT_SUFFIX` (1.0 on steps that computed
# it, 0.0 on the others): the runner averages such a metric over the steps that computed it only.
WEIGHT_SUFFIX = "#weight"


def weighted(metrics, weight):
  """`metrics` with each one's weight entry (a scalar 0/1 tensor: did this step compute them)."""
  out = dict(metrics)
  out.update({name + WEIGHT_SUFFIX: weight for name in metrics})
  return out


def dot_product_stats(features, next_features):
  """(signed mean, mean of |.|) of the per-transition phi(s, a) . phi(s', a') over the batch."""
  dots = feature_dot_products(features, next_features)
  return tf.reduce_mean(dots), tf.reduce_mean(tf.abs(dots))


def mean_feature_norm(features):
  """Mean over the batch of ||phi(s)||_2."""
  return tf.reduce_mean(tf.norm(features, axis=-1))


def srank(features, delta: float = SRANK_DELTA):
  """Effective rank of Kumar et al. 2021: the smallest k with sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta.

  sigma_i are the singular values of the feature matrix Phi [B, d] in decreasing order. Returns an int32
  scalar (0 for an all-zero matrix).
  """
  singular_values = tf.linalg.svd(tf.cast(features, tf.float64), compute_uv=False)
  total = tf.reduce_sum(singular_values)
  cumulative = tf.math.cumsum(singular_values) / tf.maximum(total, 1e-300)
  reached = cumulative >= 1.0 - delta
  k = tf.argmax(tf.cast(reached, tf.int32), output_type=tf.int32) + 1
  return tf.where(total > 0.0, k, 0)


def average_q(q_values, actions=None):
  """Mean Q over the batch: at the data actions when given (q_data), else of max_a Q (q_max)."""
  if actions is None:
    return tf.reduce_mean(tf.reduce_max(q_values, axis=1))
  chosen = tf.gather(q_values, tf.cast(actions, tf.int32), axis=1, batch_dims=1)
  return tf.reduce_mean(chosen)


# ------------------------------------------------------------------ actor diagnostics (Tarasov et al. 2024, §4)
# Computed on an actor's hidden pre-activations H [n, units] (or post-ReLU features: ReLU(h) > 0 iff h > 0) for a
# fixed batch of states, in inference mode. Rank > 2 inputs (conv activations) count every (position, channel)
# as a unit.
PCA_RANK_THRESHOLD = 0.99


def _rows(features):
  x = tf.convert_to_tensor(features)
  return tf.reshape(x, [tf.shape(x)[0], -1])


def dead_neuron_fraction(pre_activations):
  """Fraction of units whose pre-activation is <= 0 on EVERY row of the batch (its ReLU output is 0 on all of them).

  A strictly positive value on any row counts the unit as alive; no epsilon (ActoReg's `dead_neurons_frac`).
  """
  dead = tf.reduce_all(_rows(pre_activations) <= 0, axis=0)
  return tf.reduce_mean(tf.cast(dead, tf.float32))


def pca_rank(features, threshold: float = PCA_RANK_THRESHOLD):
  """The smallest k with sum_{j<=k} s_j^2 >= threshold * sum_j s_j^2, s the singular values of H (no centring).

  Computed as 1 + #{k : cumsum_k < threshold * total}, as ActoReg does (so an all-zero matrix gives 1). int32.
  """
  singular_values = tf.linalg.svd(tf.cast(_rows(features), tf.float64), compute_uv=False)
  energy = tf.math.cumsum(tf.square(singular_values))
  below = tf.cast(energy < threshold * energy[-1], tf.int32)
  return 1 + tf.reduce_sum(below)


def feature_mean(features):
  """Mean over rows of the per-row mean over units (ActoReg's `feature_means`)."""
  return tf.reduce_mean(tf.reduce_mean(tf.cast(_rows(features), tf.float32), axis=-1))


def feature_std(features):
  """Mean over rows of the per-row population std over units (ActoReg's `feature_stds`)."""
  return tf.reduce_mean(tf.math.reduce_std(tf.cast(_rows(features), tf.float32), axis=-1))


def actor_feature_metrics(pre_activations, features=None) -> dict:
  """The §4 metrics of one batch: `dead_neurons_frac`, `feature_norms`, `feature_means`, `feature_stds`, `pca_rank`
  on the trunk (the last hidden layer's pre-activations, `pre_activations[-1]`), plus `dead_neurons_frac/<i>` per
  hidden layer. `features`, when given, replaces the trunk (e.g. the Nature torso's post-ReLU features)."""
  layers = list(pre_activations) if isinstance(pre_activations, (list, tuple)) else [pre_activations]
  trunk = layers[-1] if features is None else features
  trunk32 = tf.cast(_rows(trunk), tf.float32)
  metrics = {
      "dead_neurons_frac": float(dead_neuron_fraction(trunk)),
      "feature_norms": float(mean_feature_norm(trunk32)),
      "feature_means": float(feature_mean(trunk32)),
      "feature_stds": float(feature_std(trunk32)),
      "pca_rank": float(pca_rank(trunk)),
  }
  if len(layers) > 1:
    for i, layer in enumerate(layers):
      metrics[f"dead_neurons_frac/{i}"] = float(dead_neuron_fraction(layer))
  return metrics


def plasticity_probe(action_fn, variables, observations, actions, optimizer, steps: int = 100,
                     state=None) -> dict:
  """The plasticity probe of Tarasov et al. 2024 as the study intended it (reference §4).

  Trains the actor for `steps` full-batch behaviour-cloning steps on (observations, actions) (the validation split)
  with the actor's own optimizer and its current state, and reports the BC loss after them, each step's gradient
  taken at the parameters the previous step produced. (The authors' code takes all 100 gradients at the original
  parameters and evaluates the loss there, so its logged value is the starting loss; `start_mse` is that number.)
  Afterwards every variable of `state` (default: `variables` and `optimizer`) gets its value back, so training goes
  on from where it was: the probe acts on a copy in effect.

  Args:
    action_fn: observations -> deterministic actions [B, A] computed from `variables` (dropout on where the actor
      has it, as the study trains).
    variables: the actor's trainable variables.
    observations, actions: the BC batch.
    optimizer: the actor's optimizer (a tf.keras optimizer or anything with apply_gradients).
    steps: number of BC steps (the study: 100).
    state: trackables restored afterwards (e.g. also the actor network, whose dropout generator advances).
  Returns:
    {'start_loss': mean over the batch of ||pi(s) - a||^2 summed over action dims (the authors' start_loss),
     'start_mse': per-element MSE before, 'bc_loss': per-element MSE after the `steps` steps}.
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  observations = tf.convert_to_tensor(observations)
  actions = tf.cast(actions, tf.float32)
  variables = list(variables)
  if hasattr(optimizer, "build"):
    optimizer.build(variables)  # its slots exist before the snapshot, so they are restored too
  trackables = list(state) if state is not None else [optimizer]
  snapshot = tf.train.Checkpoint(variables=variables, **{f"state_{i}": t for i, t in enumerate(trackables)})

  def squared_error():
    return tf.square(tf.cast(action_fn(observations), tf.float32) - actions)

  @tf.function
  def bc_step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(squared_error())
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  with tempfile.TemporaryDirectory() as folder:
    path = snapshot.write(f"{folder}/probe")
    start = squared_error()
    for _ in range(steps):
      bc_step()
    after = float(tf.reduce_mean(squared_error()))
    snapshot.read(path).assert_consumed()
  return {"start_loss": float(tf.reduce_mean(tf.reduce_sum(start, axis=-1))),
          "start_mse": float(tf.reduce_mean(start)), "bc_loss": after}


def prop32_condition(features, next_features, gamma, mask=None):
  """The two sides of the DR3 paper's Proposition 3.2 (TD-learning on co-adapted features):

    "if sum_{s,a,s' in D} phi(s,a)^T phi(s',a') >= (1/gamma) sum_{s,a in D} phi(s,a)^T phi(s,a),
     linear TD-learning using features Phi will not converge."

  Returns (dot_sum, norm_bound) = (sum_i m_i phi_i . phi'_i, (1/gamma) sum_i m_i ||phi_i||^2), float32 scalars,
  with m_i the optional [B] mask (e.g. 1 where s' is bootstrapped, so placeholder next states after a terminal
  do not count). The condition holds (non-convergence) when dot_sum >= norm_bound.
  """
  features = tf.cast(features, tf.float32)
  dots = feature_dot_products(features, tf.cast(next_features, tf.float32))
  norms = tf.reduce_sum(tf.square(features), axis=-1)
  if mask is not None:
    mask = tf.cast(mask, tf.float32)
    dots, norms = dots * mask, norms * mask
  return tf.reduce_sum(dots), tf.reduce_sum(norms) / tf.cast(gamma, tf.float32)
