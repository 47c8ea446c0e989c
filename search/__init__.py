"""Proxy training, fidelity, zero-cost scores and the Ray Tune / Optuna search driver."""
