"""Ray Tune per-trial overhead vs a plain Optuna loop, same sampler and trivial objective.

    /work/venv/bin/python bench/bench_search_overhead.py [--trials 60] [--concurrency 1]

Both loops sample the real search space (search_space.DEFAULT_SPACE, define-by-run) with
NSGA-II on two objectives; the objective is analytic (GMACs, a fake accuracy from params), so
the time measured is pure search machinery. Ray start-up is timed separately. Prints seconds per
trial for each and the difference (= what Ray adds to every proxy-training trial).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def objective_values(params: dict) -> tuple[float, float]:
    from search_space.costs import analytic_gmacs, analytic_params
    from search_space.space import DEFAULT_SPACE

    spec = DEFAULT_SPACE.from_params(params)
    acc = 100.0 * (1 - 1 / (1 + analytic_params(spec) / 5e6))
    return acc, analytic_gmacs(spec)


def plain_optuna(n: int, seed: int) -> float:
    import optuna
    from search_space.space import DEFAULT_SPACE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=10, seed=seed))

    def obj(trial):
        DEFAULT_SPACE.suggest(trial)
        return objective_values(trial.params)

    t0 = time.perf_counter()
    study.optimize(obj, n_trials=n)
    return time.perf_counter() - t0


def trivial_trial(config: dict) -> None:
    from ray import tune
    acc, gmacs = objective_values(config)
    tune.report({"top1": acc, "latency_ms": gmacs})


def ray_tune(n: int, seed: int, concurrency: int) -> tuple[float, float]:
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(concurrency)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from search.nas.searcher import SpaceFn
    from search_space.space import DEFAULT_SPACE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20)
    t_init = time.perf_counter() - t0
    searcher = OptunaSearch(space=SpaceFn(DEFAULT_SPACE), metric=["top1", "latency_ms"],
                            mode=["max", "min"],
                            sampler=optuna.samplers.NSGAIISampler(population_size=10, seed=seed))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        tuner = tune.Tuner(
            tune.with_resources(trivial_trial, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n,
                                        max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name="overhead", storage_path=d, verbose=0))
        t0 = time.perf_counter()
        tuner.fit()
        t_fit = time.perf_counter() - t0
    ray.shutdown()
    return t_init, t_fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    t_plain = plain_optuna(a.trials, a.seed)
    t_init, t_fit = ray_tune(a.trials, a.seed, a.concurrency)
    print(f"trials {a.trials}, NSGA-II (population 10), trivial analytic objective")
    print(f"plain optuna loop : {t_plain:7.2f} s total, {1000 * t_plain / a.trials:8.1f} ms/trial")
    print(f"ray tune (conc {a.concurrency}) : {t_fit:7.2f} s total, "
          f"{1000 * t_fit / a.trials:8.1f} ms/trial  (+ ray.init {t_init:.1f} s once)")
    print(f"ray overhead      : {1000 * (t_fit - t_plain) / a.trials:8.1f} ms/trial")


if __name__ == "__main__":
    main()
