"""A Minari dataset recorded by minari's own DataCollector in gymnasium's Hopper (random actions; short time limit,
so episodes end both by termination and by truncation). Call with MINARI_DATASETS_PATH pointing at a temp folder."""
import gymnasium as gym
import minari
import numpy as np


def record_hopper_dataset(dataset_id: str, episodes: int, max_episode_steps: int, seed: int = 0):
  env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=max_episode_steps))
  rng = np.random.default_rng(seed)
  for episode in range(episodes):
    env.reset(seed=episode)
    done = False
    while not done:
      _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
      done = terminated or truncated
  dataset = env.create_dataset(dataset_id, algorithm_name="random", author="test", author_email="t@example.com",
                               code_permalink="https://example.com", description="random actions in Hopper-v5")
  env.close()
  return dataset
