"""ReBRAC's and IQL's loss pieces (continuous/losses.py) and ReBRAC's value support, against hand computations and
scipy's normal CDF."""
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import rebrac


def test_hl_gauss_probabilities_are_normal_cdf_differences_renormalised():
  edges, centres = losses.hl_gauss_support(-2.0, 3.0, 10)
  np.testing.assert_allclose(edges.numpy(), np.linspace(-2, 3, 11), rtol=1e-6)
  np.testing.assert_allclose(centres.numpy(), np.linspace(-1.75, 2.75, 10), rtol=1e-6)
  sigma = 0.75 * 5.0 / 10
  targets = np.array([0.3, -1.9, 2.99, 3.2])
  got = losses.hl_gauss_probs(tf.constant(targets, tf.float32), edges, sigma).numpy()
  e = np.linspace(-2, 3, 11)
  for row, y in zip(got, targets):
    cdf = stats.norm.cdf((e - y) / sigma)
    want = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0] + 1e-6 / 2)  # erf = 2 Phi - 1: the code's 1e-6 is on 2x scale
    np.testing.assert_allclose(row, want, rtol=2e-4, atol=1e-6)
  # A target inside the support has mass ~1 and mean ~y; just outside it, the mass left is renormalised onto the
  # edge bins.
  assert got[0].sum() == pytest.approx(1.0, abs=1e-4)
  assert float(np.sum(got[0] * centres.numpy())) == pytest.approx(0.3, abs=0.02)
  assert got[3].argmax() == 9


def test_hl_gauss_value_and_cross_entropy_by_hand():
  logits = np.array([[0.1, 2.0, -1.0], [0.5, 0.5, 0.5]], np.float32)
  centres = np.array([-1.0, 0.0, 2.0], np.float32)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(losses.hl_gauss_value(logits, centres).numpy(), (p * centres).sum(1), rtol=1e-6)
  target = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]], np.float32)
  want = np.mean(-(target * np.log(p)).sum(1))
  assert float(losses.hl_gauss_cross_entropy(logits, target)) == pytest.approx(want, rel=1e-6)


def test_expectile_loss_weights_positive_and_negative_errors():
  u = np.array([2.0, -1.0, 0.5, -3.0], np.float32)
  tau = 0.7
  want = np.mean(np.where(u > 0, tau, 1 - tau) * u ** 2)  # (0.7*4 + 0.3*1 + 0.7*0.25 + 0.3*9) / 4
  assert float(losses.expectile_loss(u, tau)) == pytest.approx(want, rel=1e-6)
  assert want == pytest.approx((2.8 + 0.3 + 0.175 + 2.7) / 4)
  # tau = 0.5 is half the squared error.
  assert float(losses.expectile_loss(u, 0.5)) == pytest.approx(0.5 * np.mean(u ** 2), rel=1e-6)


def test_awr_weights_are_clipped_exponentials_without_gradient():
  adv = tf.constant([0.0, 1.0, 10.0, -2.0])
  with tf.GradientTape() as tape:
    tape.watch(adv)
    w = losses.awr_weights(adv, temperature=3.0)
  np.testing.assert_allclose(w.numpy(), [1.0, np.exp(3.0), 100.0, np.exp(-6.0)], rtol=1e-6)
  assert tape.gradient(w, adv) is None
  noisy = losses.awr_weights(adv, temperature=3.0, log_weight_noise=tf.constant([0.5, 0.0, 0.0, 1.0]))
  np.testing.assert_allclose(noisy.numpy(), [np.exp(0.5), np.exp(3.0), 100.0, np.exp(-5.0)], rtol=1e-6)
  log_probs = tf.constant([-1.0, -2.0, 0.5, 3.0])
  assert float(losses.awr_actor_loss(w, log_probs)) == pytest.approx(
      -np.mean(w.numpy() * log_probs.numpy()), rel=1e-6)


def test_rebrac_actor_loss_normalises_q_with_a_constant():
  q = tf.constant([2.0, -4.0, 6.0])
  bc = tf.constant([0.1, 0.2, 0.3])
  with tf.GradientTape() as tape:
    tape.watch(q)
    loss = losses.rebrac_actor_loss(q, bc, actor_bc_coef=0.5, normalize_q=True)
  lam = 1.0 / 4.0  # 1 / mean |q|
  assert float(loss) == pytest.approx(np.mean(0.5 * bc.numpy() - lam * q.numpy()), rel=1e-6)
  # lambda is held constant: dL/dq = -lambda / B exactly (a differentiated lambda would add a |q| term).
  np.testing.assert_allclose(tape.gradient(loss, q).numpy(), np.full(3, -lam / 3), rtol=1e-6)
  plain = losses.rebrac_actor_loss(q, bc, actor_bc_coef=0.5, normalize_q=False)
  assert float(plain) == pytest.approx(np.mean(0.5 * bc.numpy() - q.numpy()), rel=1e-6)


def test_target_actions_and_critic_target_by_hand():
  a = tf.constant([[0.9, -0.2], [0.0, -0.95]])
  noise = tf.constant([[0.3, -0.7], [-0.1, -0.2]])
  got = losses.noisy_target_actions(a, noise, noise_clip=0.5).numpy()
  np.testing.assert_allclose(got, [[1.0, -0.7], [-0.1, -1.0]], rtol=1e-6)
  data_next = tf.constant([[0.5, 0.5], [0.0, 0.0]])
  penalty = losses.squared_action_distance(got, data_next).numpy()
  np.testing.assert_allclose(penalty, [0.25 + 1.44, 0.01 + 1.0], rtol=1e-5)
  y = losses.rebrac_critic_target(tf.constant([1.0, 2.0]), tf.constant([1.0, 0.0]), tf.constant([3.0, 5.0]),
                                  tf.constant(penalty), gamma=0.9, critic_bc_coef=0.1).numpy()
  np.testing.assert_allclose(y, [1.0 + 0.9 * (3.0 - 0.1 * penalty[0]), 2.0], rtol=1e-6)


def test_monte_carlo_returns_split_at_terminals_and_broken_chains():
  obs = np.arange(7, dtype=np.float32)[:, None]
  next_obs = obs + 1
  next_obs[3] = 100.0  # time-out: transition 4 does not start where 3 ended -> bootstrap with 0
  reward = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0])
  discount = np.array([1, 1, 1, 1, 1, 0, 1], np.float32)  # terminal at 5; 6 is an unfinished tail
  g = rebrac.monte_carlo_returns(reward, discount, obs, next_obs, gamma=0.5)
  want = [1 + 0.5 * (2 + 0.5 * (3 + 0.5 * 4)), 2 + 0.5 * (3 + 0.5 * 4), 3 + 0.5 * 4, 4, 1 + 0.5 * 1, 1, 1]
  np.testing.assert_allclose(g, want)
  transitions = {"reward": reward, "discount": discount, "observation": obs, "next_observation": next_obs}
  low, high = rebrac.value_range(transitions, gamma=0.5, v_expand=0.1)
  width = max(want) - min(want)
  assert (low, high) == pytest.approx((min(want) - 0.05 * width, max(want) + 0.05 * width))
  assert rebrac.value_range(transitions, 0.5, v_min=0.0, v_max=100.0, v_expand=-0.05) == pytest.approx((2.5, 97.5))
