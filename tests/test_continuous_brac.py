"""BracAgent: the sampled KL against the closed-form Gaussian KL, its losses by hand, the value penalty in the target."""
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from batch_rl_dr3.continuous import brac
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import replay as replay_lib
from tests.continuous_fixtures import OBS_DIM, batch, make_agent, make_networks, set_policy


def test_brac_divergence_matches_the_gaussian_kl():
  """KL is invariant under the shared tanh squashing, so the sampled KL(pi || pi_b) must approach the closed-form
  KL between the two pre-tanh diagonal Gaussians."""
  critic, actor = make_networks(seed=7)
  behavior = actor.copy(name="behavior")
  behavior.create_variables()
  mu_p, log_sp = np.array([0.2, -0.1]), np.log([0.3, 0.25])
  mu_b, log_sb = np.array([0.0, 0.1]), np.log([0.35, 0.2])
  set_policy(actor, mu_p, log_sp)
  set_policy(behavior, mu_b, log_sb)
  agent = make_agent(brac.BracAgent, critic, actor, behavior_network=behavior, num_divergence_samples=40000,
                     behavior_action_clip=1e-6)
  time_step = ts.TimeStep(tf.ones([3], tf.int32), tf.zeros([3]), tf.ones([3]),
                          tf.constant(np.random.default_rng(0).normal(size=(3, OBS_DIM)), tf.float32))
  kl = agent.divergence(time_step).numpy()
  sp, sb = np.exp(log_sp), np.exp(log_sb)
  closed = np.sum(np.log(sb / sp) + (sp ** 2 + (mu_p - mu_b) ** 2) / (2 * sb ** 2) - 0.5)
  # The per-sample log-ratio has std ~1.4 here: 40,000 samples give a standard error of 0.007.
  np.testing.assert_allclose(kl, closed, atol=0.025)

def test_brac_losses_by_hand():
  log_pi = np.array([[0.1, -0.2], [0.3, 0.0]])
  log_b = np.array([[-0.5, -0.1], [0.2, -0.4]])
  np.testing.assert_allclose(losses.sampled_kl(log_pi, log_b).numpy(), np.mean(log_pi - log_b, axis=0))
  q, lp, div = np.array([1.0, 2.0]), np.array([-0.5, 0.5]), np.array([0.2, 0.4])
  got = float(losses.brac_actor_loss(q, lp, div, divergence_coefficient=0.1, entropy_coefficient=0.2,
                                     q_weight=1.0))
  assert got == pytest.approx(np.mean(0.2 * lp + 0.1 * div - q))
  warm = float(losses.brac_actor_loss(q, lp, div, divergence_coefficient=0.1, entropy_coefficient=0.2,
                                      q_weight=0.0))
  assert warm == pytest.approx(np.mean(0.2 * lp + 0.1 * div))

def test_brac_value_penalty_lowers_the_target_by_alpha_times_kl():
  built = {}
  for value_penalty in (False, True):
    critic_v, actor_v = make_networks(seed=9)
    behavior = actor_v.copy(name="behavior")
    behavior.create_variables()
    set_policy(actor_v, [0.2, -0.1], np.log([0.3, 0.25]))
    set_policy(behavior, [0.0, 0.1], np.log([0.35, 0.2]))
    built[value_penalty] = make_agent(brac.BracAgent, critic_v, actor_v, behavior_network=behavior,
                                      divergence_coefficient=0.5, value_penalty=value_penalty,
                                      num_divergence_samples=40000)
  for name in ("_critic_network_1", "_critic_network_2", "_target_critic_network_1", "_target_critic_network_2"):
    weights = getattr(built[False], name).get_weights()
    weights[0][OBS_DIM:] = 0.0  # Q ignores the action: the two agents' different a' ~ pi(s') draws don't matter
    for agent in built.values():
      getattr(agent, name).set_weights(weights)
  results = {}
  transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in batch(3).items()})
  for value_penalty, agent in built.items():
    agent.critic_loss(transition.time_step, transition.action_step.action, transition.next_time_step,
                      td_errors_loss_fn=tf.math.squared_difference, gamma=0.9)
    results[value_penalty] = float(agent.critic_metrics["target_q"])
  sp, sb = np.array([0.3, 0.25]), np.array([0.35, 0.2])
  closed = np.sum(np.log(sb / sp) + (sp ** 2 + np.array([0.2, -0.2]) ** 2) / (2 * sb ** 2) - 0.5)
  # target = r + gamma * discount * (V - alpha * KL); all discounts are 1 in this batch.
  assert results[False] - results[True] == pytest.approx(0.9 * 0.5 * closed, abs=0.01)


def test_behavior_policy_is_pretrained_then_frozen_as_brac_runs_it():
  """BRAC fits pi_b alone first (run_bc.sh), then loads it frozen (run_primal.sh's behavior_ckpt_file)."""
  critic, actor = make_networks(seed=3)
  behavior = actor.copy(name="behavior")
  behavior.create_variables()
  agent = make_agent(brac.BracAgent, critic, actor, behavior_network=behavior, behavior_pretrain_steps=60,
                     behavior_optimizer=tf.keras.optimizers.Adam(1e-2), warm_start_steps=0)
  data = batch(4)
  data["action"][:] = np.array([0.5, -0.3], np.float32)  # one action everywhere: max likelihood moves pi_b to it
  transition = replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in data.items()})
  with pytest.raises(tf.errors.InvalidArgumentError, match="behaviour policy is not pre-trained"):
    agent.train(transition)
  nll = lambda: float(agent.behavior_loss(transition.time_step, transition.action_step.action))
  before = nll()
  assert agent.behavior_pretrain_steps_remaining() == 60
  for _ in range(60):
    agent.train_behavior(transition)
  assert int(agent.behavior_steps) == 60 and agent.behavior_pretrain_steps_remaining() == 0
  assert nll() < before - 1.0  # the data's actions became much more likely under pi_b
  frozen = [w.copy() for w in behavior.get_weights()]
  critic_before = [w.copy() for w in critic.get_weights()]
  steps_before = int(agent.train_step_counter)  # tf-agents' default counter is the process-wide global step
  for _ in range(3):
    agent.train(transition)
  for b, a in zip(frozen, behavior.get_weights()):
    np.testing.assert_array_equal(b, a)  # frozen while the agent trains
  assert any(not np.allclose(b, a) for b, a in zip(critic_before, critic.get_weights()))
  assert int(agent.train_step_counter) == steps_before + 3 and int(agent.behavior_steps) == 60
  assert agent.label_settings() == {"behavior_pretrain_steps": 60}  # not BRAC's 300,000: never pooled with it


def test_behavior_pretrain_steps_zero_co_trains():
  critic, actor = make_networks(seed=4)
  behavior = actor.copy(name="behavior")
  behavior.create_variables()
  agent = make_agent(brac.BracAgent, critic, actor, behavior_network=behavior, behavior_pretrain_steps=0)
  assert agent.label_settings() == {"behavior_pretrain_steps": 0}
  before = [w.copy() for w in behavior.get_weights()]
  agent.train(replay_lib.to_tf_agents_transition({k: tf.constant(v) for k, v in batch(5).items()}))
  assert int(agent.behavior_steps) == 1
  assert any(not np.allclose(b, a) for b, a in zip(before, behavior.get_weights()))
  assert make_agent(brac.BracAgent, critic, actor, behavior_network=behavior).label_settings() == {}  # BRAC's own
  with pytest.raises(ValueError, match="behavior_pretrain_steps=-1; expected >= 0"):
    make_agent(brac.BracAgent, critic, actor, behavior_network=behavior, behavior_pretrain_steps=-1)
