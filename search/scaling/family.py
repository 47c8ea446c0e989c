"""The ``scale`` command as a library function: a base architecture and target latencies in, a
family out (printed, written to a directory, saved to the results store).

:func:`scale` takes a typed :class:`ScaleRequest`; both ``run_search.py scale`` and
``run_search.py ladder --base ...`` call it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from latency_models import load_predictor
from results.families import list_families, save_family
from results.options import open_store
from search_space.errors import NotFoundError, UsageError
from search_space.io import check_name, write_json_atomic
from search_space.spec import PRESETS, ArchSpec, SpecError, load_spec

from .compound import (DEFAULT_MAX_SHARE, DEFAULT_TOLERANCE, Coefficients, coefficient_grid,
                       family_comparison, scale_family)
from .plots import comparison_plot

__all__ = ["ScaleRequest", "ScaleOutcome", "scale", "resolve_base", "members_table",
           "comparison_table", "utc_stamp"]


@dataclass(frozen=True)
class ScaleRequest:
    """What to scale and how; validated on construction (one-line UsageError)."""

    # --base: a preset (XS/S/L1/L3), a spec JSON file, inline spec JSON, or trial:N (a trial in
    # the results database).
    base: str
    # Target predicted latencies in ms (sorted, unique: parse_targets).
    targets: tuple[float, ...]
    # Allowed relative error of each member's predicted latency. The predictor's own error is
    # larger on most devices; this only says how exactly the rounding hits the prediction.
    tolerance: float = DEFAULT_TOLERANCE
    # Fixed (a, b, c) instead of searching them on the Tan & Le grid.
    coefficients: Coefficients | None = None
    # Coefficient search: the largest share of the MAC growth one dimension may supply.
    max_share: float = DEFAULT_MAX_SHARE
    # Family name in the store; default <base>-<device>-<UTC time>.
    name: str | None = None
    # Output directory; default runs/scale/<name>.
    out: str | None = None
    # Write the family to the results database (the ladder needs it there).
    save: bool = True

    def __post_init__(self) -> None:
        if not self.targets or not all(math.isfinite(t) and t > 0 for t in self.targets):
            raise UsageError(f"--targets {list(self.targets)}: give latencies in ms > 0")
        if not 0 < self.tolerance < 0.5:
            raise UsageError(f"--tolerance {self.tolerance}: allowed 0 < tolerance < 0.5 "
                             "(fraction)")
        if not 0 < self.max_share <= 1:
            raise UsageError(f"--max-share {self.max_share}: allowed 0 < share <= 1")
        if self.name is not None:      # it names the output directory runs/scale/<name>
            check_name(self.name, "--name")


@dataclass(frozen=True)
class ScaleOutcome:
    name: str
    out_dir: str
    payload: dict[str, Any]  # what family.json holds
    family_id: int | None  # the family's id in the store (None with save=False)


def resolve_base(ref: str, db: str) -> tuple[ArchSpec, str]:
    """(spec, source text) for --base: preset / spec JSON file / inline JSON / trial id."""
    text = str(ref).strip()
    trial = text[6:] if text.lower().startswith("trial:") else text if text.isdecimal() else None
    if trial is not None:
        if not trial.isdecimal():
            raise SpecError(f"--base {ref!r}: a trial reference is trial:<id> with an integer id")
        with open_store(db, readonly=True) as store:
            try:
                t = store.trial(int(trial))
            except ValueError as e:  # the store's "not in this database" (one line)
                raise NotFoundError(f"--base {ref}: {str(e).splitlines()[0]}") from None
        return ArchSpec.from_dict(t["spec"]), f"trial:{trial} (study {t.get('study')}, {db})"
    try:
        spec = load_spec(text)
    except SpecError as e:
        if text.upper() in PRESETS or text.lstrip().startswith("{") or os.path.isfile(text):
            raise SpecError(f"--base {ref!r}: {str(e).splitlines()[0]}") from None
        raise SpecError(f"--base {ref!r}: not a preset ({'/'.join(PRESETS)}), an existing spec "
                        "JSON file, inline JSON, or a trial id (trial:N, from --db)") from None
    except OSError as e:
        raise SpecError(f"--base {ref!r}: unreadable ({e.strerror})") from None
    label = text.upper() if text.upper() in PRESETS else (
        os.path.abspath(text) if os.path.isfile(text) else "inline JSON")
    return spec, label


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")[:80]


def members_table(members: list[dict]) -> str:
    head = (f"{'#':>2} {'target_ms':>9} {'pred_ms':>8} {'err':>6} {'phi':>6}  {'depths':<14}"
            f"{'widths':<22}{'res':>4} {'params_M':>9} {'GMACs':>7}  adjust")
    lines = [head]
    for i, m in enumerate(members):
        spec = m["spec"]
        lines.append(
            f"{i:>2} {m['target_latency_ms']:>9.3f} {m['latency_ms']:>8.3f} "
            f"{100 * (m['latency_ms'] / m['target_latency_ms'] - 1):>+5.1f}% "
            f"{(m.get('phi') if m.get('phi') is not None else float('nan')):>6.2f}  "
            f"{str(list(spec['depths'])):<14}{str(list(spec['widths'])):<22}"
            f"{spec['resolution']:>4} {m['params'] / 1e6:>9.2f} {m['gmacs']:>7.3f}  "
            f"{m.get('adjustments') or ''}")
    return "\n".join(lines)


def comparison_table(rows: list[dict]) -> str:
    lines = [f"{'baseline':<8} {'pred_ms':>8} {'params_M':>9} {'GMACs':>7} {'pub_top1':>8} | "
             f"{'member':>6} {'pred_ms':>8} {'params_M':>9} {'GMACs':>7} | "
             f"{'family@lat params_M':>19} {'GMACs':>7}"]
    for r in rows:
        ip, ig = r["family_params_at_latency"], r["family_gmacs_at_latency"]
        lines.append(
            f"{r['baseline']:<8} {r['baseline_latency_ms']:>8.3f} "
            f"{r['baseline_params'] / 1e6:>9.2f} "
            f"{r['baseline_gmacs']:>7.3f} {r['baseline_published_top1'] or float('nan'):>8.1f} | "
            f"{r['member_position']:>6} {r['member_latency_ms']:>8.3f} "
            f"{r['member_params'] / 1e6:>9.2f} {r['member_gmacs']:>7.3f} | "
            f"{(ip / 1e6 if ip is not None else float('nan')):>19.2f} "
            f"{(ig if ig is not None else float('nan')):>7.3f}")
    return "\n".join(lines)


def _check_name_free(db: str, name: str) -> None:
    """An existing family name is refused before the search, not after it (families are
    results: never replaced)."""
    with open_store(db, readonly=False) as store:
        if any(f["name"] == name for f in list_families(store)):
            raise UsageError(f"--name {name}: a family of that name already exists in {db}; "
                             "choose another --name")


def _write_outputs(out: str, payload: dict[str, Any], title: str) -> str:
    write_json_atomic(os.path.join(out, "family.json"), payload, indent=1)
    for i, m in enumerate(payload["members"]):
        write_json_atomic(os.path.join(out, f"member{i}.json"), m["spec"], indent=1)
    return comparison_plot(payload["comparison"], payload["members"],
                           os.path.join(out, "comparison.png"), title=title)


def scale(req: ScaleRequest, *, db: str, latency_device: str,
          log: Callable[[str], None] = print) -> ScaleOutcome:
    """Scale ``req.base`` to ``req.targets`` on ``latency_device``'s predictor; print the
    members and the comparison with XS/S/L1/L3, write ``<out>/{family.json, member<i>.json,
    comparison.png}`` and (``req.save``) the family to ``db``. Every input error is raised
    before the search."""
    grid = None if req.coefficients else coefficient_grid(max_share=req.max_share)
    base, source = resolve_base(req.base, db)
    predictor = load_predictor(latency_device)
    if req.save and req.name:
        _check_name_free(db, req.name)
    t0 = time.perf_counter()
    fam = scale_family(base, req.targets, predictor, tolerance=req.tolerance,
                       coefficients=req.coefficients, grid=grid, progress=log)
    seconds = time.perf_counter() - t0
    members = [m.to_dict() for m in fam.members]
    name = req.name or _slug(f"{source.split()[0].split('/')[-1].replace('.json', '')}-"
                             f"{predictor.device}-{utc_stamp()}")
    log(f"family {name}: base {source} on {predictor.device} (predictor {predictor.version}); "
        f"{fam.coefficients}; tolerance +-{fam.tolerance:.0%}; {seconds:.1f} s")
    log(members_table(members))
    rel_std = getattr(predictor, "rel_std", None)
    if rel_std is not None and rel_std > req.tolerance:
        log(f"note: +-{req.tolerance:.0%} is relative to the predictor; its own error on "
            f"{predictor.device} is ~{rel_std:.0%} (relative RMS, leave-one-out), measure "
            "before trusting the ordering of close members")
    rows = family_comparison(members, predictor)
    log("\nagainst SwiftFormer at equal predicted latency (member = nearest in latency; "
        "family@lat = log-log interpolation)")
    log(comparison_table(rows))
    out = req.out or os.path.join("runs", "scale", name)
    payload = {"name": name, "base": base.to_dict(), "base_source": source,
               "device": predictor.device, "predictor_version": predictor.version,
               "coefficients": fam.coefficients.to_dict(), "config": fam.config(),
               "members": members, "comparison": rows, "seconds": seconds}
    png = _write_outputs(out, payload, f"{name} vs SwiftFormer ({predictor.device})")
    fid = None
    if req.save:
        with open_store(db, readonly=False) as store:
            store.ensure_baselines()  # the dashboard's family view shows them next to members
            fid = save_family(store, name, base_spec=base, base_source=source,
                              device=predictor.device, predictor_version=predictor.version,
                              coefficients=fam.coefficients.to_dict(),
                              config={**fam.config(), "comparison": rows},
                              members=[{**m.to_dict(), "spec": m.spec} for m in fam.members])
        log(f"saved family {name} (id {fid}) to {db}")
    log(f"wrote {out}/family.json, member*.json, {os.path.basename(png)}")
    return ScaleOutcome(name, out, payload, fid)
