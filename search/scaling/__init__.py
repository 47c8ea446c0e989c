"""The scaling explorer: compound-scaled families at target latencies, their proxy ladders,
and scaling laws fitted to the results.

Modules, bottom-up:

* ``compound`` -- compound scaling (Tan & Le): coefficients, the scaled spec, the member at a
  target latency, the coefficient search, a family, the comparison with XS/S/L1/L3 (pure).
* ``laws`` -- scaling-law fits with intervals and guarded extrapolation (pure).
* ``plots`` -- the figures: a data step returning plain data, a drawing step that only draws.
* ``family`` -- the ``scale`` command as a library function (:func:`family.scale`).
* ``ladder`` -- proxy-train a stored family through ``search.proxy.trial``.
* ``fit`` -- the ``fit`` command as a library function (:func:`fit.run_fit`).
* ``cli`` -- ``run_search.py scale | ladder | fit``.

The pure API (``compound``, ``laws``) is re-exported here; importing this package stays light
(numpy; scipy on first use, torch only in ``ladder``).
"""
from .compound import (DEFAULT_TOLERANCE, TAN_LE, WIDTH_MULTIPLE, Coefficients, FamilyResult,
                       ScaledMember, check_targets, coefficient_grid, family_comparison,
                       parse_targets, scale_family, scale_spec, scale_to_target,
                       search_coefficients, smallest_spec)
from .laws import ScalingFit, fit_proxy_to_full, fit_scaling_law

__all__ = ["Coefficients", "TAN_LE", "coefficient_grid", "scale_spec", "smallest_spec",
           "scale_to_target", "check_targets", "search_coefficients", "scale_family",
           "FamilyResult", "ScaledMember", "family_comparison", "parse_targets",
           "DEFAULT_TOLERANCE", "WIDTH_MULTIPLE", "ScalingFit", "fit_scaling_law",
           "fit_proxy_to_full"]
