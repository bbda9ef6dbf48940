"""The agents' losses as small pure functions of tensors (no variables, no randomness inside).

Every loss returns PER-EXAMPLE values [B]; the agent reduces them (mean over the local batch, or sum divided
by the global batch size under tf.distribute). The forms follow the public reference code:

* Huber TD (Dopamine DQN, `tf.compat.v1.losses.huber_loss`, delta 1) on target r + gamma^n (1 - done) Q'(s', a').
* REM (Agarwal et al. 2020, batch_rl `multi_head`): Q_mix = sum_k w_k Q_k with w = u / sum(u), u ~ U(0,1)^K,
  one fresh draw per train step shared by the online and the target network; Huber TD on Q_mix.
* QR-DQN quantile Huber (Dabney et al. 2018, Eq. 10; Dopamine `jax/agents/quantile`): for online quantile i
  at tau_i = (i + 0.5) / N and target sample j, u_ij = T theta_j - theta_i,
  rho_ij = |tau_i - 1{u_ij < 0}| * Huber_kappa(u_ij) / kappa; loss = sum_i mean_j rho_ij. (Dopamine omits the
  / kappa; identical at kappa = 1, the value every agent here uses.)
* CQL(H) gap (Kumar et al. 2020; aviralkumar2907/CQL `atari/`): logsumexp_a Q(s, a) - Q(s, a_data), Q = mean
  over quantiles for the QR backbone; the agent multiplies by alpha.
* Monte-Carlo regression: Huber(Q(s, a) - return_to_go), the no-bootstrap baseline of the DR3 paper.

Backups (which a' bootstraps the target), the three value-learning curves of the DR3 paper's feature
co-adaptation study:
  'q_learning'  TD learning with the max backup, a' = argmax_a Q_target(s', a) (offline DQN, "TD / Q-learning");
  'sarsa'       TD learning with the dataset's next action a' = a_{t+n} (policy evaluation of the behaviour
                policy, "TD / SARSA");
  'monte_carlo' no bootstrapping: supervised regression on the logged discounted return ("MC regression");
  'behavior_policy' TD learning with a' ~ pi_beta(.|s'), pi_beta cloned from the data ("TD-learning" in the
                paper's Fig. 1: the behaviour policy's value, but from out-of-sample actions); the agent draws
                a' from its `BehaviorPolicy` (agents/behavior_policy.py).
"""
import tensorflow as tf

from batch_rl_dr3.errors import ConfigError

BACKUPS = ("q_learning", "sarsa", "monte_carlo", "behavior_policy")


def check_backup(backup: str, where: str = "backup") -> str:
  if backup not in BACKUPS:
    raise ConfigError(f"{where}={backup!r}; expected one of {BACKUPS}")
  return backup


def huber(errors, delta: float = 1.0):
  """Elementwise Huber: 0.5 x^2 for |x| <= delta, delta (|x| - delta / 2) beyond (tf.compat.v1 huber_loss)."""
  abs_errors = tf.abs(errors)
  quadratic = tf.minimum(abs_errors, delta)
  return 0.5 * quadratic ** 2 + delta * (abs_errors - quadratic)


def select_actions(values, actions):
  """values [B, A, ...] at the given int actions [B] -> [B, ...]."""
  return tf.gather(values, tf.cast(actions, tf.int32), axis=1, batch_dims=1)


def backup_actions(backup: str, next_q_values, next_action):
  """The action a' the backup (and DR3's phi(s', a')) uses at s': argmax of next_q_values or the dataset's."""
  if backup == "sarsa":
    return tf.cast(next_action, tf.int32)
  return tf.argmax(next_q_values, axis=1, output_type=tf.int32)


def bootstrap_target(reward, discount, terminal, next_values):
  """r + discount * (1 - terminal) * next_values, broadcasting over trailing dims (quantiles).

  `discount` is the batch's gamma^n; the (1 - terminal) factor makes the mask explicit even if a data source
  leaves discount at gamma^n on terminal rows. The target carries no gradient.
  """
  scale = discount * (1.0 - terminal)
  extra_dims = len(next_values.shape) - 1
  for _ in range(extra_dims):
    reward, scale = reward[:, None], scale[:, None]
  return tf.stop_gradient(reward + scale * next_values)


def td_huber_loss(chosen_q, target, delta: float = 1.0):
  """Dopamine DQN loss per example: Huber(target - Q(s, a)) [B]."""
  return huber(tf.stop_gradient(target) - chosen_q, delta)


def mc_regression_loss(chosen_q, return_to_go, delta: float = 1.0):
  """Supervised regression of Q(s, a) on the logged Monte-Carlo return, Huber like the TD loss [B]."""
  return huber(tf.stop_gradient(return_to_go) - chosen_q, delta)


def rem_mixture_weights(uniform_draws):
  """REM's random convex combination: u / sum(u) for u ~ U(0, 1)^K (batch_rl's `random_weights`)."""
  return uniform_draws / tf.reduce_sum(uniform_draws, axis=-1, keepdims=True)


def mix_heads(heads, weights):
  """sum_k w_k Q_k: heads [B, A, K], weights [K] -> [B, A]."""
  return tf.linalg.matvec(heads, weights)


def quantile_midpoints(num_quantiles: int):
  return (tf.range(num_quantiles, dtype=tf.float32) + 0.5) / float(num_quantiles)


def quantile_huber_loss(chosen_quantiles, target_quantiles, kappa: float = 1.0):
  """QR-DQN loss per example: chosen [B, N] (online at a), target [B, M] (samples of T Z) -> [B]."""
  # errors[b, i, j] = target_j - theta_i
  errors = tf.stop_gradient(target_quantiles)[:, None, :] - chosen_quantiles[:, :, None]
  tau = quantile_midpoints(chosen_quantiles.shape[-1])[None, :, None]
  weights = tf.abs(tau - tf.cast(errors < 0.0, tf.float32))
  per_pair = weights * huber(errors, kappa) / kappa
  return tf.reduce_sum(tf.reduce_mean(per_pair, axis=2), axis=1)


def cql_gap(q_values, actions):
  """CQL(H) per example: logsumexp_a Q(s, a) - Q(s, a_data) (>= 0; the agent scales it by alpha) [B]."""
  return tf.reduce_logsumexp(q_values, axis=1) - select_actions(q_values, actions)
