"""The proxy fidelity study: does cheap training rank architectures the way ImageNet does?

Modules, bottom-up:

* ``stats`` -- Kendall tau / Spearman rho (scipy.stats), bootstrap intervals over seeds, the
  rank report, learning-curve extrapolation (pure).
* ``settings`` -- :class:`~search.fidelity.settings.Setting`, the built-in sweep, the
  supernet setting, the reference architectures (light: validated before any training).
* ``supernet`` -- the supernet setting's task: one supernet per seed (checkpointed under the
  output, resumable), the references scored as its subnets.
* ``plots`` -- the fidelity/cost curve: a data step and a drawing step.
* ``study`` -- the sweep: trains through ``search.proxy.trial`` in a process pool, records in
  this process, caches every training, summarises.
* ``cli`` -- ``run_search.py fidelity``.

Importing this package is light: import the modules you use.
"""
