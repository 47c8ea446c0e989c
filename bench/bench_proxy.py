"""Proxy-training benchmarks.

  fair     (alias: throughput) our train_proxy vs timm's swiftformer_xs in a plain loop, per
           CPU-second: channels_last on both, the same ProxyData memmap, thread count and
           images; contenders alternate order each round; median and spread over rounds; the
           machine's load and sgemm figure printed with it. --ablations adds the engine
           variants (1x1 conv as conv, AdamW not fused, both = the old engine, bf16 on CPU).
  presets  train XS/S/L1/L3 at a fidelity on the embedded set: top-1, seconds per model,
           Kendall tau of the proxy ranking vs the published ImageNet ranking.
  parts    where a train_proxy step's CPU time goes: data (gather + augment + normalise),
           one training step, BN recalibration and eval per epoch.
  layout   NCHW vs channels_last per preset.

  python bench/bench_proxy.py fair [--rounds 5] [--steps 46] [--threads 1] [--ablations] [--json F]
  python bench/bench_proxy.py presets [--threads 1] [--seeds 1] [--fidelity NAME|JSON]
  python bench/bench_proxy.py parts [--threads 1]
  python bench/bench_proxy.py layout [--models XS,S,L1,L3] [--steps 8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.proxy.data import prepare_data  # noqa: E402
from search.options import parse_fidelity  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY  # noqa: E402


def presets(a) -> None:
    from search.proxy.train import train_proxy
    from search_space.spec import PRESETS, PUBLISHED
    from search_space.stats import kendall_tau

    print(json.dumps(machine_info()), flush=True)
    fid = parse_fidelity(a.fidelity)
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
    tau = kendall_tau([PUBLISHED[n]["top1"] for n in names], [rows[n][0] for n in names])
    print(f"Kendall tau (proxy vs ImageNet, {len(names)} models): {tau:.2f}; "
          f"total {sum(r[2] for r in rows.values()) * a.seeds:.0f} s")


def machine_info() -> dict:
    """Load, sgemm 2048^3 GFLOP/s on 1 and 2 threads (best of 5), versions: the context a
    ratio measured on a shared machine needs."""
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "uptime": os.popen("uptime").read().strip(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    threads = torch.get_num_threads()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for th in (1, 2):
        torch.set_num_threads(th)
        a @ b
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
        info[f"sgemm_2048_{th}t_gflops"] = round(best, 1)
    torch.set_num_threads(threads)
    return info


def _timm_plain_loop(data, fid, steps: int, seed: int) -> tuple[float, float]:
    """The plain loop a timm user writes, on the same memmap: Dataset + DataLoader (no worker
    processes: same CPU budget) with torchvision v2 per-image transforms (the same augmentation:
    pad-4 random crop + flip, then normalise), timm's swiftformer_xs in channels_last, torch's
    AdamW (its default implementation), label-smoothing cross-entropy. Returns (wall s, CPU s)
    of ``steps`` steps, data loading included (as in train_proxy's epoch time)."""
    import timm
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    tx, ty = data.train_x, data.train_y
    tf = v2.Compose([v2.RandomCrop(fid.resolution, padding=fid.crop_padding), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    class Cached(Dataset):
        def __len__(self):
            return len(ty)

        def __getitem__(self, i):
            return tf(torch.from_numpy(np.array(tx[i])).permute(2, 0, 1)), int(ty[i])

    torch.manual_seed(seed)
    model = timm.create_model("swiftformer_xs", num_classes=data.num_classes)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=fid.lr, weight_decay=fid.weight_decay)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=fid.label_smoothing)
    loader = DataLoader(Cached(), batch_size=fid.batch_size, shuffle=True, drop_last=True)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < steps:
        for xb, yb in loader:
            loss = crit(model(xb.contiguous(memory_format=torch.channels_last)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - t0, time.process_time() - c0


def _ours(data, fid, seed: int, **engine_changes) -> tuple[float, float, float]:
    """train_proxy on our XS for one epoch: (train wall s, train CPU s, whole CPU s incl. BN
    recalibration + eval). ``engine_changes`` override fields of the CPU EngineChoice."""
    import dataclasses

    import search.proxy.train as train_mod
    from search_space.spec import PRESETS

    real = train_mod.engine_for
    if engine_changes:
        train_mod.engine_for = lambda d: dataclasses.replace(real(d), **engine_changes)
    try:
        r = train_mod.train_proxy(PRESETS["XS"], fid, data, seed=seed, device="cpu")
    finally:
        train_mod.engine_for = real
    h = r["history"][0]
    n_img = len(data.train_y) // fid.batch_size * fid.batch_size
    return n_img / h["img_per_s"], h["train_cpu_seconds"], r["cpu_seconds"]


CONTENDERS = {
    "timm plain loop": None,
    "train_proxy": {},
}
ABLATIONS = {
    "train_proxy, convolutions left to oneDNN (no MatmulConv2d)": {"conv_matmul": False},
    "train_proxy, AdamW for-loop (not fused)": {"fused_adamw": False},
    "train_proxy, old engine (neither)": {"conv_matmul": False, "fused_adamw": False},
    "train_proxy + bf16 autocast on CPU": {"autocast_dtype": torch.bfloat16},
}


def fair(a) -> None:
    """Our train_proxy vs timm's swiftformer_xs in a plain loop, per CPU-second (see
    notes/search_proxy.md): channels_last on both, the same ProxyData memmap, the same thread
    count and images, contenders alternating order each round; median and spread of rounds."""
    torch.set_num_threads(a.threads)
    info = machine_info()
    print(json.dumps(info))
    steps = a.steps
    fid = parse_fidelity(a.fidelity).replace(
        epochs=1, images_per_class=-(-steps * DEFAULT_FIDELITY.batch_size // 10))
    data = prepare_data(None, fid, cache_dir=a.cache)
    steps = len(data.train_y) // fid.batch_size
    n_img = steps * fid.batch_size
    names = list(CONTENDERS) + (list(ABLATIONS) if a.ablations else [])
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    whole: dict[str, list[float]] = {n: [] for n in names}
    print(f"{steps} steps x batch {fid.batch_size} = {n_img} images per contender per round, "
          f"{fid.resolution} px, threads {a.threads}, rounds {a.rounds}", flush=True)
    for rnd in range(a.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            if name == "timm plain loop":
                w, c = _timm_plain_loop(data, fid, steps, seed=rnd)
                cw = c
            else:
                w, c, cw = _ours(data, fid, rnd, **{**CONTENDERS.get(name, {}), **ABLATIONS.get(name, {})})
            cpu[name].append(n_img / c)
            wall[name].append(n_img / w)
            whole[name].append(n_img / cw)
            print(f"  round {rnd + 1} {name:52} {n_img / c:6.0f} img/CPU-s  {n_img / w:6.0f} img/s wall"
                  f"  ({n_img / cw:.0f} img/CPU-s incl. BN recal + eval)", flush=True)
    base = cpu["timm plain loop"]
    print(f"\nper CPU-second, {a.rounds} rounds (median [min, max]); ratio = per-round ratio to the "
          f"timm plain loop of the same round")
    summary = {}
    for name in names:
        ratios = [o / b for o, b in zip(cpu[name], base)]
        summary[name] = {"img_per_cpu_s": cpu[name], "img_per_s_wall": wall[name],
                         "ratio_median": float(np.median(ratios)), "ratio_min": min(ratios),
                         "ratio_max": max(ratios)}
        print(f"  {name:52} {np.median(cpu[name]):6.0f} img/CPU-s  ratio {np.median(ratios):.2f}x "
              f"[{min(ratios):.2f}, {max(ratios):.2f}]  wall {np.median(wall[name]):6.0f} img/s")
    r = summary["train_proxy"]
    wr = [o / b for o, b in zip(whole["train_proxy"], base)]
    print(f"\nHEADLINE train_proxy vs timm plain loop: {r['ratio_median']:.2f}x per CPU-second "
          f"(median of {a.rounds} rounds, range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}); "
          f"counting train_proxy's BN recalibration + eval too: {np.median(wr):.2f}x")
    print(f"machine: sgemm 2048^3 {info['sgemm_2048_2t_gflops']} GFLOP/s on 2 threads "
          f"({info['sgemm_2048_1t_gflops']} on 1); load at start: {info['uptime']}")
    print(f"load at end: {os.popen('uptime').read().strip()}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "steps": steps, "images": n_img, "threads": a.threads,
                       "rounds": a.rounds, "contenders": summary}, f, indent=1)


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


def parts(a) -> None:
    """CPU time of the pieces of a train_proxy epoch for XS at the default fidelity."""
    import search.proxy.train as T
    from search_space.spec import PRESETS

    torch.set_num_threads(a.threads)
    fid = DEFAULT_FIDELITY
    data = prepare_data(None, fid, cache_dir=a.cache)
    dev = torch.device("cpu")
    s = T._setup(PRESETS["XS"], fid, data, 0, "cpu", None)
    gen, n, bs = torch.Generator().manual_seed(0), len(data.train_y), fid.batch_size
    perm = torch.randperm(n, generator=gen).numpy()

    def cpu_ms(fn, reps: int) -> float:
        fn(0)
        c = time.process_time()
        for i in range(reps):
            fn(i)
        return (time.process_time() - c) / reps * 1e3

    def batch(i):
        idx = np.sort(perm[(i % 40) * bs:(i % 40 + 1) * bs])
        return T.normalize(T.augment_batch(s.batches.take(idx), gen, fid.crop_padding, fid.hflip), True), \
            s.labels[idx]

    def step(i):
        x, y = batch(i)
        loss = s.loss_fn(s.model(x), y)
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        s.opt.step()

    d = cpu_ms(batch, 40)
    t = cpu_ms(step, 20)
    recal = cpu_ms(lambda i: T.recalibrate_bn(s.model, data, fid.bn_recal_images, fid.eval_batch_size, dev, True), 2)
    ev = cpu_ms(lambda i: T.evaluate(s.model, data, fid, dev, True), 2)
    per_epoch = t * s.steps_per_epoch
    print(f"XS, batch {bs}, {fid.resolution} px, threads {a.threads} (CPU ms):\n"
          f"  data per batch (gather + crop/flip + normalise) {d:7.2f}  ({d / t:.1%} of a step)\n"
          f"  training step incl. data                        {t:7.2f}\n"
          f"  epoch of {s.steps_per_epoch} steps                             {per_epoch:7.0f}\n"
          f"  BN recalibration ({fid.bn_recal_images} images)             {recal:7.0f}  ({recal / per_epoch:.1%} of the epoch)\n"
          f"  evaluation ({len(data.val_y)} images)                       {ev:7.0f}  ({ev / per_epoch:.1%} of the epoch)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["fair", "throughput", "presets", "parts", "layout"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--models", default="XS,S,L1,L3")
    ap.add_argument("--fidelity", default=None, help="preset name or JSON, as --fidelity (default cpu-cifar)")
    ap.add_argument("--steps", type=int, default=None, help="fair: steps per contender per round "
                    "(default 46 = an epoch of 300 images per class); layout: default 8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ablations", action="store_true", help="fair: add the engine variants")
    ap.add_argument("--json", default=None, help="fair: also write the figures to this file")
    ap.add_argument("--cache", default="runs/cache")
    a = ap.parse_args()
    if a.steps is None:
        a.steps = 8 if a.mode == "layout" else 46
    print(f"bench_proxy {a.mode}: {os.popen('uptime').read().strip()}", flush=True)
    t = time.time()
    {"fair": fair, "throughput": fair, "presets": presets, "parts": parts, "layout": layout}[a.mode](a)
    print(f"wall {time.time() - t:.0f} s; {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
