r"""The DR3 paper's qualitative claims, reproduced in small on CPU (the README's Replication section).

    python -m launch.small_evidence --out=evidence_out --docs=docs --max_parallel=1

1. collects Breakout and Seaquest datasets with `python -m batch_rl_dr3.data.collect --policy=dqn` (a DQN that
   learns while it logs, as the DQN Replay data was made; `COLLECT_FLAGS`), skipped when already there;
2. trains the sweep `launch/sweeps/small_evidence.toml` with the local launcher (`python -m launch.local`):
   Monte-Carlo regression, offline SARSA, TD-learning with a' ~ pi_beta, Q-learning, and Q-learning + DR3, on
   both games with 3 seeds (finished runs are skipped, unfinished ones resume);
3. draws the figures (`<docs>/small_evidence_fig1.png`: the paper's Fig. 1, dot products and average Q of the
   four backups; `<docs>/small_evidence_dr3.png`: dot products and srank of Q-learning with and without DR3) and
   checks the claims (`check_claims`), written to `<docs>/small_evidence.md` and `<out>/claims.json`.

Exit code 0 when every run finished (whether or not each claim holds: the table says which do), 1 otherwise.
About 20 minutes of one CPU core for the training, plus ~6 minutes per game of collection.
"""
import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

import numpy as np

from batch_rl_dr3 import REPO_ROOT

SWEEP = "small_evidence"
GAMES = ("Breakout", "Seaquest")
# The logging DQN's schedule, Dopamine's dqn.gin scaled to a 5,000-step budget (min_replay_history 20000 -> 500,
# target_update_period 8000 -> 500 agent steps, epsilon_decay_period 250000 -> 2000); capacity 1,000 rows per
# checkpoint so that each dataset has 5 logged checkpoints plus the final partial one, like the real layout.
COLLECT_FLAGS = ("--num_transitions=5000", "--capacity=1000", "--policy=dqn", "--learning_starts=500",
                 "--target_update_period=500", "--epsilon_decay_steps=2000", "--seed=0", "--run=1")
ARMS = {  # sweep label -> name in the figures
    "monte_carlo": "MC regression",
    "sarsa": "offline SARSA",
    "td_behavior_policy": "TD-learning, a' ~ pi_beta",
    "q_learning": "Q-learning (DQN)",
    "q_learning+dr3": "Q-learning + DR3",
}
FIG1_ARMS = ("monte_carlo", "sarsa", "td_behavior_policy", "q_learning")
FIG1_METRICS = (("train/dot_product", "phi(s,a).phi(s',a')"), ("train/fixed_batch/q_data", "average Q(s,a)"))
DR3_METRICS = (("train/dot_product", "phi(s,a).phi(s',a')"), ("train/srank", "srank(delta=0.01)"))


def collect_data(data_root: str, games: Sequence[str] = GAMES, collect_flags: Sequence[str] = COLLECT_FLAGS) -> None:
  """Runs the collect tool for each game unless its dataset (with these flags) is already complete."""
  for game in games:
    marker = os.path.join(data_root, f".collected-{game}-" + "".join(f.strip("-") for f in collect_flags))
    if os.path.exists(marker):
      continue
    run_dir = os.path.join(data_root, game, "1")
    if os.path.isdir(run_dir):  # an interrupted or different collection
      subprocess.run(["rm", "-rf", run_dir], check=True)
    command = [sys.executable, "-m", "batch_rl_dr3.data.collect", f"--game={game}", f"--out={data_root}"]
    subprocess.run(command + list(collect_flags), check=True, cwd=REPO_ROOT)
    open(marker, "w").close()


def run_sweep(root: str, data_root: str, *, max_parallel: int = 1, extra: Sequence[str] = ()) -> int:
  """The local launcher on the sweep; `extra` are more launcher arguments (e.g. --only, --gin_files)."""
  command = [sys.executable, "-m", "launch.local", "--sweep", SWEEP, "--root", root, "--data_dir", data_root,
             "--max_parallel", str(max_parallel)] + list(extra)
  return subprocess.run(command, cwd=REPO_ROOT, check=False).returncode


def load_arms(root: str) -> Dict[str, Dict[str, list]]:
  """arm -> game -> runs, read from the sweep's run folders `<root>/small_evidence/<arm>/<game>/<seed>`."""
  from batch_rl_dr3.analysis.runs import load_runs  # pylint: disable=import-outside-toplevel
  arms: Dict[str, Dict[str, list]] = {}
  for arm in ARMS:
    folders = os.path.join(root, SWEEP, arm, "*", "*")
    for run in load_runs([folders], warn=lambda message: None) if _exists(folders) else []:
      arms.setdefault(arm, {}).setdefault(run.env, []).append(run)
  return arms


def _exists(pattern: str) -> bool:
  import glob  # pylint: disable=import-outside-toplevel
  return bool(glob.glob(pattern))


def _first_last(runs: list, column: str):
  """Per run (first iteration's value, last iteration's value) of `column`."""
  values = [run.column(column) for run in runs]
  return np.array([[v[0], v[-1]] for v in values if v is not None and len(v)])


def check_claims(arms: Dict[str, Dict[str, list]]) -> List[Dict[str, object]]:
  """The paper's qualitative claims, per game, on the means over seeds (and how many seeds agree)."""
  claims = []

  def add(claim, game, measured, holds, seeds_agreeing):
    claims.append({"claim": claim, "game": game, "measured": measured, "holds": bool(holds),
                   "seeds_agreeing": seeds_agreeing})

  games = sorted({game for by_game in arms.values() for game in by_game})
  for game in games:
    runs = {arm: arms.get(arm, {}).get(game, []) for arm in ARMS}
    dot = {arm: _first_last(r, "train/dot_product") for arm, r in runs.items() if r}
    if "q_learning" in dot:
      first, last = dot["q_learning"].mean(axis=0)
      add("Without DR3 (Q-learning) the feature dot product grows over training", game,
          f"{first:.3g} -> {last:.3g}", last > first,
          f"{int((dot['q_learning'][:, 1] > dot['q_learning'][:, 0]).sum())}/{len(dot['q_learning'])}")
      srank = _first_last(runs["q_learning"], "train/srank")
      first, last = srank.mean(axis=0)
      add("Without DR3 (Q-learning) srank falls over training", game, f"{first:.3g} -> {last:.3g}", last < first,
          f"{int((srank[:, 1] < srank[:, 0]).sum())}/{len(srank)}")
    if "q_learning" in dot and "q_learning+dr3" in dot:
      with_dr3, without = dot["q_learning+dr3"][:, 1], dot["q_learning"][:, 1]
      n = min(len(with_dr3), len(without))
      add("With DR3 the dot product stays low (final, Q-learning + DR3 vs Q-learning)", game,
          f"{with_dr3.mean():.3g} vs {without.mean():.3g} (DR3 run: {dot['q_learning+dr3'][:, 0].mean():.3g} at "
          f"the first iteration)", with_dr3.mean() < without.mean(),
          f"{int((with_dr3[:n] < without[:n]).sum())}/{n}")
    if all(arm in dot for arm in FIG1_ARMS):
      final = {arm: dot[arm][:, 1].mean() for arm in FIG1_ARMS}
      out_of_sample = min(final["q_learning"], final["td_behavior_policy"])
      in_sample = max(final["monte_carlo"], final["sarsa"])
      per_seed = [min(dot["q_learning"][i, 1], dot["td_behavior_policy"][i, 1])
                  > max(dot["monte_carlo"][i, 1], dot["sarsa"][i, 1])
                  for i in range(min(len(dot[a]) for a in FIG1_ARMS))]
      add("Fig. 1 ordering: final dot products of Q-learning and TD (a' ~ pi_beta) above offline SARSA and MC "
          "regression", game, ", ".join(f"{ARMS[a]} {final[a]:.3g}" for a in FIG1_ARMS), out_of_sample > in_sample,
          f"{sum(per_seed)}/{len(per_seed)}")
      growth = {arm: dot[arm][:, 1].mean() / max(dot[arm][:, 0].mean(), 1e-12) for arm in FIG1_ARMS}
      add("Fig. 1: Q-learning's dot product grows more than offline SARSA's and MC regression's", game,
          ", ".join(f"{ARMS[a]} x{growth[a]:.2f}" for a in ("q_learning", "sarsa", "monte_carlo")),
          growth["q_learning"] > max(growth["sarsa"], growth["monte_carlo"]), "")
      add("Fig. 1: dot products of SARSA and MC regression flat (grow less than Q-learning's and TD's)", game,
          ", ".join(f"{ARMS[a]} x{growth[a]:.2f}" for a in FIG1_ARMS),
          max(growth["monte_carlo"], growth["sarsa"]) < min(growth["q_learning"], growth["td_behavior_policy"]),
          "")
  return claims


def claims_markdown(claims: List[Dict[str, object]], arms: Dict[str, Dict[str, list]]) -> str:
  seeds = sorted({len(r) for by_game in arms.values() for r in by_game.values()})
  lines = ["# Small-scale evidence (written by `python -m launch.small_evidence`)", "",
           f"Runs per arm and game: {seeds}. Values: means over seeds, first -> last iteration unless stated.", "",
           "| claim | game | measured | holds | seeds agreeing |", "|---|---|---|---|---|"]
  for c in claims:
    lines.append(f"| {c['claim']} | {c['game']} | {c['measured']} | {'yes' if c['holds'] else '**no**'} | "
                 f"{c['seeds_agreeing']} |")
  return "\n".join(lines) + "\n"


def write_outputs(arms: Dict[str, Dict[str, list]], docs_dir: str, out_dir: str) -> List[str]:
  from batch_rl_dr3.analysis import plots  # pylint: disable=import-outside-toplevel
  os.makedirs(docs_dir, exist_ok=True)
  written = []
  fig1 = os.path.join(docs_dir, "small_evidence_fig1.png")
  if plots.plot_metrics_by_env({ARMS[a]: arms[a] for a in FIG1_ARMS if a in arms}, FIG1_METRICS,
                               "Fig. 1 in small: the four backups (no DR3), mean over seeds, band min-max", fig1):
    written.append(fig1)
  dr3 = os.path.join(docs_dir, "small_evidence_dr3.png")
  if plots.plot_metrics_by_env({ARMS[a]: arms[a] for a in ("q_learning", "q_learning+dr3") if a in arms},
                               DR3_METRICS, "Q-learning with and without DR3 (paper's Eq. 7 form)", dr3):
    written.append(dr3)
  claims = check_claims(arms)
  md = os.path.join(docs_dir, "small_evidence.md")
  with open(md, "w") as f:
    f.write(claims_markdown(claims, arms))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "claims.json"), "w") as f:
    json.dump(claims, f, indent=2)
  return written + [md]


def main(argv: Sequence[str] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="evidence_out", help="Folder for the datasets (data/) and runs (runs/).")
  parser.add_argument("--docs", default=os.path.join(REPO_ROOT, "docs"), help="Where the figures and the "
                      "claims table go.")
  parser.add_argument("--max_parallel", type=int, default=1, help="Runs at a time (1 = one CPU core).")
  parser.add_argument("--launcher_args", action="append", default=[], help="More arguments for launch.local, "
                      "e.g. --launcher_args=--only=seed=seed0.")
  parser.add_argument("--skip_training", action="store_true", help="Only redraw figures and claims.")
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  data_root, root = os.path.join(out, "data"), os.path.join(out, "runs")
  code = 0
  if not args.skip_training:
    collect_data(data_root)
    code = run_sweep(root, data_root, max_parallel=args.max_parallel, extra=args.launcher_args)
  arms = load_arms(root)
  for path in write_outputs(arms, args.docs, out):
    print(f"wrote {path}")
  for claim in check_claims(arms):
    print(f"{'HOLDS' if claim['holds'] else 'FAILS'}  {claim['game']}: {claim['claim']}: {claim['measured']}")
  return 1 if code else 0


if __name__ == "__main__":
  sys.exit(main())
