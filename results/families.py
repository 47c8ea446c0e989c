"""Architecture families (compound-scaled ladders) in the results database: the logic.

The tables are ``sfn_families`` / ``sfn_family_members`` (ORM models :class:`results.schema.Family`
and :class:`results.schema.FamilyMember`; schema changes through
``results/migrations/versions/0100_families.py``). The functions below are the whole API:
:func:`save_family`, :func:`list_families`, :func:`get_family`, :func:`family_view`. Each is
one store transaction.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from sqlalchemy import select

from search_space.costs import analytic_gmacs, analytic_params
from search_space.errors import NotFoundError, UsageError
from search_space.io import canonical_json, json_safe
from search_space.spec import PRESETS, PUBLISHED

from .schema import COMPLETED, STANDALONE, Architecture, Family, FamilyMember, Study, Trial
from .store import MAX_ID, PUBLISHED_DEVICE, ResultsStore

__all__ = ["save_family", "list_families", "get_family", "family_view"]


def _family_dict(f: Family, with_specs: dict[str, Any] | None = None) -> dict[str, Any]:
    members = []
    for m in f.members:
        d = {"position": m.position, "arch_hash": m.arch_hash,
             "target_latency_ms": m.target_latency_ms, "latency_ms": m.latency_ms,
             "latency_std_ms": m.latency_std_ms, "phi": m.phi, "params": m.params,
             "gmacs": m.gmacs}
        if with_specs is not None:
            d["spec"] = with_specs.get(m.arch_hash)
        members.append(d)
    return {"id": f.id, "name": f.name, "base_arch_hash": f.base_arch_hash,
            "base_source": f.base_source, "device": f.device,
            "predictor_version": f.predictor_version, "coefficients": f.coefficients,
            "config": f.config, "created_at": f.created_at.isoformat(), "members": members}


def save_family(store: ResultsStore, name: str, *, base_spec, base_source: str, device: str,
                predictor_version: str, coefficients: Mapping[str, float],
                config: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> int:
    """Store a family and its members (each: spec, target_latency_ms, latency_ms,
    latency_std_ms, phi, params, gmacs) in one transaction; returns the family id.

    A name that already exists is a UsageError (families are results: never silently replaced).
    """
    store._writable()
    # Architectures first, inside the same transaction as the family rows.
    specs = [base_spec] + [m["spec"] for m in members]
    with store.transaction() as s:
        if s.scalar(select(Family.id).where(Family.name == name)) is not None:
            raise UsageError(f"family {name!r} already exists in this database; "
                             "choose another --name")
        for spec in specs:
            if s.get(Architecture, spec.arch_hash) is None:
                s.add(Architecture(arch_hash=spec.arch_hash, spec_json=spec.canonical_json(),
                                   params=int(analytic_params(spec)),
                                   gmacs=float(analytic_gmacs(spec))))
                s.flush()
        fam = Family(name=name, base_arch_hash=base_spec.arch_hash, base_source=base_source,
                     device=device, predictor_version=predictor_version,
                     coefficients={k: float(v) for k, v in coefficients.items()},
                     config=json_safe(dict(config)))
        for i, m in enumerate(members):
            fam.members.append(FamilyMember(
                position=i, arch_hash=m["spec"].arch_hash,
                target_latency_ms=float(m["target_latency_ms"]),
                latency_ms=float(m["latency_ms"]),
                latency_std_ms=_opt_float(m.get("latency_std_ms")),
                phi=_opt_float(m.get("phi")), params=int(m["params"]), gmacs=float(m["gmacs"])))
        s.add(fam)
        s.flush()
        return fam.id


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def list_families(store: ResultsStore) -> list[dict[str, Any]]:
    """Every family with its members (no specs), oldest first."""
    with store.transaction() as s:
        return [_family_dict(f) for f in s.scalars(select(Family).order_by(Family.id))]


def get_family(store: ResultsStore, ref: str | int) -> dict[str, Any]:
    """One family by name or id, members with their specs (dicts). Unknown -> NotFoundError."""
    with store.transaction() as s:
        f = s.scalar(select(Family).where(Family.name == str(ref)))
        if f is None and str(ref).isdecimal() and int(ref) <= MAX_ID:
            f = s.get(Family, int(ref))
        if f is None:
            names = s.scalars(select(Family.name).order_by(Family.id)).all()
            raise NotFoundError(f"family {ref!r}: not in this database (have: "
                                f"{', '.join(names[-5:]) or 'none'})")
        hashes = [m.arch_hash for m in f.members] + [f.base_arch_hash]
        specs = {a.arch_hash: json.loads(a.spec_json) for a in
                 s.scalars(select(Architecture).where(Architecture.arch_hash.in_(hashes)))}
        d = _family_dict(f, specs)
        d["base_spec"] = specs.get(f.base_arch_hash)
        return d


def _ladder_accuracy(store: ResultsStore, family: str) -> tuple[dict[str, list[float]], list[str],
                                                                 dict | None]:
    """Proxy top-1 per architecture from the family's ladder studies: ``ladder-<name>`` and any
    other study ``run_search.py ladder`` wrote for this family (its config says
    ``{"kind": "ladder", "family": name}``, e.g. a second seed under ``--study``). Studies at
    different proxy budgets are not averaged: then only the family's own study counts.
    Returns (top-1 values per arch_hash, study names, the ladder's fidelity)."""
    ladder = f"ladder-{family}"
    acc: dict[str, list[float]] = {}
    with store.transaction() as s:
        ladders = [st for st in s.scalars(select(Study).order_by(Study.id))
                   if st.name == ladder or (isinstance(st.config, dict)
                                            and st.config.get("kind") == "ladder"
                                            and st.config.get("family") == family)]
        if len({canonical_json(st.fidelity) for st in ladders}) > 1:
            ladders = [st for st in ladders if st.name == ladder] or ladders[:1]
        for st in ladders:
            for h, top1 in s.execute(select(Trial.arch_hash, Trial.top1).where(
                    Trial.study_id == st.id, Trial.status == COMPLETED,
                    Trial.full_budget.is_(True), Trial.rung == STANDALONE,
                    Trial.top1.is_not(None))):
                acc.setdefault(h, []).append(float(top1))
        return acc, [st.name for st in ladders], (ladders[0].fidelity if ladders else None)


def _mean(acc: dict[str, list[float]], arch_hash: str | None) -> dict[str, Any]:
    v = acc.get(arch_hash or "", [])
    return {"top1": sum(v) / len(v) if v else None, "n_seeds": len(v)}


def _stored_baselines(store: ResultsStore) -> list[dict]:
    """XS/S/L1/L3 rows of the database; a database written only by ``scale`` has none, so the
    shipped published values stand in."""
    return store.baselines() or [
        {"name": n, "arch_hash": sp.arch_hash, "published_top1": PUBLISHED[n]["top1"],
         "published_latency_ms": PUBLISHED[n]["latency_ms"], "latency_device": PUBLISHED_DEVICE}
        for n, sp in PRESETS.items()]


def family_view(store: ResultsStore, ref: str | int) -> dict[str, Any]:
    """Pure data for the dashboard's family view: the family, its comparison against
    XS/S/L1/L3 at equal predicted latency, and proxy accuracy from its ladder study.

    The comparison rows are the ones ``run_search.py scale`` computed with the family's own
    predictor and stored in ``config["comparison"]`` (the results layer holds no predictor);
    families saved before that have none (``comparison`` is None, ``notes`` says so). Accuracy:
    mean proxy top-1 over the COMPLETED full-budget trials of study ``ladder-<name>`` and of
    any other study ``run_search.py ladder`` wrote for this family (another seed under
    ``--study``) at the same proxy budget, per architecture, with the number of runs.
    """
    fam = get_family(store, ref)
    acc, names, fidelity = _ladder_accuracy(store, fam["name"])
    members = [{k: v for k, v in m.items() if k != "spec"} | _mean(acc, m["arch_hash"])
               for m in fam["members"]]
    rows = fam["config"].get("comparison")
    by_name = {r["baseline"]: r for r in rows or []}
    baselines = []
    for b in _stored_baselines(store):
        r = by_name.get(b["name"], {})
        baselines.append({"name": b["name"], "arch_hash": b["arch_hash"],
                          "latency_ms": r.get("baseline_latency_ms"),
                          "params": r.get("baseline_params"), "gmacs": r.get("baseline_gmacs"),
                          "published_top1": b["published_top1"],
                          "published_latency_ms": b["published_latency_ms"],
                          "published_latency_device": b["latency_device"]}
                         | _mean(acc, b["arch_hash"]))
    notes = []
    if rows is None:
        notes.append("no comparison stored with this family (saved by an older version): "
                     "rerun run_search.py scale to get one")
    if not acc:
        notes.append(f"no proxy accuracy yet: run_search.py ladder --family {fam['name']} "
                     f"trains the members (study ladder-{fam['name']})")
    return {"family": {k: v for k, v in fam.items() if k != "members"},
            "members": members, "baselines": baselines, "comparison": rows,
            "ladder_study": ", ".join(names) or None,
            "ladder_fidelity": fidelity, "notes": notes}
