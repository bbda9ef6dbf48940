"""Dr3CqlSacAgent: c0 = 0 against tf-agents' CqlSacAgent, CQL's logsumexp against closed forms, the max-Q backup."""
import numpy as np
import pytest
from scipy.special import logsumexp
import tensorflow as tf
from tf_agents.agents.cql import cql_sac_agent

from batch_rl_dr3.continuous import cql_sac
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import replay as replay_lib
from tests.continuous_fixtures import ACT_DIM, OBS_DIM, batch, make_agent, make_networks, numpy_features, set_policy


def test_c0_zero_gives_the_same_update_as_tf_agents_cql_sac():
  """With c0 = 0 (and the CQL weight at 0, since the two agents draw different uniform actions), one train step
  of our agent moves every critic, actor and alpha variable exactly as tf-agents' CqlSacAgent does."""
  built = []
  for cls, extra in ((cql_sac_agent.CqlSacAgent, {}), (cql_sac.Dr3CqlSacAgent, {"dr3_coefficient": 0.0})):
    critic, actor = make_networks(seed=3)
    set_policy(actor, mean_bias=[0.1, 0.4])
    built.append(make_agent(cls, critic, actor, cql_alpha=0.0, num_cql_samples=4, include_critic_entropy_term=True,
                            use_lagrange_cql_alpha=False, **extra))
  reference, ours = built
  for name in ("_critic_network_1", "_critic_network_2", "_target_critic_network_1", "_target_critic_network_2",
               "_actor_network"):
    getattr(ours, name).set_weights(getattr(reference, name).get_weights())
  results = []
  for agent in built:
    transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in batch(1).items()})
    loss = agent.train(transition)
    results.append((float(loss.extra.critic_loss), float(loss.extra.actor_loss),
                    [v.numpy() for v in agent._critic_network_1.variables + agent._critic_network_2.variables
                     + agent._target_critic_network_1.variables + agent._actor_network.trainable_variables
                     + [agent._log_alpha]]))
  (c_ref, a_ref, vars_ref), (c_ours, a_ours, vars_ours) = results
  assert c_ours == pytest.approx(c_ref, rel=1e-5)
  assert a_ours == pytest.approx(a_ref, rel=1e-5)
  for ours, ref in zip(vars_ours, vars_ref):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)

def test_cql_gap_closed_form_when_q_ignores_the_action():
  """Q(s,a) = q(s): logsumexp over N policy (density ~ e^{+20 d}, negligible) and N uniform samples
  (density 1/2^d) is q(s) + log(N * 2^d), so the gap is log(N) + d log 2 for both agents."""
  num = 6
  gaps = []
  for cls in (cql_sac_agent.CqlSacAgent, cql_sac.Dr3CqlSacAgent):
    critic, actor = make_networks(seed=5)
    # std e^-10: log pi ~ 18 per dimension makes the policy terms negligible (e^-36), while float32 still
    # inverts tanh accurately at that scale (at e^-20 the atanh round trip error exceeds the std).
    set_policy(actor, log_std_bias=-10.0)
    agent = make_agent(cls, critic, actor, cql_alpha=1.0, num_cql_samples=num,
                       include_critic_entropy_term=False, use_lagrange_cql_alpha=False)
    for net in (agent._critic_network_1, agent._critic_network_2):
      kernel, bias = net._hidden[0].get_weights()
      kernel[OBS_DIM:] = 0.0  # the action rows
      net._hidden[0].set_weights([kernel, bias])
    transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in batch(2).items()})
    gaps.append(float(agent._cql_loss(transition.time_step, transition.action_step.action)))
  expected = np.log(num) + ACT_DIM * np.log(2.0)
  assert gaps[0] == pytest.approx(expected, rel=1e-4)
  assert gaps[1] == pytest.approx(expected, rel=1e-4)

def test_importance_sampled_logsumexp_and_cql_gap_by_hand():
  rng = np.random.default_rng(0)
  q_pi, log_pi, q_u = rng.normal(size=(3, 4, 5))
  log_u, temperature = -np.log(8.0), 0.5
  got = losses.importance_sampled_logsumexp(q_pi, log_pi, q_u, log_u, temperature).numpy()
  terms = np.concatenate([q_pi * temperature - log_pi, q_u * temperature - log_u], axis=1)
  np.testing.assert_allclose(got, logsumexp(terms, axis=1) / temperature, rtol=1e-6)
  q_data = rng.normal(size=4)
  assert float(losses.cql_gap(got, q_data)) == pytest.approx(np.mean(got - q_data), rel=1e-6)

def test_max_q_backup_takes_the_max_over_sampled_actions():
  critic, actor = make_networks(seed=11)
  set_policy(actor, log_std_bias=0.0)  # broad policy: the samples differ
  agent = make_agent(cql_sac.Dr3CqlSacAgent, critic, actor, max_q_backup=True, num_backup_samples=7)
  transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in batch(4).items()})
  agent.seed_generator.reset_from_seed(123)
  value, _ = agent._backup_value(transition.next_time_step, include_entropy=False)
  agent.seed_generator.reset_from_seed(123)
  agent._actions_and_log_probs(transition.next_time_step)  # the same draws in the same order
  sampled, _ = agent._sample_and_transpose_actions_and_log_probs(transition.next_time_step, 7)
  obs = transition.next_time_step.observation.numpy()
  q = []
  for net in agent.target_critic_networks:
    per_sample = []
    for j in range(7):
      phi = numpy_features(net, obs, sampled[:, j].numpy())
      kernel, bias = net._q_head.get_weights()
      per_sample.append((phi @ kernel + bias)[:, 0])
    q.append(np.max(np.stack(per_sample, 1), axis=1))
  np.testing.assert_allclose(value.numpy(), np.minimum(q[0], q[1]), rtol=1e-5, atol=1e-6)
