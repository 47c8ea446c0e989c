"""Compare two search runs for identical behaviour, ignoring timings and timestamps.

    python bench/compare_runs.py BEFORE.db AFTER.db BEFORE/pareto.json AFTER/pareto.json

Compares every trial row (key, architecture, seed, status, top-1, val loss, predicted latency,
zero-cost scores, per-epoch top-1 and val loss) and the reported front and baselines. Used to
show that a refactoring left the default run (`python run_search.py`, seed 0) unchanged.
"""
import json, sqlite3, sys

def trials(db):
    con = sqlite3.connect(db)
    rows = {}
    for key, arch, seed, status, top1, vl, lat, tid, metrics in con.execute(
            "select trial_key, arch_hash, seed, status, top1, val_loss, latency_ms, id, metrics from sfn_trials"):
        m = json.loads(metrics or "{}")
        ep = [tuple(r) for r in con.execute("select epoch, top1, val_loss from sfn_epoch_metrics where trial_id=? order by epoch", (tid,))]
        rows[key] = (arch, seed, status, top1, vl, lat, tuple(round(m.get(k) or 0, 9) for k in ("synflow", "naswot", "grad_norm")), tuple(ep))
    return rows

a, b = trials(sys.argv[1]), trials(sys.argv[2])
print("trials:", len(a), len(b), "same keys:", set(a) == set(b))
diff = [k for k in a if k in b and a[k] != b[k]]
print("rows differing:", diff)
for k in diff[:5]:
    print(k, a[k], b[k], sep="\n  ")
fa = json.load(open(sys.argv[3])); fb = json.load(open(sys.argv[4]))
front = lambda d: [(f["trial_key"], f["top1"], round(f["latency_ms"], 9)) for f in d["front"]]
print("front equal:", front(fa) == front(fb), front(fb))
base = lambda d: [(x["name"], x["top1"], round(x["latency_ms"], 9)) for x in d["baselines"]]
print("baselines equal:", base(fa) == base(fb))
print("hypervolume before/after:", fa["hypervolume"], "|", fb["hypervolume"])
