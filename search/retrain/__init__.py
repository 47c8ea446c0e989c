"""Full-scale retraining of a chosen architecture with the SwiftFormer recipe.

Modules, bottom-up:

* ``config`` -- :class:`~search.retrain.config.RetrainConfig` (the recipe, one reason per
  field), the per-command configs (``RetrainJob``, ``EvaluateConfig``, ``ExportConfig``,
  ``Processes``) and the per-architecture resolution of "auto" (``resolve_recipe``,
  ``scaled_lr``). No torch.
* ``distributed`` -- one process-group setup for torchrun, Slurm, Ray Train and local spawning.
* ``data`` -- ImageFolder checks, the official transforms, samplers and loaders.
* ``losses`` -- DeiT-style distillation, mixup / label smoothing, the teacher.
* ``prepare`` -- every cheap check of a job, before any process starts.
* ``checkpoints`` -- atomic save and bit-identical resume; the final weights and exports.
* ``evaluate`` -- exact sharded top-1/top-5 (and the ``evaluate`` command's worker).
* ``record`` -- the run's row in the results database.
* ``loop`` -- the train loop (``retrain_main``, ``retrain_worker``).
* ``templates``, ``launch`` -- ``export``: arch.json, train_config.json and the torchrun /
  Slurm / Ray Train launch scripts.
* ``cli`` -- ``export``, ``retrain``, ``evaluate``: the only place argparse results are seen.

Importing this package is light (no torch): import the modules you use.
"""
