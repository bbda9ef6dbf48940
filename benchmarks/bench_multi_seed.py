"""Several seeds in one compiled step (batch_rl_dr3/multi_seed.py) against one run's step, on this CPU.

Entry:
  multi_seed_step_cost
      time per seed-step of N = 4 DQN agents (independent networks, Adam, samplers) trained in one compiled
      `MultiSeedStep`, over the time of one agent's own `train_step()` (same batch size 32, same data),
      timed interleaved. Below 1: the multi-seed step trains seeds faster than separate runs one after the
      other on this machine. Informational: the option is meant for accelerators where one Nature CNN at batch
      32 leaves the chip idle; on 2 CPU cores each step already keeps both busy.
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_SEEDS = 4


def run(quick: bool):
  import spread
  from bench_agents import BATCH_SIZE, NUM_ACTIONS, time_interleaved
  from batch_rl_dr3 import multi_seed
  from batch_rl_dr3.agents import DQN
  from batch_rl_dr3.data import fixed_replay
  from tests.replay_fixtures import write_run
  steps, warmup = (16, 2) if quick else (64, 4)
  with tempfile.TemporaryDirectory() as data_dir:
    directory = write_run(data_dir, game="Pong", run=1, num_checkpoints=2, capacity=2000)
    replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1])
    sampler = lambda seed: fixed_replay.InGraphSampler(replay, batch_size=BATCH_SIZE, seed=seed)
    single = DQN(NUM_ACTIONS, sampler(0))
    members = [DQN(NUM_ACTIONS, sampler(k), seed=k) for k in range(NUM_SEEDS)]
    step = multi_seed.MultiSeedStep(members)
    print(f"  one DQN step vs {NUM_SEEDS} seeds in one compiled step ...", flush=True)
    times = time_interleaved({"single": single.train_step, "multi": lambda: step()[-1]}, steps, warmup)
  # time_interleaved returns per-round seconds per call: the entry is the median over rounds with its spread.
  per_seed = times["multi"] / NUM_SEEDS
  result = spread.entry("multi_seed_step_cost", per_seed * 1e3, times["single"] * 1e3, "ms/seed-step",
                        goal=f"informational (N = {NUM_SEEDS}; < 1 pays off; meant for accelerators)",
                        higher_is_better=False)
  print(f"    single {result['baseline']:.1f} ms/step, {NUM_SEEDS} seeds {result['value'] * NUM_SEEDS:.1f} ms/step "
        f"({result['value']:.1f} ms per seed-step); {spread.describe(result)}", flush=True)
  return [result]

if __name__ == "__main__":
  for entry in run(quick="--quick" in sys.argv):
    print(entry)
