"""launch/small_evidence.py: the claim checks on synthetic runs (fast), and the whole pipeline (slow)."""
import csv
import json
import os

import numpy as np
import pytest

from launch import small_evidence


def _write(root, arm, game, seed, dot, srank, q):
  folder = os.path.join(root, small_evidence.SWEEP, arm, game, f"seed{seed}")
  os.makedirs(folder)
  with open(os.path.join(folder, "run_info.json"), "w") as f:
    json.dump({"domain": "atari", "game": game, "agent": "dqn", "label": arm, "setting": "all", "seed": seed}, f)
  with open(os.path.join(folder, "metrics.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, ["iteration", "gradient_steps", "train/dot_product", "train/srank",
                                "train/fixed_batch/q_data"])
    writer.writeheader()
    for i, (d, s, v) in enumerate(zip(dot, srank, q)):
      writer.writerow({"iteration": i, "gradient_steps": 200 * (i + 1), "train/dot_product": d, "train/srank": s,
                       "train/fixed_batch/q_data": v})


def test_claims_are_computed_from_first_and_last_iterations(tmp_path):
  root = str(tmp_path)
  curves = {  # arm -> (dot product first..last, srank) per seed offset
      "monte_carlo": ([1.0, 1.1, 1.0], [100, 100, 100]),
      "sarsa": ([0.5, 0.6, 0.55], [100, 99, 98]),
      "td_behavior_policy": ([0.5, 1.5, 3.0], [100, 90, 80]),
      "q_learning": ([0.4, 2.0, 4.0], [120, 100, 90]),
      "q_learning+dr3": ([0.05, 0.04, 0.05], [140, 140, 141]),
  }
  for arm, (dot, srank) in curves.items():
    for seed in (0, 1):
      _write(root, arm, "Breakout", seed, np.array(dot) + 0.01 * seed, srank, [0.1, 0.2, 0.3])
  # Seaquest: Q-learning's dot product falls, so the growth claim fails there.
  for arm, (dot, srank) in curves.items():
    _write(root, arm, "Seaquest", 0, dot[::-1] if arm == "q_learning" else dot, srank, [0.1, 0.1, 0.1])
  arms = small_evidence.load_arms(root)
  assert sorted(arms) == sorted(small_evidence.ARMS) and len(arms["q_learning"]["Breakout"]) == 2
  claims = small_evidence.check_claims(arms)

  def claim(game, words):
    (found,) = [c for c in claims if c["game"] == game and c["claim"].startswith(words)]
    return found

  grows = claim("Breakout", "Without DR3 (Q-learning) the feature dot product grows")
  assert grows["holds"] and grows["measured"] == "0.405 -> 4" and grows["seeds_agreeing"] == "2/2"
  assert not claim("Seaquest", "Without DR3 (Q-learning) the feature dot product grows")["holds"]
  srank = claim("Breakout", "Without DR3 (Q-learning) srank falls")
  assert srank["holds"] and srank["measured"] == "120 -> 90"
  dr3 = claim("Breakout", "With DR3 the dot product stays low")
  assert dr3["holds"] and dr3["seeds_agreeing"] == "2/2"
  # min(Q-learning 4.005, TD 3.005) > max(MC 1.005, SARSA 0.555)
  ordering = claim("Breakout", "Fig. 1 ordering")
  assert ordering["holds"] and ordering["seeds_agreeing"] == "2/2"
  flat = claim("Breakout", "Fig. 1: dot products of SARSA and MC regression flat")
  assert flat["holds"] and "MC regression x1.00" in flat["measured"]
  written = small_evidence.write_outputs(arms, str(tmp_path / "docs"), str(tmp_path / "out"))
  assert sorted(os.path.basename(p) for p in written) == ["small_evidence.md", "small_evidence_dr3.png",
                                                          "small_evidence_fig1.png"]
  assert "| **no** |" in open(tmp_path / "docs" / "small_evidence.md").read()  # Seaquest's failed claim shown


# The claims that reproduce at this scale (docs/small_evidence.md, README's Replication section): the slow test
# holds the documented pipeline to them. The others are reported there, honestly, as not reproduced in small.
REPRODUCED = ("Without DR3 (Q-learning) the feature dot product grows over training",
              "Without DR3 (Q-learning) srank falls over training",
              "With DR3 the dot product stays low",
              "Fig. 1: Q-learning's dot product grows more than offline SARSA's and MC regression's")


@pytest.mark.slow
def test_documented_pipeline_reproduces_the_claims_on_learning_agent_data(tmp_path):
  """`python -m launch.small_evidence` end to end (collection with a learning DQN, the sweep, the claims) on
  seeds 0 and 1: about 20 minutes on 2 CPU cores."""
  code = small_evidence.main(["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), "--max_parallel",
                              "2", "--launcher_args=--only=seed=seed0,seed1"])
  assert code == 0
  claims = json.load(open(tmp_path / "out" / "claims.json"))
  for game in small_evidence.GAMES:
    for text in REPRODUCED:
      (claim,) = [c for c in claims if c["game"] == game and c["claim"].startswith(text)]
      assert claim["holds"], claim
  for name in ("small_evidence_fig1.png", "small_evidence_dr3.png", "small_evidence.md"):
    assert (tmp_path / "docs" / name).stat().st_size > 1000
