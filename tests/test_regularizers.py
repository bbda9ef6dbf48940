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
