"""The ladder: proxy-train every member of a stored family (the data the scaling laws are fitted
to). Each training goes through the one path of ``search.proxy.trial`` (``train_and_record``),
so a ladder trial row means what a search trial row means.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from search.proxy.data import ProxyData
from search.proxy.fidelity import Fidelity
from search.proxy.record import TrialRecorder
from search.proxy.trial import train_and_record
from search_space.costs import analytic_gmacs, analytic_params
from search_space.spec import PRESETS, ArchSpec

__all__ = ["run_ladder", "ladder_jobs"]


def ladder_jobs(family: Mapping[str, Any], baselines: bool
                ) -> list[tuple[str, ArchSpec, float | None, float | None]]:
    """(key, spec, predicted latency, its std) per member of ``family`` (as
    ``results.families.get_family`` returns it), then XS/S/L1/L3 with ``baselines`` (latency
    unknown here: predicted by the caller)."""
    jobs = [(f"member{m['position']}", ArchSpec.from_dict(m["spec"]), m.get("latency_ms"),
             m.get("latency_std_ms")) for m in family["members"]]
    if baselines:
        jobs += [(name, spec, None, None) for name, spec in PRESETS.items()]
    return jobs


def run_ladder(store, family: Mapping[str, Any], *, fidelity: Fidelity, data: ProxyData,
               seed: int = 0, study: str | None = None, baselines: bool = False,
               torch_device: str = "auto", threads: int | None = None, predictor=None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Proxy-train every member of a stored family (and optionally XS/S/L1/L3) at ``fidelity``
    on ``data``; each run is a trial of study ``study`` (default ladder-<family>). Resumable:
    COMPLETED trials are skipped (a FAILED or interrupted one is trained again in its row).
    Returns {"study_id", "study", "trials": [...]}; a diverged training is recorded FAILED and
    left out of ``trials``."""
    study = study or f"ladder-{family['name']}"
    recorder = TrialRecorder.for_study(
        store, study, config={"kind": "ladder", "family": family["name"],
                              "baselines": bool(baselines)},
        seed=seed, dataset_id=data.dataset_id, fidelity=fidelity.to_dict(),
        device=family["device"])
    done = {t["trial_key"]: t for t in store.trials(recorder.study_id)}
    out = []
    for key, spec, lat, lat_sd in ladder_jobs(family, baselines):
        tkey = f"{key}:seed{seed}"
        if tkey in done and done[tkey]["status"] == "COMPLETED":
            log(f"{tkey}: already trained (top-1 {done[tkey]['top1']:.2f}%), skipped")
            out.append(done[tkey])
            continue
        if lat is None and predictor is not None:
            lat, lat_sd = predictor.predict(spec)
        res = train_and_record(recorder, tkey, spec, fidelity, data, seed=seed,
                               config={"ladder": key, "family": family["name"]},
                               device=torch_device, threads=threads, zero_cost=False,
                               latency=(lat, lat_sd))
        if res["status"] != "COMPLETED":
            log(f"{tkey}: FAILED ({res['error']})")
            continue
        params, gmacs = analytic_params(spec), analytic_gmacs(spec)
        log(f"{tkey}: top-1 {res['top1']:.2f}%  ({res['train_seconds']:.1f} s, "
            f"{gmacs:.3f} GMACs, {params / 1e6:.2f} M params)")
        out.append({"trial_key": tkey, "id": recorder.trial_ids[tkey], "top1": res["top1"],
                    "val_loss": res.get("val_loss"), "train_loss": res.get("train_loss"),
                    "train_seconds": res.get("train_seconds"), "img_per_s": res.get("img_per_s"),
                    "latency_ms": lat, "latency_std_ms": lat_sd, "params": params,
                    "gmacs": gmacs})
    return {"study_id": recorder.study_id, "study": study, "trials": out}
