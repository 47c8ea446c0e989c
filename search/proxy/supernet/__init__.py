"""Weight-sharing supernet proxy: train one SwiftFormer supernet, score many subnets cheaply.

Modules, bottom-up:

* ``config`` -- :class:`SupernetConfig`, the frozen training/scoring recipe (fields carry the
  reasoning), and the mapping from a search-space spec to the spec the supernet scores.
* ``model`` -- :class:`Supernet`: one parameter store covering a whole ``SearchSpace``; any
  member is a prefix slice of it (:meth:`Supernet.extract` gives a ``build_model(spec)`` state
  dict, strict).
* ``training`` -- the sandwich rule with in-place distillation, checkpointed every epoch and
  resumable after a kill (:func:`train_supernet`); data-parallel over several processes
  inside a process group, or spawned locally (:func:`train_supernet_ranks`).
* ``scoring`` -- BatchNorm recalibration + top-1 of subnets (:func:`score_subnets`) and the
  XS/S/L1/L3 ranking against ImageNet (:func:`reference_ranking`).

Importing this package is light (no torch): import the modules you use.
See notes/supernet.md for the design, the published systems it follows and the measurements.
"""
