"""Launching sweeps: sweep files (`launch/sweeps/*.toml`, read by `launch.sweep`), the local launcher
(`python -m launch.local`), the XManager launcher for Vertex AI on GCP (`launch/xm_gcp.py`, TPU v2 / v3 and GPUs),
the TPU v4 / v5e / v5p / v6e launchers (`python -m launch.vertex`, `python -m launch.gke`) and `--estimate`
(`launch.estimate`)."""
