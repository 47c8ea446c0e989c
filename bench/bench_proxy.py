"""Proxy-training benchmarks.

  presets     train XS/S/L1/L3 at a fidelity on the embedded set: top-1, seconds per model,
              Kendall tau of the proxy ranking vs the published ImageNet ranking.
  throughput  training img/s of our XS vs timm's swiftformer_xs in a plain loop (torch
              DataLoader over the same cached arrays, same batch, same run) as a ratio, with
              channels_last / torch.compile / thread variants, plus data-loader throughput alone.

  python bench/bench_proxy.py presets [--threads 1] [--seeds 1] [--fidelity JSON]
  python bench/bench_proxy.py throughput [--threads 1] [--steps 30]
  python bench/bench_proxy.py layout [--models XS,S,L1,L3] [--steps 8]   # NCHW vs channels_last
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.proxy.data import prepare_data  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity  # noqa: E402


def presets(a) -> None:
    from scipy.stats import kendalltau

    from search.proxy.train import train_proxy
    from search_space.spec import PRESETS, PUBLISHED

    fid = Fidelity.from_json(a.fidelity) if a.fidelity else DEFAULT_FIDELITY
    data = prepare_data(None, fid, cache_dir=a.cache)
    print(f"fidelity {fid.key}: {fid.to_json()}")
    print(f"data {data.dataset_id}: train {data.train_x.shape}, val {data.val_x.shape}; threads {a.threads}")
    names = a.models.split(",")
    rows = {}
    for name in names:
        tops, secs, cpus = [], [], []
        for seed in range(a.seeds):
            r = train_proxy(PRESETS[name], fid, data, seed=seed, device="cpu", threads=a.threads)
            tops.append(r["top1"])
            secs.append(r["train_seconds"])
            cpus.append(r["cpu_seconds"])
            print(f"  {name} seed {seed}: top1 {r['top1']:.1f}%  {r['train_seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU  "
                  f"{r['img_per_s']:.0f} train img/s  per-epoch top1 "
                  f"{[round(h['top1'], 1) for h in r['history']]}", flush=True)
        rows[name] = (float(np.mean(tops)), float(np.std(tops)), float(np.mean(secs)),
                      float(np.mean(cpus)))
    print(f"{'model':6} {'ImageNet':>8} {'proxy top1':>12} {'wall s':>8} {'CPU s':>8}")
    for n, (m, s, t, c) in rows.items():
        print(f"{n:6} {PUBLISHED[n]['top1']:8.1f} {m:7.1f}+-{s:3.1f} {t:8.1f} {c:8.1f}")
    tau = kendalltau([PUBLISHED[n]["top1"] for n in names], [rows[n][0] for n in names]).statistic
    print(f"Kendall tau (proxy vs ImageNet, {len(names)} models): {tau:.2f}; "
          f"total {sum(r[2] for r in rows.values()) * a.seeds:.0f} s")


def _timm_xs(num_classes: int):
    import timm

    return timm.create_model("swiftformer_xs", num_classes=num_classes)


def throughput(a) -> None:
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    from search.proxy.train import augment_batch, normalize, train_proxy
    from search_space.spec import PRESETS
    from search_space.swiftformer import build_model

    torch.set_num_threads(a.threads)
    fid = DEFAULT_FIDELITY
    data = prepare_data(None, fid, cache_dir=a.cache)
    bs, steps = fid.batch_size, a.steps
    data_small = prepare_data(None, fid.replace(images_per_class=a.proxy_images), cache_dir=a.cache)
    tx, ty = data.train_x, data.train_y

    # -- data only: our batcher (memmap fancy index + torch crop/flip + normalise) ---------------
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ty), generator=gen).numpy()
    t = time.perf_counter()
    n_img = 0
    for _ in range(3):
        for b in range(len(ty) // bs):
            idx = np.sort(perm[b * bs:(b + 1) * bs])
            xb = augment_batch(torch.from_numpy(np.array(tx[idx])), gen, fid.crop_padding, fid.hflip)
            normalize(xb, False)
            n_img += bs
    ours_data = n_img / (time.perf_counter() - t)

    # -- the plain baseline a user would write: Dataset + DataLoader + per-image transforms ----
    class Cached(Dataset):
        def __len__(self):
            return len(ty)

        def __getitem__(self, i):
            x = torch.from_numpy(np.array(tx[i])).permute(2, 0, 1).float().div_(255)
            if torch.rand(()) < 0.5:
                x = x.flip(2)
            p = fid.crop_padding
            x = F.pad(x, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, dy:dy + fid.resolution, dx:dx + fid.resolution]
            mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
            std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
            return (x - mean) / std, int(ty[i])

    loader = DataLoader(Cached(), batch_size=bs, shuffle=True, drop_last=True, num_workers=0)
    t = time.perf_counter()
    n_img = 0
    for _ in range(3):
        for xb, yb in loader:
            n_img += len(yb)
    dl_data = n_img / (time.perf_counter() - t)
    print(f"data only: ours {ours_data:.0f} img/s, plain DataLoader {dl_data:.0f} img/s "
          f"(threads {a.threads})", flush=True)

    def plain_loop(model, channels_last=False, compiled=False) -> float:
        model.train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        step_model = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        it, done, t0, c0 = iter(loader), 0, None, None
        while done < steps + 3:
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                continue
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = crit(step_model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == 3:  # warm-up steps (allocator, compile) excluded
                t0, c0 = time.perf_counter(), time.process_time()
        # (wall img/s, img per CPU-second): the second is what a 1-thread run does on an idle
        # core, and is far less distorted by other people's jobs on a shared machine.
        return steps * bs / (time.perf_counter() - t0), steps * bs / (time.process_time() - c0)

    nc = data.num_classes
    xs = PRESETS["XS"].replace(num_classes=nc, resolution=32)
    best: dict[str, tuple[float, float]] = {}

    def keep(name, v):
        w, c = v
        b = best.get(name, (0.0, 0.0))
        best[name] = (max(b[0], w), max(b[1], c))
        print(f"  {name}: {w:.0f} img/s wall, {c:.0f} img/CPU-s", flush=True)

    # Alternate the contenders (ABAB...) and keep each one's best round: on a shared machine
    # the load drifts, and best-of-n is the least load-biased estimate of what the code can do.
    for rnd in range(a.rounds):
        torch.manual_seed(rnd)
        keep("timm swiftformer_xs, plain DataLoader loop", plain_loop(_timm_xs(nc)))
        keep("our XS, same plain loop", plain_loop(build_model(xs)))
        keep("our XS, plain loop + channels_last", plain_loop(build_model(xs), channels_last=True))
        for cl in (False, True):
            r = train_proxy(PRESETS["XS"], fid.replace(epochs=1, images_per_class=a.proxy_images),
                            data_small, seed=rnd, device="cpu", threads=a.threads, channels_last=cl)
            h = r["history"][0]
            keep(f"train_proxy XS (channels_last={cl})",
                 (h["img_per_s"], a.proxy_images * nc // fid.batch_size * fid.batch_size / h["train_cpu_seconds"]))
    if a.compile:
        try:
            keep("our XS, plain loop + torch.compile", plain_loop(build_model(xs), compiled=True))
        except Exception as e:  # noqa: BLE001 - report, don't die: compile needs a C++ toolchain
            print(f"our XS, torch.compile failed: {type(e).__name__}: {str(e)[:200]}")
    base = best["timm swiftformer_xs, plain DataLoader loop"]
    print(f"\nbest of {a.rounds} rounds, threads {a.threads}, batch {bs}, 32 px; ratio vs timm plain loop")
    for name, (w, c) in best.items():
        print(f"  {name:48} {w:6.0f} img/s wall ({w / base[0]:.2f}x)  {c:6.0f} img/CPU-s ({c / base[1]:.2f}x)")


def layout(a) -> None:
    """Training img per CPU-second, NCHW vs channels_last, per preset (best of 2, alternated)."""
    from search_space.spec import PRESETS
    from search_space.swiftformer import build_model

    torch.set_num_threads(a.threads)
    bs = DEFAULT_FIDELITY.batch_size
    for name in a.models.split(","):
        res: dict[bool, float] = {}
        for _ in range(2):
            for cl in (False, True):
                torch.manual_seed(0)
                m = build_model(PRESETS[name].replace(num_classes=10, resolution=32))
                x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
                if cl:
                    m = m.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                opt = torch.optim.AdamW(m.parameters(), 1e-3)
                m.train()
                for i in range(a.steps + 2):
                    if i == 2:
                        c = time.process_time()
                    loss = torch.nn.functional.cross_entropy(m(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                res[cl] = max(res.get(cl, 0.0), a.steps * bs / (time.process_time() - c))
        print(f"{name}: img/CPU-s NCHW {res[False]:.0f}, channels_last {res[True]:.0f} "
              f"({res[True] / res[False]:.2f}x)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["presets", "throughput", "layout"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--models", default="XS,S,L1,L3")
    ap.add_argument("--fidelity", default=None, help="Fidelity JSON (fields override nothing: full record)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--proxy-images", type=int, default=64, help="per class, for the train_proxy epoch")
    ap.add_argument("--cache", default="runs/cache")
    a = ap.parse_args()
    os.system("uptime")
    t = time.time()
    {"presets": presets, "throughput": throughput, "layout": layout}[a.mode](a)
    print(f"wall {time.time() - t:.0f} s")
    os.system("uptime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
