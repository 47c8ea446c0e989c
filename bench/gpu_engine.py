"""The training engine on a GPU: proxy training at the ImageNet-like preset and a retraining step loop.

  python bench/gpu_engine.py            # on a CUDA machine: ~3-4 min on one H200
  python bench/gpu_engine.py --smoke    # on CPU, tiny, no compile: checks the script end to end (~30 s)

Needs only torch, timm, numpy and this repo's search_space + search/proxy modules (no dataset, no
ray/optuna/sqlalchemy): the data are GENERATED -- a uint8 cache of the imagenet-gpu preset's
shape (100 classes x 300 train + 50 val images at 128 px, 1.7 GB; random pixels: this measures
speed, not accuracy) written in a temporary directory and opened as a ProxyData, exactly what
prepare_data hands the trainer.

Sections (each one failing is reported and the rest still run):
  data      the engine's batch path alone (memmap -> pinned buffer -> device, crop/flip and
            normalise on the device), img/s.
  proxy     train_proxy at imagenet-gpu for 1 epoch per preset model (XS, S, L1, L3): training
            img/s, seconds of the epoch incl. BN recalibration + eval, and the cost of the full
            preset (10 epochs) extrapolated from it.
  variants  the same for XS and L1 with one engine setting changed at a time (fp32 instead of
            bf16, NCHW, conv-as-matmul, no pinned staging, a host sync every step, cudnn
            benchmark, batch 512), to show which choice matters.
  retrain   a plain DDP-free step loop as retraining runs it: build_model at 224 px, fused AdamW,
            bf16 autocast, channels_last, batch 256, device-resident random batches, img/s per
            preset model (search/retrain is not imported).
  retrain_compiled  the same step for XS under torch.compile: compile seconds and img/s (skipped
            with --no-compile, or when the rest took longer than --compile-if-under seconds).
Prints a table per section; writes everything as JSON to $OUT/gpu_engine.json when $OUT is set
(and to --json if given).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import search.proxy.train as T  # noqa: E402
from search.proxy.data import ProxyData  # noqa: E402
from search.proxy.fidelity import FIDELITY_PRESETS, Fidelity  # noqa: E402
from search_space.spec import PRESETS  # noqa: E402
from search_space.swiftformer import build_model  # noqa: E402


def generate_data(root: str, fid: Fidelity, seed: int = 0) -> ProxyData:
    """A ProxyData cache of ``fid``'s shape with random pixels (what prepare_data would write)."""
    rng = np.random.default_rng(seed)
    res, c = fid.resolution, fid.classes
    for split, n in (("train", fid.images_per_class), ("val", fid.val_per_class)):
        x = np.lib.format.open_memmap(os.path.join(root, f"{split}_x.npy"), mode="w+",
                                      dtype=np.uint8, shape=(c * n, res, res, 3))
        for s in range(0, c * n, 2048):
            e = min(s + 2048, c * n)
            x[s:e] = rng.integers(0, 256, (e - s, res, res, 3), dtype=np.uint8)
        x.flush()
        del x
        np.save(os.path.join(root, f"{split}_y.npy"), np.repeat(np.arange(c, dtype=np.int64), n))
    return ProxyData(path=root, dataset_id=f"generated-{fid.key}", num_classes=c,
                     class_names=tuple(f"class_{i:03d}" for i in range(c)), resolution=res,
                     source="generated")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def data_path(data: ProxyData, fid: Fidelity, dev: torch.device) -> dict:
    """Batches of one epoch through the engine's path (gather, copy, augment, normalise)."""
    engine = T.engine_for(dev)
    batches = T._Batches(data.train_x, dev, engine.pin_memory, fid.batch_size)
    gen = torch.Generator().manual_seed(0)
    n = len(data.train_y)
    perm = torch.randperm(n, generator=gen).numpy()
    steps = n // fid.batch_size
    sync(dev)
    t = time.perf_counter()
    for b in range(steps):
        xb = batches.take(np.sort(perm[b * fid.batch_size:(b + 1) * fid.batch_size]))
        T.normalize(T.augment_batch(xb, gen, fid.crop_padding, fid.hflip), True)
    sync(dev)
    dt = time.perf_counter() - t
    return {"images": steps * fid.batch_size, "seconds": dt, "img_per_s": steps * fid.batch_size / dt,
            "pinned": engine.pin_memory}


def proxy_run(model: str, data: ProxyData, fid: Fidelity, dev: torch.device, preset_epochs: int,
              **engine_changes) -> dict:
    """train_proxy for ``fid.epochs`` epochs; ``engine_changes`` override the EngineChoice."""
    real = T.engine_for
    if engine_changes:
        T.engine_for = lambda d: dataclasses.replace(real(d), **engine_changes)
    try:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        r = T.train_proxy(PRESETS[model], fid, data, seed=0, device=str(dev))
        wall = time.perf_counter() - t
    finally:
        T.engine_for = real
    h = r["history"][-1]
    return {"model": model, "img_per_s": r["img_per_s"], "epoch_seconds": h["epoch_seconds"],
            "train_seconds": r["train_seconds"], "wall_with_setup": wall,
            "preset_estimate_s": wall + (preset_epochs - fid.epochs) * h["epoch_seconds"],
            "params_m": r["params"] / 1e6, "top1": r["top1"],
            "peak_gpu_gb": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None}


def retrain_loop(model: str, dev: torch.device, res: int, batch: int, steps: int, warmup: int) -> dict:
    """The retraining step: build_model at ``res``, fused AdamW, bf16 autocast (CUDA),
    channels_last, label-smoothing CE; random device-resident batches (no loader)."""
    engine = T.engine_for(dev)
    torch.manual_seed(0)
    net = T.prepare_model(build_model(PRESETS[model].replace(resolution=res)), dev, engine)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05,
                            **({"fused": True} if engine.fused_adamw else {}))
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = T._autocast(dev, engine)
    x = torch.randn(batch, 3, res, res, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    net.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup + steps):
        if i == warmup:
            sync(dev)
            t = time.perf_counter()
        with autocast():
            loss = crit(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(dev)
    dt = time.perf_counter() - t
    return {"model": model, "resolution": res, "batch": batch, "steps": steps,
            "img_per_s": steps * batch / dt, "step_ms": dt / steps * 1e3,
            "loss_finite": bool(torch.isfinite(loss).item()),
            "peak_gpu_gb": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None}


JSON_PATHS: list[str] = []


def section(out: dict, name: str, fn) -> None:
    """Run one section; a failure is recorded, not fatal. The JSON is rewritten after each
    section, so a run cut short by its time limit still leaves what it measured."""
    t = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as e:  # noqa: BLE001 -- report and go on: one run of this script is precious
        traceback.print_exc()
        out[name] = {"error": f"{type(e).__name__}: {e}"}
    out.setdefault("section_seconds", {})[name] = time.perf_counter() - t
    print(f"[{name}: {time.perf_counter() - t:.1f} s]", flush=True)
    for path in JSON_PATHS:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)


def retrain_compiled(model: str, dev: torch.device, res: int, batch: int, steps: int) -> dict:
    """The retraining step under torch.compile (inductor): compile seconds and img/s after."""
    engine = T.engine_for(dev)
    torch.manual_seed(0)
    net = T.prepare_model(build_model(PRESETS[model].replace(resolution=res)), dev, engine)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = T._autocast(dev, engine)
    step_net = torch.compile(net)
    x = torch.randn(batch, 3, res, res, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    net.train()

    def step():
        with autocast():
            loss = crit(step_net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()
    sync(dev)
    compile_s = time.perf_counter() - t
    for _ in range(3):
        step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    dt = time.perf_counter() - t
    return {"model": model, "compile_seconds": compile_s, "img_per_s": steps * batch / dt,
            "step_ms": dt / steps * 1e3}


def environment(dev: torch.device) -> dict:
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
           "python": platform.python_version(), "device": str(dev), "cpus": os.cpu_count()}
    try:
        import timm
        env["timm"] = timm.__version__
    except ImportError:
        env["timm"] = None
    if dev.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(dev), capability=list(torch.cuda.get_device_capability(dev)),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    env["engine"] = {k: str(v) for k, v in dataclasses.asdict(T.engine_for(dev)).items()}
    return env


def print_rows(title: str, rows, cols) -> None:
    print(f"\n{title}")
    if isinstance(rows, dict) and "error" in rows:
        print(f"  failed: {rows['error']}")
        return
    for r in rows:
        if "error" in r:
            print(f"  {r.get('name', '?')}: failed: {r['error']}")
            continue
        print("  " + "  ".join(f"{k}={r[k]:.1f}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}"
                               for k in cols if k in r))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every section")
    ap.add_argument("--models", default="XS,S,L1,L3")
    ap.add_argument("--variant-models", default="XS,L1")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile retraining section")
    ap.add_argument("--compile-if-under", type=float, default=240.0,
                    help="run the compile section only if the rest took less than this many seconds")
    a = ap.parse_args()
    dev = torch.device("cpu") if a.smoke else torch.device("cuda")
    if not a.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke on CPU")
        return 2
    if a.smoke:
        torch.set_num_threads(1)
    fid = FIDELITY_PRESETS["imagenet-gpu"]
    preset_epochs = fid.epochs
    run_fid = fid.replace(epochs=1)
    models = a.models.split(",")
    vmodels = a.variant_models.split(",")
    retrain = dict(res=224, batch=256, steps=30, warmup=5)
    if a.smoke:
        run_fid = fid.replace(classes=4, images_per_class=16, val_per_class=4, epochs=1, batch_size=8,
                              eval_batch_size=8, bn_recal_images=16)
        models, vmodels = ["XS"], ["XS"]
        retrain = dict(res=64, batch=4, steps=2, warmup=1)
    out: dict = {"environment": environment(dev), "fidelity": run_fid.to_dict(),
                 "preset": "imagenet-gpu", "preset_epochs": preset_epochs}
    print(json.dumps(out["environment"]), flush=True)
    JSON_PATHS.extend(([os.path.join(os.environ["OUT"], "gpu_engine.json")] if os.environ.get("OUT") else [])
                      + ([a.json] if a.json else []))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_engine_") as tmp:
        t = time.perf_counter()
        data = generate_data(tmp, run_fid)
        out["generate_seconds"] = time.perf_counter() - t
        print(f"generated {len(data.train_y)} + {len(data.val_y)} images at {run_fid.resolution} px "
              f"in {out['generate_seconds']:.1f} s", flush=True)
        section(out, "data", lambda: data_path(data, run_fid, dev))
        section(out, "proxy", lambda: [_safe(proxy_run, m, data, run_fid, dev, preset_epochs) for m in models])
        variants = {"fp32 (no autocast)": {"autocast_dtype": None, "grad_scaler": False},
                    "NCHW": {"channels_last": False}, "conv as matmul": {"conv_matmul": True},
                    "pageable (no pinned staging)": {"pin_memory": False},
                    "host sync every step": {"check_every": 1},
                    "cudnn.benchmark": {"cudnn_benchmark": True}}
        if dev.type != "cuda":
            variants = {"NCHW": {"channels_last": False}}

        def run_variants():
            rows = []
            for m in vmodels:
                for name, ch in variants.items():
                    rows.append({"variant": name, **_safe(proxy_run, m, data, run_fid, dev, preset_epochs, **ch)})
                rows.append({"variant": "batch 512", **_safe(
                    proxy_run, m, data, run_fid.replace(batch_size=512 if not a.smoke else 16), dev, preset_epochs)})
            return rows
        section(out, "variants", run_variants)
    section(out, "retrain", lambda: [_safe(retrain_loop, m, dev, **retrain) for m in models])
    if not (a.no_compile or a.smoke) and time.perf_counter() - t0 < a.compile_if_under:
        section(out, "retrain_compiled", lambda: [_safe(
            retrain_compiled, m, dev, retrain["res"], retrain["batch"], retrain["steps"]) for m in ["XS"]])
    out["total_seconds"] = time.perf_counter() - t0

    print_rows(f"data path alone ({run_fid.batch_size}/batch)", [out["data"]], ["img_per_s", "seconds", "pinned"])
    print_rows(f"proxy: train_proxy at imagenet-gpu, 1 epoch ({len(data.train_y)} images, "
               f"{run_fid.resolution} px, batch {run_fid.batch_size})", out["proxy"],
               ["model", "img_per_s", "epoch_seconds", "preset_estimate_s", "params_m", "peak_gpu_gb"])
    print_rows("variants (one engine setting changed)", out["variants"],
               ["model", "variant", "img_per_s", "epoch_seconds"])
    print_rows(f"retrain step loop ({retrain['res']} px, batch {retrain['batch']}, bf16 + channels_last "
               f"+ fused AdamW)", out["retrain"], ["model", "img_per_s", "step_ms", "peak_gpu_gb", "loss_finite"])
    if "retrain_compiled" in out:
        print_rows("retrain step loop under torch.compile (inductor)", out["retrain_compiled"],
                   ["model", "compile_seconds", "img_per_s", "step_ms"])
    print(f"\ntotal {out['total_seconds']:.0f} s")
    for path in JSON_PATHS:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)
        print(f"wrote {path}")
    return 0


def _safe(fn, *args, **kw) -> dict:
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {"model": args[0] if args else None, "error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    sys.exit(main())
