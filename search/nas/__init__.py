"""The architecture search: Ray Tune + Optuna over the SwiftFormer space (``run_search.py search``).

Modules, bottom-up (no cycles; see ``.importlinter``):

* ``config`` -- :class:`SearchConfig` (the command line is derived from it) and ``resolve``,
  the validation before any heavy work, returning a typed :class:`ResolvedSearch`.
* ``progress`` -- the concise progress lines.
* ``context`` -- :class:`SearchContext`, the driver-process state (store, predictor, data)
  injected into the searcher and the callback; every trial row goes through its
  ``search.proxy.record.TrialRecorder``.
* ``searcher`` -- :class:`ArchSearcher`, Optuna inside a Tune ``Searcher``: baselines, latency
  budget, reuse of earlier trainings, pre-ranking, resume from its checkpoint.
* ``callback`` -- :class:`StoreCallback`, records every Tune trial.
* ``trainable`` -- the Ray trainable (``search.proxy.trial.run_candidate`` in a worker).
* ``supernet_trial`` -- the supernet's Ray trainable and its checkpoint's way back to the
  driver (``DriverCheckpoint``); ``supernet_search`` -- the two-rung ladder the driver runs.
* ``report`` -- the end-of-search report, from ``results.study_front``.
* ``driver`` -- :func:`run_search`: validate, prepare data, open the study, run the Tuner.
* ``cli`` -- the ``search`` sub-command and the no-argument default run.

Importing this package is light (no torch, no ray): import the modules you use.
"""
