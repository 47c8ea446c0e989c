"""Proxy training: how one candidate is trained cheaply and its result recorded.

Modules, bottom-up:

* ``fidelity`` -- :class:`Fidelity`, the frozen proxy recipe stored with every trial.
* ``data`` -- the deterministic subset, decoded once into a memory-mapped cache.
* ``train`` -- the training loop (augmentation, AMP, BatchNorm recalibration, evaluation).
* ``zero_cost`` -- training-free scores (synflow, NASWOT, grad-norm).
* ``record`` -- :class:`TrialRecorder`, the one writer of proxy trial rows (no torch).
* ``trial`` -- the ONE way a candidate is trained (:func:`run_candidate`) and recorded
  (:func:`train_and_record`); the search, the ladder and the fidelity study all go through it.

Importing this package is light (no torch): import the modules you use.
"""
