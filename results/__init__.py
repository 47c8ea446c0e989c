"""Results database: studies, architectures, trials, metrics, latencies, baselines, retraining.

``results.schema`` (ORM models), ``results.store`` (ResultsStore, the writer/reader API),
``results.queries`` (Pareto front, hypervolume, baseline comparison; pure data),
``results.report`` (table/JSON/CSV rendering), ``results.cli`` (studies/pareto/compare/show).
"""
