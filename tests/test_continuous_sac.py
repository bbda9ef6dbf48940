"""Dr3SacAgent: DR3 on the critic against an independent forward pass; the critic's features."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3.continuous import replay as replay_lib
from batch_rl_dr3.continuous import sac
from tests.continuous_fixtures import BATCH, batch, make_agent, make_networks, numpy_features, set_policy


@pytest.mark.parametrize("mask_terminal", [False, True])
def test_dr3_term_value_and_gradient_match_an_independent_computation(mask_terminal):
  """The paper's Eq. 7 (regularizers.DR3's default: signed, summed over the batch, gradient through both sides),
  with and without continuous/dr3.gin's mask of the transition whose s' is a placeholder (row 3 is terminal)."""
  gin.clear_config()
  gin.parse_config(f"DR3.mask_terminal = {mask_terminal}")
  try:
    critic, actor = make_networks()
    set_policy(actor, mean_bias=[0.3, -0.2])  # a' = tanh(mean) up to e^-20 noise
    agent = make_agent(sac.Dr3SacAgent, critic, actor, dr3_coefficient=0.0)
  finally:
    gin.clear_config()
  assert agent.dr3.mask_terminal is mask_terminal and agent.dr3.reduction == "sum"
  data = batch(terminal_at=3)
  mask = np.ones(BATCH)
  if mask_terminal:
    mask[3] = 0.0
  transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in data.items()})
  next_action = np.tile(np.tanh([0.3, -0.2]), (BATCH, 1)).astype(np.float32)
  critics = list(agent.critic_networks)
  variables = critics[0].trainable_variables + critics[1].trainable_variables

  def loss_and_grads(c0):
    agent.dr3_coefficient.assign(c0)
    with tf.GradientTape() as tape:
      loss = agent.critic_loss(transition.time_step, transition.action_step.action, transition.next_time_step,
                               td_errors_loss_fn=tf.math.squared_difference, gamma=0.9)
    return float(loss), tape.gradient(loss, variables)

  base_loss, base_grads = loss_and_grads(0.0)
  c0 = 0.03
  dr3_loss, dr3_grads = loss_and_grads(c0)

  # Value: sum over the batch of the signed phi(s,a).phi(s',a') (masked rows count 0), summed over the critics.
  expected = 0.0
  for critic_net in critics:
    phi = numpy_features(critic_net, data["observation"], data["action"])
    next_phi = numpy_features(critic_net, data["next_observation"], next_action)
    expected += np.sum(mask * np.sum(phi * next_phi, axis=1))
  assert dr3_loss - base_loss == pytest.approx(c0 * expected, rel=1e-4)
  assert float(agent.critic_metrics["dr3"]) == pytest.approx(expected / 2, rel=1e-4)

  # Gradient: what DR3 adds equals c0 * d/dtheta of the penalty recomputed through a separate TF pass.
  with tf.GradientTape() as tape:
    total = 0.0
    for critic_net in critics:
      def phi_of(obs, act):
        x = tf.concat([obs, act], axis=-1)
        for layer in critic_net._hidden:
          x = tf.nn.relu(tf.matmul(x, layer.kernel) + layer.bias)
        return x
      dots = tf.reduce_sum(phi_of(data["observation"], data["action"])
                           * phi_of(data["next_observation"], next_action), axis=1)
      total += tf.reduce_sum(tf.constant(mask, tf.float32) * dots)
  reference = tape.gradient(total, variables)
  for g_dr3, g_base, g_ref, var in zip(dr3_grads, base_grads, reference, variables):
    diff = (g_dr3 - g_base).numpy()
    ref = np.zeros_like(diff) if g_ref is None else c0 * g_ref.numpy()
    np.testing.assert_allclose(diff, ref, atol=1e-4, rtol=1e-3, err_msg=var.name)


def test_critic_features_are_the_input_of_the_q_head():
  critic, _ = make_networks()
  data = batch()
  q, phi = critic.features_and_q((tf.constant(data["observation"]), tf.constant(data["action"])))
  np.testing.assert_allclose(phi.numpy(), numpy_features(critic, data["observation"], data["action"]),
                             rtol=1e-5, atol=1e-6)
  kernel, bias = critic._q_head.get_weights()
  np.testing.assert_allclose(q.numpy(), (phi.numpy() @ kernel + bias)[:, 0], rtol=1e-5, atol=1e-6)
  q_call, _ = critic((tf.constant(data["observation"]), tf.constant(data["action"])))
  np.testing.assert_allclose(q_call.numpy(), q.numpy())
