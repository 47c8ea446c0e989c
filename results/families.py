"""Architecture families (compound-scaled ladders) in the results database.

Two tables on the results store's ``Base`` (so Alembic and the store's schema checks see them):

* ``sfn_families``: one row per family (name, base architecture, device + latency predictor
  version the targets refer to, the compound-scaling coefficients, the full scaling config);
* ``sfn_family_members``: one row per member (position, target and predicted latency, phi,
  params, GMACs), pointing at ``sfn_architectures``.

Schema changes go through ``results/migrations/versions/0100_families.py``. The functions
below are the whole API: :func:`save_family`, :func:`list_families`, :func:`get_family`.
Each is one store transaction.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .schema import Architecture, Base, utcnow

__all__ = ["Family", "FamilyMember", "save_family", "list_families", "get_family", "family_view"]


class Family(Base):
    """A family of architectures scaled from one base for one device's latency predictor."""

    __tablename__ = "sfn_families"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    base_arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"))
    base_source: Mapped[str] = mapped_column(Text)  # what --base was: preset / file / trial id
    device: Mapped[str] = mapped_column(String(128), index=True)
    predictor_version: Mapped[str] = mapped_column(String(128))
    coefficients: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"depth", "width", "resolution"}
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # tolerance, rounding, search report
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list["FamilyMember"]] = relationship(
        back_populates="family", order_by="FamilyMember.position", cascade="all, delete-orphan")


class FamilyMember(Base):
    """One member of a family: the architecture chosen for one target latency."""

    __tablename__ = "sfn_family_members"
    __table_args__ = (UniqueConstraint("family_id", "position",
                                       name="uq_sfn_family_members_family_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[int] = mapped_column(ForeignKey("sfn_families.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # 0 = smallest target
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"), index=True)
    target_latency_ms: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)  # predicted on family.device
    latency_std_ms: Mapped[float | None] = mapped_column(Float)
    phi: Mapped[float | None] = mapped_column(Float)  # compound coefficient before fine-tuning
    params: Mapped[int] = mapped_column(Integer)
    gmacs: Mapped[float] = mapped_column(Float)

    family: Mapped[Family] = relationship(back_populates="members")


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


def save_family(store, name: str, *, base_spec, base_source: str, device: str,
                predictor_version: str, coefficients: Mapping[str, float],
                config: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> int:
    """Store a family and its members (each: spec, target_latency_ms, latency_ms,
    latency_std_ms, phi, params, gmacs) in one transaction; returns the family id.

    A name that already exists is an error (families are results: never silently replaced).
    """
    store._writable()
    import json

    from search_space.costs import analytic_gmacs, analytic_params

    # Architectures first, inside the same transaction as the family rows.
    specs = [base_spec] + [m["spec"] for m in members]
    with store.transaction() as s:
        if s.scalar(select(Family.id).where(Family.name == name)) is not None:
            raise ValueError(f"family {name!r} already exists in this database; "
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
                     config=json.loads(json.dumps(dict(config), default=str)))
        for i, m in enumerate(members):
            fam.members.append(FamilyMember(
                position=i, arch_hash=m["spec"].arch_hash,
                target_latency_ms=float(m["target_latency_ms"]),
                latency_ms=float(m["latency_ms"]),
                latency_std_ms=None if m.get("latency_std_ms") is None else float(m["latency_std_ms"]),
                phi=None if m.get("phi") is None else float(m["phi"]),
                params=int(m["params"]), gmacs=float(m["gmacs"])))
        s.add(fam)
        s.flush()
        return fam.id


def list_families(store) -> list[dict[str, Any]]:
    """Every family with its members (no specs), oldest first."""
    with store.transaction() as s:
        return [_family_dict(f) for f in s.scalars(select(Family).order_by(Family.id))]


def get_family(store, ref: str | int) -> dict[str, Any]:
    """One family by name or id, members with their specs (dicts). Unknown -> ValueError."""
    import json

    with store.transaction() as s:
        q = select(Family).where(Family.name == str(ref))
        f = s.scalar(q)
        if f is None and str(ref).isdigit():
            f = s.get(Family, int(ref))
        if f is None:
            names = s.scalars(select(Family.name).order_by(Family.id)).all()
            raise ValueError(f"family {ref!r}: not in this database (have: "
                             f"{', '.join(names[-5:]) or 'none'})")
        hashes = [m.arch_hash for m in f.members] + [f.base_arch_hash]
        specs = {a.arch_hash: json.loads(a.spec_json) for a in
                 s.scalars(select(Architecture).where(Architecture.arch_hash.in_(hashes)))}
        d = _family_dict(f, specs)
        d["base_spec"] = specs.get(f.base_arch_hash)
        return d


def family_view(store, ref: str | int) -> dict[str, Any]:
    """Pure data for the dashboard's family view: the family, its comparison against
    XS/S/L1/L3 at equal predicted latency, and proxy accuracy from its ladder study.

    The comparison rows are the ones ``run_search.py scale`` computed with the family's own
    predictor and stored in ``config["comparison"]`` (the results layer holds no predictor);
    families saved before that have none (``comparison`` is None, ``notes`` says so). Accuracy:
    mean proxy top-1 over the COMPLETED full-budget trials of study ``ladder-<name>`` and of
    any other study ``run_search.py ladder`` wrote for this family (another seed under
    ``--study``) at the same proxy budget, per architecture, with the number of runs.
    """
    import json

    from .schema import COMPLETED, Study, Trial

    fam = get_family(store, ref)
    ladder = f"ladder-{fam['name']}"
    acc: dict[str, list[float]] = {}
    ladders: list[Any] = []
    with store.transaction() as s:
        # The ladder's own study, plus any other study `ladder` wrote for this family (e.g. a
        # second seed under --study NAME): its config says {"kind": "ladder", "family": name}.
        for st in s.scalars(select(Study).order_by(Study.id)):
            cfg = st.config if isinstance(st.config, dict) else {}
            if st.name == ladder or (cfg.get("kind") == "ladder"
                                     and cfg.get("family") == fam["name"]):
                ladders.append(st)
        fids = {json.dumps(st.fidelity, sort_keys=True) for st in ladders}
        if len(fids) > 1:  # different budgets are not averaged: keep the family's own study
            ladders = [st for st in ladders if st.name == ladder] or ladders[:1]
        for st in ladders:
            for h, top1 in s.execute(select(Trial.arch_hash, Trial.top1).where(
                    Trial.study_id == st.id, Trial.status == COMPLETED,
                    Trial.full_budget.is_(True), Trial.top1.is_not(None))):
                acc.setdefault(h, []).append(float(top1))
        fidelity = ladders[0].fidelity if ladders else None
        names = [st.name for st in ladders]

    def top1(h: str | None) -> tuple[float | None, int]:
        v = acc.get(h or "", [])
        return (sum(v) / len(v) if v else None), len(v)

    members = []
    for m in fam["members"]:
        t, n = top1(m["arch_hash"])
        members.append({k: v for k, v in m.items() if k != "spec"} | {"top1": t, "n_seeds": n})
    baselines = []
    rows = fam["config"].get("comparison")
    by_name = {r["baseline"]: r for r in rows or []}
    stored = store.baselines()
    if not stored:  # a database written only by `scale`: the shipped XS/S/L1/L3 values
        from search_space.spec import PRESETS, PUBLISHED

        from .store import PUBLISHED_DEVICE
        stored = [{"name": n, "arch_hash": sp.arch_hash, "published_top1": PUBLISHED[n]["top1"],
                   "published_latency_ms": PUBLISHED[n]["latency_ms"],
                   "latency_device": PUBLISHED_DEVICE} for n, sp in PRESETS.items()]
    for b in stored:
        t, n = top1(b["arch_hash"])
        r = by_name.get(b["name"], {})
        baselines.append({"name": b["name"], "arch_hash": b["arch_hash"],
                          "latency_ms": r.get("baseline_latency_ms"),
                          "params": r.get("baseline_params"), "gmacs": r.get("baseline_gmacs"),
                          "published_top1": b["published_top1"],
                          "published_latency_ms": b["published_latency_ms"],
                          "published_latency_device": b["latency_device"],
                          "top1": t, "n_seeds": n})
    notes = []
    if rows is None:
        notes.append("no comparison stored with this family (saved by an older version): "
                     "rerun run_search.py scale to get one")
    if not acc:
        notes.append(f"no proxy accuracy yet: run_search.py ladder --family {fam['name']} "
                     "trains the members (study " + ladder + ")")
    return {"family": {k: v for k, v in fam.items() if k not in ("members",)},
            "members": members, "baselines": baselines, "comparison": rows,
            "ladder_study": ", ".join(names) or None,
            "ladder_fidelity": fidelity, "notes": notes}
