"""CLI commands of search_space: ``arch show`` and ``space describe``."""
from __future__ import annotations

import argparse

from .cli_types import SEED, number_type
from .costs import analytic_gmacs, analytic_params, op_table
from .errors import UsageError
from .lazy import lazy_import
from .space import DEFAULT_SPACE
from .spec import PRESETS, PUBLISHED, ArchSpec, load_spec

fvcore_count = lazy_import("search_space.fvcore_count")  # builds the model: torch + fvcore
MAX_SAMPLES = 1_000_000  # `space sample -n`: more is a typo (and minutes of output)


def arch_table(spec: ArchSpec, name: str = "") -> str:
    ops = op_table(spec)
    lines = [f"architecture {name or spec.arch_hash}  (id {spec.arch_hash}, {spec.resolution} px, "
             f"{spec.num_classes} classes, distillation={'on' if spec.distillation else 'off'})",
             f"{'stage':>5} {'depth':>5} {'width':>5} {'mlp':>4} {'attn':>5} {'out':>9} "
             f"{'params':>11} {'GMACs':>7}"]
    for i in range(len(spec.depths)):
        p = sum(o.params for o in ops if o.stage == i)
        g = sum(o.macs for o in ops if o.stage == i) / 1e9
        red = 2 ** (i + 2)
        hw = -(-spec.resolution // red)
        lines.append(f"{i:>5} {spec.depths[i]:>5} {spec.widths[i]:>5} {spec.mlp_ratios[i]:>4g} "
                     f"{spec.attn_blocks[i]:>5} {f'{hw}x{hw}':>9} {p:>11,} {g:>7.3f}")
    for label, stage in (("stem", -1), ("head", 4)):
        p = sum(o.params for o in ops if o.stage == stage)
        g = sum(o.macs for o in ops if o.stage == stage) / 1e9
        lines.append(f"{label:>5} {'':>5} {'':>5} {'':>4} {'':>5} {'':>9} {p:>11,} {g:>7.3f}")
    lines.append(f"total params {analytic_params(spec):,}  GMACs {analytic_gmacs(spec):.3f} "
                 "(fvcore rules: one multiply-add = one MAC)")
    return "\n".join(lines)


def presets_table() -> str:
    lines = [f"{'preset':<6} {'depths':<14} {'widths':<20} {'params':>11} {'GMACs':>6} "
             f"{'top1 %':>6} {'iPhone14 ms':>11}"]
    for n, s in PRESETS.items():
        lines.append(f"{n:<6} {str(list(s.depths)):<14} {str(list(s.widths)):<20} "
                     f"{analytic_params(s):>11,} {analytic_gmacs(s):>6.3f} "
                     f"{PUBLISHED[n]['top1']:>6.1f} {PUBLISHED[n]['latency_ms']:>11.1f}")
    lines.append("top-1: ImageNet-1k, published (distilled, 300 epochs); latency: iPhone 14 "
                 "Neural Engine, SwiftFormer paper Table 2.")
    return "\n".join(lines)


def _arch_show(args: argparse.Namespace) -> int:
    spec = load_spec(args.arch)
    if args.json:
        print(spec.to_json(indent=2))
    else:
        print(arch_table(spec, args.arch.upper() if args.arch.upper() in PRESETS else ""))
    if args.fvcore:
        print(f"fvcore GMACs {fvcore_count.fvcore_gmacs(spec):.3f}")
    return 0


def _space_describe(args: argparse.Namespace) -> int:
    print(DEFAULT_SPACE.describe())
    return 0


def _space_sample(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= MAX_SAMPLES:
        raise UsageError(f"-n {args.n}: allowed 1..{MAX_SAMPLES:,}")
    for s in DEFAULT_SPACE.sample_many(args.n, seed=args.seed):
        print(s.canonical_json())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser("arch", help="inspect an architecture").add_subparsers(
        dest="arch_cmd", required=True)
    show = arch.add_parser("show", help="stages, params and GMACs of a preset or spec JSON")
    show.add_argument("arch", help="XS, S, L1, L3, a spec JSON file, or inline JSON")
    show.add_argument("--json", action="store_true", help="print the spec JSON instead")
    show.add_argument("--fvcore", action="store_true", help="also count GMACs with fvcore")
    show.set_defaults(func=_arch_show)

    space = sub.add_parser("space", help="the search space").add_subparsers(
        dest="space_cmd", required=True)
    space.add_parser("describe", help="ranges per dimension and size").set_defaults(
        func=_space_describe)
    smp = space.add_parser("sample", help="print seeded random specs as JSON lines")
    smp.add_argument("-n", type=number_type(int, 1, MAX_SAMPLES), default=5)
    smp.add_argument("--seed", type=SEED, default=0)
    smp.set_defaults(func=_space_sample)
