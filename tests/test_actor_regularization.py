"""Each actor regularizer against its definition (reference/actor-regularization.md §3), computed by hand, and every
continuous agent taking them through gin."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3.continuous import actor_regularization as ar
from batch_rl_dr3.continuous import experiment
from batch_rl_dr3.errors import ConfigError

OBS = 6


def torso(**kwargs):
  hidden = kwargs.pop("hidden_units", (64, 64))
  net = ar.ActorTorso(hidden, ar.ActorRegularization(**kwargs), hidden_init="rebrac", seed=3)
  net(tf.zeros([1, OBS]))
  return net


def observations(n=256, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(size=(n, OBS)), tf.float32)


def dense(layer, x):
  kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
  return x @ kernel + bias


def test_feature_norm_rows_have_zero_mean_and_unit_variance():
  x = np.random.default_rng(0).normal(3.0, 5.0, size=(16, 64)).astype(np.float32)
  y = ar.feature_norm(tf.constant(x)).numpy()
  np.testing.assert_allclose(y.mean(1), 0.0, atol=1e-5)
  var = x.var(1)
  np.testing.assert_allclose(y.var(1), var / (var + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(y, (x - x.mean(1, keepdims=True)) / np.sqrt(var[:, None] + 1e-6), rtol=1e-4, atol=1e-5)


def test_reg_block_order_layer_norm_after_relu_then_group_norm():
  net = torso(layer_norm=True, group_norm=True)
  x = observations(8).numpy()
  features, pre = net.forward(tf.constant(x))
  h = x
  for i, layer in enumerate(net.hidden_layers):
    z = dense(layer, h)
    np.testing.assert_allclose(pre[i].numpy(), z, rtol=1e-4, atol=1e-4)
    r = np.maximum(z, 0)
    r = (r - r.mean(1, keepdims=True)) / np.sqrt(r.var(1, keepdims=True) + 1e-6)  # LN, gamma 1 beta 0
    g = r.reshape(len(r), 32, -1)  # GroupNorm: 32 groups of 2 features
    g = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + 1e-6)).reshape(r.shape)
    h = g
  np.testing.assert_allclose(features.numpy(), h, rtol=1e-3, atol=1e-3)


def test_dropout_only_in_training_with_inverted_scaling():
  net = torso(dropout_rate=0.25, hidden_units=(512,))
  x = observations(64)
  np.testing.assert_array_equal(net(x, training=False).numpy(), net(x, training=False).numpy())
  clean = np.maximum(dense(net.hidden_layers[0], x.numpy()), 0)
  dropped = net(x, training=True).numpy()
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], clean[kept] / 0.75, rtol=1e-5)
  alive = clean > 0
  assert 1 - kept[alive].mean() == pytest.approx(0.25, abs=0.01)


def test_input_noise_has_the_configured_scale_and_only_in_training():
  net = torso(input_noise=0.3, hidden_units=(OBS,))
  layer = net.hidden_layers[0]
  layer.set_weights([np.eye(OBS, dtype=np.float32), np.zeros(OBS, np.float32)])
  x = observations(20_000)
  _, pre = net.forward(x, training=True)
  diff = pre[0].numpy() - x.numpy()
  assert diff.std() == pytest.approx(0.3, rel=0.02) and abs(diff.mean()) < 0.01
  _, pre_eval = net.forward(x, training=False)
  np.testing.assert_allclose(pre_eval[0].numpy(), x.numpy(), atol=1e-6)


def test_spectral_norm_divides_the_last_hidden_kernel_by_its_power_iteration_estimate():
  net = torso(spectral_norm=True, hidden_units=(32, 48))
  first, last = net.hidden_layers
  assert isinstance(last, ar.SpectralNormDense) and not isinstance(first, ar.SpectralNormDense)
  w, u0 = last.kernel.numpy(), last.u.numpy()
  normalize = lambda a: a / np.sqrt((a ** 2).sum() + 1e-12)
  v = normalize(u0 @ w.T)
  u1 = normalize(v @ w)
  sigma = float(v @ w @ u1.T)
  x = observations(4)
  _, pre = net.forward(x, training=False)
  h1 = np.maximum(dense(first, x.numpy()), 0)
  np.testing.assert_allclose(pre[1].numpy(), h1 @ (w / sigma) + last.bias.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(last.u.numpy(), u0)  # inference leaves the vector alone
  net.forward(x, training=True)
  np.testing.assert_allclose(last.u.numpy(), u1, rtol=1e-5, atol=1e-6)  # float32 noise on entries near 0
  for _ in range(200):
    net.forward(x, training=True)
  top = np.linalg.svd(w, compute_uv=False)[0]
  normalized = last.normalized_kernel().numpy()
  assert np.linalg.svd(normalized, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
  np.testing.assert_allclose(normalized, w / top, rtol=1e-3, atol=1e-6)


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_after():
  net = torso(batch_norm=True, hidden_units=(16,))
  x = observations(128)
  r = np.maximum(dense(net.hidden_layers[0], x.numpy()), 0)
  train = net(x, training=True).numpy()
  np.testing.assert_allclose(train, (r - r.mean(0)) / np.sqrt(r.var(0) + 1e-5), rtol=1e-3, atol=1e-3)
  bn = [l for l in net.submodules if isinstance(l, tf.keras.layers.BatchNormalization)][0]
  np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * r.mean(0), rtol=1e-4, atol=1e-6)  # momentum 0.99
  evaluation = net(x, training=False).numpy()
  np.testing.assert_allclose(evaluation, (r - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-5),
                             rtol=1e-4, atol=1e-5)


def adam_reference(grads, lr, steps, theta0, b1=0.9, b2=0.999, eps=1e-8):
  theta, m, v = theta0.copy(), 0.0, 0.0
  for t in range(1, steps + 1):
    g = grads(theta)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
    theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return theta


def test_regularized_adam_without_regularizers_is_adam():
  theta0 = np.array([1.0, -2.0, 0.5], np.float32)
  var = tf.Variable(theta0)
  opt = ar.RegularizedAdam(0.1, [var])
  for _ in range(5):
    opt.apply_gradients([(2.0 * var - 1.0, var)])
  np.testing.assert_allclose(var.numpy(), adam_reference(lambda th: 2 * th - 1, 0.1, 5, theta0), rtol=1e-5)
  assert int(opt.iterations) == 5


@pytest.mark.parametrize("l1_ratio", [0.0, 1.0, 0.5])
def test_decoupled_decay_moves_weights_by_lr_times_lambda_times_direction(l1_ratio):
  """With a zero gradient Adam's step is 0, so one update moves theta by exactly lr * lambda * [(1-rho) theta +
  rho sign(theta)]: L2 (AdamW), L1 (sign) and elastic net."""
  theta0 = np.array([0.8, -0.3, 2.0, -1.5], np.float32)
  var = tf.Variable(theta0)
  reg = ar.ActorRegularization(weight_decay=0.1, l1_ratio=l1_ratio)
  opt = ar.RegularizedAdam(0.01, [var], reg)
  opt.apply_gradients([(tf.zeros(4), var)])
  direction = (1 - l1_ratio) * theta0 + l1_ratio * np.sign(theta0)
  np.testing.assert_allclose(theta0 - var.numpy(), 0.01 * 0.1 * direction, rtol=1e-4)


@pytest.mark.parametrize("step", [0, 9, 999])
def test_gradient_noise_variance_decays_as_sigma_over_one_plus_t_to_the_055(step):
  sigma = 0.5
  var = tf.Variable(tf.zeros([40_000]))
  opt = ar.RegularizedAdam(1e-3, [var], ar.ActorRegularization(grad_noise=sigma), seed=1)
  opt.iterations.assign(step)
  gradient = tf.fill([40_000], 0.2)
  opt.apply_gradients([(gradient, var)])
  noisy_gradient = opt._m[0].numpy() / 0.1  # first moment after one update: (1 - b1) * (g + noise)
  noise = noisy_gradient - 0.2
  want = sigma / (1.0 + step) ** 0.55
  assert float(ar.grad_noise_stddev(sigma, step)) == pytest.approx(want, rel=1e-6)
  assert noise.std() == pytest.approx(want, rel=0.02)
  assert abs(noise.mean()) < 4 * want / np.sqrt(40_000)


def test_learning_rate_schedules():
  horizon = 1000
  at = lambda schedule, t: float(ar.scheduled_learning_rate(1e-3, t, schedule, horizon))
  assert at(None, 500) == pytest.approx(1e-3)
  assert at("linear", 0) == pytest.approx(1e-3) and at("linear", 500) == pytest.approx(0.55e-3)
  assert at("linear", 5000) == pytest.approx(1e-4)
  assert at("cosine", 500) == pytest.approx(0.5e-3) and at("cosine", 1000) == pytest.approx(0.0, abs=1e-12)
  assert at("exp", 1000) == pytest.approx(0.99e-3) and at("exp", 500) == pytest.approx(1e-3 * 0.99 ** 0.5)
  var = tf.Variable([1.0])
  opt = ar.RegularizedAdam(1e-3, [var], ar.ActorRegularization(schedule="cosine", schedule_steps=4))
  rates = []
  for _ in range(4):
    rates.append(float(opt.learning_rate()))
    opt.apply_gradients([(tf.constant([1.0]), var)])
  np.testing.assert_allclose(rates, [1e-3 * 0.5 * (1 + np.cos(np.pi * t / 4)) for t in range(4)], rtol=1e-5)


def test_bad_settings_get_one_line_naming_the_binding():
  with pytest.raises(ConfigError, match="ActorRegularization.dropout_rate=1.0"):
    ar.ActorRegularization(dropout_rate=1.0)
  with pytest.raises(ConfigError, match="ActorRegularization.schedule='step'"):
    ar.ActorRegularization(schedule="step")
  with pytest.raises(ConfigError, match="group_norm_groups=32 does not divide the hidden width 48"):
    torso(group_norm=True, hidden_units=(48,))
  assert ar.ActorRegularization(layer_norm=True, dropout_rate=0.1, grad_noise=0.003).short_label() == "LN+DO+GrN"
  assert ar.ActorRegularization(weight_decay=1e-3, l1_ratio=0.5).short_label() == "EN"


def _dataset(task, n=128, obs_dim=5, act_dim=2):
  rng = np.random.default_rng(0)
  return ({"observation": rng.normal(size=(n, obs_dim)).astype(np.float32),
           "action": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
           "reward": rng.normal(size=n).astype(np.float32),
           "next_observation": rng.normal(size=(n, obs_dim)).astype(np.float32),
           "discount": np.ones(n, np.float32),
           "next_action": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)}, f"synthetic:{task}")


# CQL-SAC and BRAC build their actor and its optimizer exactly as SAC does (create_continuous_agent): slow only.
@pytest.mark.parametrize("agent_name", [pytest.param(a, marks=pytest.mark.slow) if a in ("cql_sac", "brac") else a
                                        for a in experiment.AGENTS])
def test_every_agent_takes_the_actor_regularizers_from_gin(agent_name):
  gin.clear_config()
  gin.parse_config(["ActorRegularization.layer_norm = True", "ActorRegularization.dropout_rate = 0.1",
                    "ActorRegularization.grad_noise = 0.01", "ActorRegularization.weight_decay = 1e-3",
                    "FeatureCriticNetwork.hidden_units = (32, 32)", "RegularizedActorNetwork.hidden_units = (32, 32)",
                    "ReBracAgent.actor_hidden_units = (32, 32, 32)", "ReBracAgent.critic_hidden_units = (32, 32)",
                    "IqlAgent.hidden_units = (32, 32)", "BracAgent.behavior_pretrain_steps = 2"])
  try:
    exp = experiment.ContinuousExperiment(seed=0, task="hopper-medium-v2", agent_name=agent_name,
                                          load_dataset=_dataset, batch_size=16, eval_episodes=0)
    agent = exp.agent
    gammas = [v for v in agent.actor_network.trainable_variables if "layer_norm" in v.name and "gamma" in v.name]
    assert len(gammas) == len(agent.actor_features(np.zeros((3, 5), np.float32)).pre_activations)
    before = [g.numpy().copy() for g in gammas]
    exp.before_training()  # BRAC's behaviour pre-training, as the runner does before its compiled loop
    for _ in range(2):  # ReBRAC updates its actor on even steps
      exp.train_step()
    assert any(not np.allclose(b, g.numpy()) for b, g in zip(before, gammas))
    optimizers = [getattr(agent, "actor_optimizer", None), getattr(agent, "_actor_optimizer", None)]
    assert any(isinstance(o, ar.RegularizedAdam) and int(o.iterations) >= 1 for o in optimizers)
    label = exp.run_info()["label"]  # the one label rule: regularizers on, then their settings
    assert label.split(" (")[0].split("+")[1:] == ["LN", "DO", "GrN", "L2"] and "dropout_rate=0.1" in label
    assert exp.run_info()["actor_regularization"]["dropout_rate"] == 0.1
    # Dropout is off outside training: two inference passes agree.
    f1, f2 = (agent.actor_features(np.ones((3, 5), np.float32)).features.numpy() for _ in range(2))
    np.testing.assert_array_equal(f1, f2)
  finally:
    gin.clear_config()
