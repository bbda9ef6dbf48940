"""srank, dot products, feature norms and average Q against hand computations."""
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import diagnostics


def _matrix_with_singular_values(values, rows=8, cols=6, seed=0):
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(rows, rows)))
  v, _ = np.linalg.qr(rng.normal(size=(cols, cols)))
  s = np.zeros((rows, cols))
  s[range(len(values)), range(len(values))] = values
  return (u @ s @ v.T).astype(np.float32)


def test_srank_on_known_spectra():
  # sum = 100: cumulative shares 0.900, 0.995, 1.0 -> 99 % is reached at k = 2.
  assert int(diagnostics.srank(_matrix_with_singular_values([90, 9.5, 0.5]))) == 2
  # 90, 8.5, 1.5: 98.5 % < 99 % at k = 2, so k = 3.
  assert int(diagnostics.srank(_matrix_with_singular_values([90, 8.5, 1.5]))) == 3
  # equal singular values: all of them are needed.
  assert int(diagnostics.srank(_matrix_with_singular_values([1, 1, 1, 1, 1, 1]))) == 6
  # delta is honoured: delta 0.2 stops at 90 %.
  assert int(diagnostics.srank(_matrix_with_singular_values([90, 9.5, 0.5]), delta=0.2)) == 1
  assert int(diagnostics.srank(np.zeros((4, 3), np.float32))) == 0


def test_dot_products_and_norms():
  phi = tf.constant([[3.0, 4.0], [1.0, 0.0]])
  phi_next = tf.constant([[1.0, 1.0], [-2.0, 5.0]])
  signed, absolute = diagnostics.dot_product_stats(phi, phi_next)
  np.testing.assert_allclose([signed, absolute], [(7.0 - 2.0) / 2, (7.0 + 2.0) / 2])
  np.testing.assert_allclose(diagnostics.mean_feature_norm(phi), (5.0 + 1.0) / 2)


def test_average_q_at_data_actions_and_max():
  q = tf.constant([[1.0, 5.0], [-2.0, -3.0]])
  np.testing.assert_allclose(diagnostics.average_q(q, tf.constant([0, 1])), (1.0 - 3.0) / 2)
  np.testing.assert_allclose(diagnostics.average_q(q), (5.0 - 2.0) / 2)


def test_dead_neuron_fraction_by_hand():
  h = np.array([[1.0, -1.0, 0.0, -2.0, 0.0],
                [-1.0, -3.0, 0.0, 0.5, 0.0],
                [-0.5, -1.0, 0.0, -1.0, 1e-6]], np.float32)
  # column 0 alive (row 0), 1 dead, 2 dead (exactly 0 is not > 0), 3 alive, 4 alive (1e-6 > 0): 2 of 5 dead.
  assert float(diagnostics.dead_neuron_fraction(h)) == pytest.approx(0.4, abs=1e-7)
  # post-ReLU features give the same answer (ReLU(h) > 0 iff h > 0); conv maps count every (position, channel).
  assert float(diagnostics.dead_neuron_fraction(np.maximum(h, 0))) == pytest.approx(0.4, abs=1e-7)
  conv = np.zeros((2, 2, 2, 3), np.float32)
  conv[1, 0, 1, 2] = 1.0
  assert float(diagnostics.dead_neuron_fraction(conv)) == pytest.approx(11 / 12)


def test_pca_rank_on_known_spectra():
  # squared singular values 81, 16, 2, 1 (total 100): cumulative 0.81, 0.97, 0.99, 1.00 -> 99 % reached at k = 3.
  assert int(diagnostics.pca_rank(_matrix_with_singular_values([9, 4, np.sqrt(2), 1]))) == 3
  # the same spectrum under srank's rule (on s, not s^2) needs all 4: the two measures differ.
  assert int(diagnostics.srank(_matrix_with_singular_values([9, 4, np.sqrt(2), 1]))) == 4
  assert int(diagnostics.pca_rank(_matrix_with_singular_values([9, 4, np.sqrt(2), 1]), threshold=0.96)) == 2
  assert int(diagnostics.pca_rank(_matrix_with_singular_values([9, 4, np.sqrt(2), 1]), threshold=0.5)) == 1
  assert int(diagnostics.pca_rank(_matrix_with_singular_values([1, 1, 1, 1, 1, 1]))) == 6
  # no centring: a constant matrix has rank 1 (centring would make it 0).
  assert int(diagnostics.pca_rank(np.full((5, 4), 3.0, np.float32))) == 1


def test_feature_statistics_by_hand():
  h = np.array([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
  # row norms 5 and 2; row means 7/4 and 1; row population stds sqrt(((1.25)^2+(2.25)^2+2*(1.75)^2)/4) and 0.
  std0 = np.sqrt((1.25 ** 2 + 2.25 ** 2 + 2 * 1.75 ** 2) / 4)
  assert float(diagnostics.mean_feature_norm(h)) == 3.5
  assert float(diagnostics.feature_mean(h)) == np.float32((1.75 + 1.0) / 2)
  np.testing.assert_allclose(float(diagnostics.feature_std(h)), std0 / 2, rtol=1e-6)
  # h - 1.5 = [[1.5, 2.5, -1.5, -1.5], [-0.5] * 4]: columns 2 and 3 never positive; row means 0.25 and -0.5.
  layers = [np.array([[-1.0, 2.0], [-1.0, 3.0]], np.float32), h - 1.5]
  metrics = diagnostics.actor_feature_metrics(layers)
  assert metrics["dead_neurons_frac/0"] == 0.5 and metrics["dead_neurons_frac/1"] == 0.5
  assert metrics["dead_neurons_frac"] == 0.5  # the trunk is the last layer
  np.testing.assert_allclose(metrics["feature_means"], (0.25 - 0.5) / 2, rtol=1e-6)
  np.testing.assert_allclose(metrics["feature_norms"], (np.sqrt(1.5 ** 2 * 3 + 2.5 ** 2) + 1.0) / 2, rtol=1e-6)
  # the two rows are independent and the smaller squared singular value holds > 1 % of the energy: rank 2.
  assert metrics["pca_rank"] == 2.0
  features = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
  assert diagnostics.actor_feature_metrics(layers, features=features)["pca_rank"] == 1.0


def test_plasticity_probe_trains_a_copy_and_restores_the_actor():
  """Linear actor a = s W, SGD: 100 full-batch steps against the same recursion in numpy; then everything restored."""
  rng = np.random.default_rng(0)
  s = rng.normal(size=(64, 5))
  a = s @ rng.normal(size=(5, 3)) + 0.1 * rng.normal(size=(64, 3))
  w0 = rng.normal(size=(5, 3))
  w = tf.Variable(w0, dtype=tf.float64)
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.05)
  result = diagnostics.plasticity_probe(lambda obs: obs @ w, [w], s, a.astype(np.float32), optimizer, steps=100)
  wn = w0.copy()
  for _ in range(100):  # d/dW mean((sW - a)^2) = 2 s^T (sW - a) / (B * A)
    wn -= 0.05 * 2 * s.T @ (s @ wn - a) / a.size
  np.testing.assert_allclose(result["bc_loss"], np.mean((s @ wn - a) ** 2), rtol=1e-5)
  np.testing.assert_allclose(result["start_mse"], np.mean((s @ w0 - a) ** 2), rtol=1e-5)
  np.testing.assert_allclose(result["start_loss"], np.mean(np.sum((s @ w0 - a) ** 2, axis=1)), rtol=1e-5)
  assert result["bc_loss"] < 0.5 * result["start_mse"]  # the authors' bug would report start_mse here
  np.testing.assert_array_equal(w.numpy(), w0)  # the actor is untouched
  assert int(optimizer.iterations) == 0


def test_plasticity_probe_keeps_adam_state():
  w = tf.Variable(np.ones((2, 1)), dtype=tf.float32)
  optimizer = tf.keras.optimizers.Adam(learning_rate=0.1)
  s = tf.constant([[1.0, 2.0], [0.5, -1.0]])
  for _ in range(3):  # some training first: the optimizer has state
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(s @ w))
    optimizer.apply_gradients([(tape.gradient(loss, w), w)])
  before = [v.numpy().copy() for v in optimizer.variables] + [w.numpy().copy()]
  diagnostics.plasticity_probe(lambda obs: obs @ w, [w], s, np.zeros((2, 1), np.float32), optimizer, steps=10)
  after = [v.numpy() for v in optimizer.variables] + [w.numpy()]
  assert len(before) == len(after) == 4  # iterations, m, v, w
  for x, y in zip(before, after):
    np.testing.assert_array_equal(x, y)


def test_prop32_condition_sides_by_hand():
  # phi = [[1, 0], [0, 2]], phi' = [[3, 0], [0, 1]]: dots 3 and 2, squared norms 1 and 4.
  phi = tf.constant([[1.0, 0.0], [0.0, 2.0]])
  phi_next = tf.constant([[3.0, 0.0], [0.0, 1.0]])
  dot_sum, bound = diagnostics.prop32_condition(phi, phi_next, 0.5)
  assert (float(dot_sum), float(bound)) == (5.0, 10.0)       # 5 < 10: the condition does not hold
  dot_sum, bound = diagnostics.prop32_condition(phi, phi_next, 0.5, mask=tf.constant([1.0, 0.0]))
  assert (float(dot_sum), float(bound)) == (3.0, 2.0)        # only the first transition: 3 >= 2, it holds
  # And what it predicts: linear TD, theta <- theta + eta sum_i phi_i (gamma phi'_i . theta - phi_i . theta)
  # (zero rewards) grows without bound on the transition where the condition holds and decays on the other.
  for mask, diverges in (([1.0, 0.0], True), ([0.0, 1.0], False)):
    theta = np.ones(2)
    for _ in range(200):
      for i in np.flatnonzero(mask):
        p, q = phi.numpy()[i], phi_next.numpy()[i]
        theta = theta + 0.1 * p * (0.5 * q @ theta - p @ theta)
    assert (np.linalg.norm(theta) > 1e3) == diverges
