"""DR3 and the srank penalty against hand computations, for every option, with their gradients."""
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import regularizers

PHI = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]], np.float32)
PHI_NEXT = np.array([[2.0, 0.5], [1.0, 2.0], [-1.0, 1.0]], np.float32)
DOTS = np.array([3.0, -2.0, -2.0])  # row-wise phi . phi'


@pytest.mark.parametrize("reduction,use_abs,want", [
    ("mean", True, 7.0 / 3), ("mean", False, -1.0 / 3), ("sum", True, 7.0), ("sum", False, -1.0)])
def test_dr3_reduction_and_abs(reduction, use_abs, want):
  got = regularizers.dr3_penalty(tf.constant(PHI), tf.constant(PHI_NEXT), reduction=reduction,
                                 use_abs=use_abs, stop_gradient_next=False)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dr3_terminal_mask_zeroes_transitions_but_mean_divides_by_batch():
  mask = tf.constant([1.0, 0.0, 1.0])
  got = regularizers.dr3_penalty(tf.constant(PHI), tf.constant(PHI_NEXT), reduction="mean", use_abs=False,
                                 stop_gradient_next=False, mask=mask)
  np.testing.assert_allclose(got, (3.0 - 2.0) / 3, rtol=1e-6)


@pytest.mark.parametrize("stop_gradient_next", [False, True])
def test_dr3_gradients_flow_through_both_sides_unless_stopped(stop_gradient_next):
  phi, phi_next = tf.Variable(PHI), tf.Variable(PHI_NEXT)
  with tf.GradientTape(persistent=True) as tape:
    penalty = regularizers.dr3_penalty(phi, phi_next, reduction="sum", use_abs=False,
                                       stop_gradient_next=stop_gradient_next)
  np.testing.assert_allclose(tape.gradient(penalty, phi), PHI_NEXT)  # d(sum phi.phi')/dphi = phi'
  grad_next = tape.gradient(penalty, phi_next)
  if stop_gradient_next:
    assert grad_next is None
  else:
    np.testing.assert_allclose(grad_next, PHI)


def test_dr3_abs_gradient_is_sign_times_other_side_over_batch():
  phi = tf.Variable(PHI)
  with tf.GradientTape() as tape:
    penalty = regularizers.dr3_penalty(phi, tf.constant(PHI_NEXT), reduction="mean", use_abs=True,
                                       stop_gradient_next=False)
  np.testing.assert_allclose(tape.gradient(penalty, phi), np.sign(DOTS)[:, None] * PHI_NEXT / 3, rtol=1e-6)


def test_dr3_rejects_unknown_reduction():
  with pytest.raises(ValueError, match="reduction='max'"):
    regularizers.dr3_penalty(tf.constant(PHI), tf.constant(PHI_NEXT), reduction="max", use_abs=True,
                             stop_gradient_next=False)


@pytest.mark.parametrize("shape", [(3, 2), (2, 5), (6, 4)])
def test_srank_penalty_is_sigma_max_sq_minus_sigma_min_sq(shape):
  phi = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  sigma = np.linalg.svd(phi.astype(np.float64), compute_uv=False)
  got = regularizers.srank_penalty(tf.constant(phi))
  np.testing.assert_allclose(got, sigma[0] ** 2 - sigma[-1] ** 2, rtol=1e-4)


def test_srank_penalty_gradient_matches_singular_vectors():
  # d sigma_i^2 / d Phi = 2 sigma_i u_i v_i^T for a simple spectrum.
  phi = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
  var = tf.Variable(phi)
  with tf.GradientTape() as tape:
    penalty = regularizers.srank_penalty(var)
  np.testing.assert_allclose(penalty, 9.0 - 1.0, rtol=1e-6)
  want = np.array([[6.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
  np.testing.assert_allclose(tape.gradient(penalty, var), want, atol=1e-5)


def test_dr3_penalty_object_applies_its_form_coefficient_and_replica_share():
  inputs = regularizers.PenaltyInputs(features=tf.constant(PHI), next_features=tf.constant(PHI_NEXT),
                                      mask=tf.constant([1.0, 0.0, 1.0]))
  paper = regularizers.DR3(0.5)
  term, metrics = paper.loss(inputs, local_share=0.25)
  np.testing.assert_allclose(metrics["dr3"], -1.0)           # signed sum
  np.testing.assert_allclose(term, 0.5 * -1.0)               # a sum is not scaled by the replica's share
  dopamine = regularizers.DR3(0.5, reduction="mean", use_abs=True)
  np.testing.assert_allclose(dopamine.loss(inputs, local_share=0.25)[0], 0.5 * 7.0 / 3 * 0.25, rtol=1e-6)
  masked = regularizers.DR3(1.0, reduction="mean", mask_terminal=True)
  np.testing.assert_allclose(masked.value(inputs), (3.0 - 2.0) / 3, rtol=1e-6)
  assert [p.form_name() for p in (paper, dopamine, masked)] == ["paper", "dopamine", "ptr"]
  assert dopamine.label_settings() == {"c0": 0.5, "form": "dopamine"}
  assert regularizers.DR3(0.5, use_abs=True, stop_gradient_next=True).label_settings() == {
      "c0": 0.5, "use_abs": True, "stop_gradient_next": True}
  paper.coefficient.assign(0.0)
  assert float(paper.loss(inputs)[0]) == 0.0
  with pytest.raises(ValueError, match="DR3.reduction='max'"):
    regularizers.DR3(1.0, reduction="max")


# ---- the explicit regularizer's other forms, against direct computations on a tiny network ----------------


def _tiny_q_network(seed=0):
  tf.keras.utils.set_random_seed(seed)
  hidden = tf.keras.layers.Dense(4, activation="tanh")
  head = tf.keras.layers.Dense(3)
  hidden.build((None, 2))
  head.build((None, 4))
  return hidden, head


def _q_pairs(hidden, head, states, actions, next_states, next_actions):
  def q_fn():
    q = tf.gather(head(hidden(states)), actions, axis=1, batch_dims=1)
    q_next = tf.gather(head(hidden(next_states)), next_actions, axis=1, batch_dims=1)
    return q, q_next
  return q_fn


TINY = dict(states=tf.constant([[0.5, -1.0], [1.0, 0.2], [-0.3, 0.7], [0.0, 1.5]]),
            actions=tf.constant([0, 2, 1, 1]),
            next_states=tf.constant([[1.0, 0.2], [-0.3, 0.7], [0.9, -0.4], [0.2, 0.1]]),
            next_actions=tf.constant([2, 1, 1, 0]))


def _loop_gradient_dots(hidden, head, variables, stop_gradient_next):
  """sum_i grad Q(s_i,a_i) . grad Q(s'_i,a'_i), one example at a time with its own tapes."""
  total = 0.0
  for i in range(4):
    with tf.GradientTape() as t1:
      q = head(hidden(TINY["states"][i:i + 1]))[0, TINY["actions"][i]]
    g = t1.gradient(q, variables)
    with tf.GradientTape() as t2:
      q_next = head(hidden(TINY["next_states"][i:i + 1]))[0, TINY["next_actions"][i]]
    h = t2.gradient(q_next, variables)
    if stop_gradient_next:
      h = [tf.stop_gradient(x) for x in h]
    total += sum(tf.reduce_sum(a * b) for a, b in zip(g, h))
  return total


@pytest.mark.parametrize("stop_gradient_next", [False, True])
def test_full_gradient_form_equals_per_example_gradients_in_a_python_loop(stop_gradient_next):
  hidden, head = _tiny_q_network()
  variables = hidden.trainable_variables + head.trainable_variables
  penalty = regularizers.FullGradientDR3(1.0, stop_gradient_next=stop_gradient_next)
  inputs = regularizers.PenaltyInputs(features=tf.zeros([4, 4]), q_fn=_q_pairs(hidden, head, **TINY),
                                      variables=variables)
  with tf.GradientTape() as tape:
    got = penalty.value(inputs)
  got_grads = tape.gradient(got, variables)
  with tf.GradientTape() as tape:
    want = _loop_gradient_dots(hidden, head, variables, stop_gradient_next)
  want_grads = tape.gradient(want, variables)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(float(want)) > 1e-3
  # The second-order term: the penalty's own gradient (None for the head's bias: grad_b Q is a constant).
  assert [g is None for g in got_grads] == [w is None for w in want_grads] == [False, False, False, True]
  for g, w in zip(got_grads[:3], want_grads[:3]):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
  # Over the last layer only, grad_W Q(s,a) . grad_W Q(s',a') = phi(s).phi(s') [a = a'], plus 1 [a = a'] for the
  # bias: check that restriction against the features by hand.
  last = regularizers.per_example_gradient_dot_products(inputs.q_fn, head.trainable_variables)
  phi, phi_next = hidden(TINY["states"]).numpy(), hidden(TINY["next_states"]).numpy()
  same = (TINY["actions"].numpy() == TINY["next_actions"].numpy()).astype(np.float32)
  np.testing.assert_allclose(last, ((phi * phi_next).sum(1) + 1.0) * same, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,dim,eta", [(6, 3, 0.02), (2, 4, 0.02), (5, 8, 0.02), (3, 4, 0.5)],
                         ids=["rank_deficient_gram", "b_below_d", "b5_d8", "unstable"])
def test_label_noise_sigma_solves_the_discrete_lyapunov_equation_as_scipy(batch, dim, eta):
  from scipy import linalg
  rng = np.random.default_rng(batch)
  phi = rng.normal(size=(batch, dim)).astype(np.float32)
  phi_next = rng.normal(size=(batch, dim)).astype(np.float32)
  gamma = np.where(np.arange(batch) == 1, 0.0, 0.9).astype(np.float32)  # one terminal transition
  g = phi.T.astype(np.float64) @ (phi - gamma[:, None] * phi_next)
  m = phi.T.astype(np.float64) @ phi
  a = np.eye(dim) - eta * g
  # G and M live in the span of the phi_i (an invariant subspace of a): scipy solves there (basis from numpy's
  # QR), where the fixed point is unique; outside it, it is 0.
  basis = np.linalg.qr(phi.T.astype(np.float64))[0][:, :min(batch, dim)]
  a_span = basis.T @ a @ basis
  radius = np.max(np.abs(np.linalg.eigvals(a_span)))
  assert (radius > 1.0) == (eta == 0.5)  # the last case: TD unstable on these features, the series diverges
  want = basis @ linalg.solve_discrete_lyapunov(a_span, eta ** 2 * basis.T @ m @ basis) @ basis.T
  np.testing.assert_allclose(a @ want @ a.T + eta ** 2 * m, want, atol=1e-10 * np.abs(want).max())
  got = regularizers.label_noise_sigma(tf.constant(phi), tf.constant(phi_next), tf.constant(gamma), eta)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 * np.abs(want).max())
  # The penalty: sum_i phi_i^T (2 / eta) Sigma* phi'_i, gradient through phi and phi' with Sigma* constant.
  penalty = regularizers.LabelNoiseDR3(1.0, eta=eta)
  features, next_features = tf.Variable(phi), tf.Variable(phi_next)
  with tf.GradientTape(persistent=True) as tape:
    value, metrics = penalty.evaluate(regularizers.PenaltyInputs(features, next_features,
                                                                 discount=tf.constant(gamma)))
  sigma = 2.0 / eta * want
  np.testing.assert_allclose(value, np.einsum("bi,ij,bj->", phi, sigma, phi_next), rtol=1e-4)
  np.testing.assert_allclose(tape.gradient(value, features), phi_next @ sigma.T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tape.gradient(value, next_features), phi @ sigma, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(metrics["label_noise_sigma_trace"], np.trace(sigma), rtol=1e-5)


def test_label_noise_form_equals_dr3_for_supervised_regression_to_first_order():
  # gamma = 0: (2 / eta) Sigma* -> the projection onto the features' span as eta -> 0, so the penalty -> DR3's
  # sum of phi(s).phi(s') for next features inside that span.
  rng = np.random.default_rng(3)
  phi = rng.normal(size=(3, 5)).astype(np.float32)
  phi_next = (rng.normal(size=(3, 3)) @ phi).astype(np.float32)  # in the span of the phi_i
  inputs = regularizers.PenaltyInputs(tf.constant(phi), tf.constant(phi_next), discount=tf.zeros(3))
  got = regularizers.LabelNoiseDR3(1.0, eta=1e-6).value(inputs)
  np.testing.assert_allclose(got, (phi * phi_next).sum(), rtol=1e-3)
