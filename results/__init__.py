"""Results database: studies, architectures, trials, metrics, latencies, baselines, families,
retraining; and every view of them.

``results.schema`` (ORM models only), ``results.store`` (ResultsStore, the writer/reader API),
``results.families`` (architecture families: save / get / the family view),
``results.pareto`` (the one Pareto front / hypervolume / reference rule; pure numpy),
``results.study_front`` (the one front of a study, as every view shows it),
``results.queries`` (fronts over any selection of trials, baseline comparison; pure data),
``results.report`` (table/JSON/CSV rendering), ``results.options`` (``--db``, ``open_store``),
``results.cli`` (studies/pareto/compare/show/results-upgrade) and ``results.dashboard`` (web
page, JSON API, offline report).
"""
