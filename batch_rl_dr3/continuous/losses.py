"""Pure loss pieces of the continuous agents (CQL-SAC, BRAC), shared by the agents and checked by hand in tests."""
import tensorflow as tf


def bellman_target(reward, discount, next_value, *, gamma, reward_scale=1.0):
  """reward_scale * r + gamma * discount * V(s'), with no gradient (discount = 0 at terminals)."""
  return tf.stop_gradient(reward_scale * reward + gamma * discount * next_value)


def importance_sampled_logsumexp(q_policy, log_pi, q_uniform, log_uniform_density, temperature=1.0):
  """CQL(H)'s log sum_a exp Q(s, a), estimated from N policy and N uniform samples per state (CQL App. F).

  Each sample is weighted by 1/density, i.e. log-terms T*Q - log p, and the result is divided by T.
  Args: q_policy, log_pi, q_uniform: [B, N]; log_uniform_density: scalar log(1/volume). Returns [B].
  """
  terms = tf.concat([q_policy * temperature - log_pi, q_uniform * temperature - log_uniform_density], axis=1)
  return tf.reduce_logsumexp(terms, axis=1) / temperature


def cql_gap(logsumexp_q, q_data):
  """The CQL(H) regularizer before its weight: mean_batch(logsumexp_a Q(s, a) - Q(s, a_data))."""
  return tf.reduce_mean(logsumexp_q - q_data)


def sampled_kl(log_pi, log_behavior):
  """KL(pi || pi_b)(s) from samples a_i ~ pi(s): mean_i [log pi(a_i|s) - log pi_b(a_i|s)]; [N, B] -> [B]."""
  return tf.reduce_mean(log_pi - log_behavior, axis=0)


def brac_actor_loss(q_values, log_pi, divergence, *, divergence_coefficient, entropy_coefficient, q_weight=1.0):
  """BRAC's policy objective: mean(alpha_ent * log pi(a|s) + alpha * D(s) - q_weight * Q(s, a)), a ~ pi(s).

  `q_weight` is 0 during BRAC's warm start (the policy first only matches the behaviour policy).
  """
  return tf.reduce_mean(entropy_coefficient * log_pi + divergence_coefficient * divergence - q_weight * q_values)


# ------------------------------------------------------------------------------------------ ReBRAC (§1)


def hl_gauss_support(v_min: float, v_max: float, num_classes: int):
  """(edges [K+1], centres [K]) of K equal bins on [v_min, v_max]."""
  edges = tf.linspace(tf.cast(v_min, tf.float32), tf.cast(v_max, tf.float32), num_classes + 1)
  return edges, (edges[:-1] + edges[1:]) / 2.0


def hl_gauss_probs(target, edges, sigma):
  """HL-Gauss target distribution of scalars y [B] over the bins: p_k = (Phi((e_{k+1} - y)/s) - Phi((e_k - y)/s))
  / (Phi((e_K - y)/s) - Phi((e_0 - y)/s) + 1e-6), Phi via erf (ActoReg transform_to_probs). Returns [B, K]."""
  cdf = tf.math.erf((edges[None, :] - tf.cast(target, tf.float32)[:, None]) / (tf.sqrt(2.0) * sigma))
  z = cdf[:, -1] - cdf[:, 0]
  return (cdf[:, 1:] - cdf[:, :-1]) / (z[:, None] + 1e-6)


def hl_gauss_value(logits, centres):
  """Expected value sum_k softmax(z)_k c_k of value-bin logits [..., K]."""
  return tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * centres, axis=-1)


def hl_gauss_cross_entropy(logits, target_probs):
  """Mean over the batch of CE(softmax(z), p) for logits [B, K] and target probabilities [B, K] (no gradient)."""
  return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(target_probs),
                                                                logits=logits))


def noisy_target_actions(actions, noise, *, noise_clip, low=-1.0, high=1.0):
  """TD3's target smoothing: clip(a + clip(noise, -c, c), low, high); `noise` is N(0, policy_noise^2) draws."""
  return tf.clip_by_value(actions + tf.clip_by_value(noise, -noise_clip, noise_clip), low, high)


def squared_action_distance(actions, data_actions):
  """||a - a_data||^2 summed over action dimensions: [B]."""
  return tf.reduce_sum(tf.square(actions - data_actions), axis=-1)


def rebrac_critic_target(reward, discount, next_q, next_bc_penalty, *, gamma, critic_bc_coef):
  """y = r + gamma * discount * (min_i Q_target,i(s', a~') - beta_c ||a~' - a'||^2), no gradient."""
  return tf.stop_gradient(reward + gamma * discount * (next_q - critic_bc_coef * next_bc_penalty))


def rebrac_actor_loss(q_values, bc_penalty, *, actor_bc_coef, normalize_q: bool = True):
  """mean(beta_a * BC - lambda * Q), lambda = 1 / mean|Q| held constant when normalize_q (ReBRAC / TD3+BC)."""
  lam = tf.stop_gradient(1.0 / tf.reduce_mean(tf.abs(q_values))) if normalize_q else 1.0
  return tf.reduce_mean(actor_bc_coef * bc_penalty - lam * q_values)


# ------------------------------------------------------------------------------------------ IQL (§2)


def expectile_loss(diff, expectile):
  """IQL's value loss: mean |tau - 1(u < 0)| u^2 for u = Q(s, a) - V(s)."""
  weight = tf.where(diff > 0, expectile, 1.0 - expectile)
  return tf.reduce_mean(weight * tf.square(diff))


def awr_weights(advantage, *, temperature, max_weight=100.0, log_weight_noise=None):
  """exp(beta * A [+ sigma xi]) clipped above at `max_weight` (IQL's exp_a.clip(max=100)), no gradient.
  `log_weight_noise` is the BC-noise regularizer's sigma * xi (one scalar per sample) or None."""
  log_w = temperature * advantage
  if log_weight_noise is not None:
    log_w += log_weight_noise
  return tf.stop_gradient(tf.minimum(tf.exp(log_w), max_weight))


def awr_actor_loss(weights, log_probs):
  """-mean w * log pi(a|s)."""
  return -tf.reduce_mean(weights * log_probs)
