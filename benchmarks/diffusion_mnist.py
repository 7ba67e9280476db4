"""DDPM on MNIST: DDIM against ancestral sampling, bf16 against fp32 training, guidance.

Everything goes through the CLI, as a user would run it (existing runs in ``--run-dir`` are reused):

1. ``gentool fit ddpm --dataset mnist`` at ``--precision`` (the run every sampler is measured on);
2. FID, KID, precision and recall (``gentool evaluate --metric fid,kid,precision-recall``, the
   same classifier features as the other benchmarks' rows) of DDIM with ``--ddim-steps`` steps
   against ancestral sampling with all T steps, and the seconds each takes per 1,000 images
   (``run.sample`` through the Python API after a warm-up draw, so start-up is not counted).
   The goal: DDIM at least 10x faster with an FID within 20% of ancestral sampling's. Next to
   them, ``dcgan`` trained for ``--dcgan-epochs`` epochs (pick them to match the DDPM run's
   training minutes) and measured alike; the goal: DDPM's FID below DCGAN's;
3. training throughput (images/s from metrics.jsonl) of ``--throughput-steps`` updates at
   ``--precision fp32`` against ``bf16``, in two short runs started alike;
4. a class-conditional run (``--set conditional=true``), its label accuracy where a
   ``label-accuracy`` metric is installed, and grids in ``--images``: unconditional samples,
   one row per class, and one row per class at guidance 0, 1 and 3.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/diffusion_mnist.py --device cuda --precision bf16
    GENTOOL_DATA_DIR=../shared/data python benchmarks/diffusion_mnist.py --device cpu --epochs 3 --lr 1e-3 \\
        --set base_channels=16 --set res_blocks=1 --samples 500 --timed 100 --throughput-steps 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shared import fit_once, gentool, images_per_second, machine, synchronize

import gentoolkit.api as gt
from gentoolkit.registry import get_toolkit
from gentoolkit.rundir import RunDir

GUIDANCE = (0, 1, 3)
CLASS_GRID = 100  # images in the per-class grids: a row of 10 per digit
SPEED_GOAL, FID_GOAL = 10.0, 0.20  # DDIM at least 10x faster, FID within 20%


def sample_seconds(run_dir: Path, device: str, n: int, sampler: str, options: dict[str, str]) -> float:
    """Seconds per 1,000 images for ``n`` images drawn with the sampler, after a warm-up draw."""
    run = gt.load_run(run_dir, device)
    run.sample(2, sampler=sampler, options=options)
    synchronize(run.device)
    start = time.perf_counter()
    run.sample(n, sampler=sampler, options=options, seed=1)
    synchronize(run.device)
    return (time.perf_counter() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/benchmarks/diffusion-mnist"),
                        help="folder of the benchmark's runs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: for training, evaluation and sampling")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="precision of the measured and the conditional runs")
    parser.add_argument("--epochs", type=int, help="default: the model's recipe")
    parser.add_argument("--lr", type=float, help="default: the model's recipe")
    parser.add_argument("--batch-size", type=int, help="default: the model's recipe")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option, as for gentool fit --set (base_channels, timesteps, ema, ...)")
    parser.add_argument("--ddim-steps", type=int, default=50, help="steps of the DDIM sampler measured")
    parser.add_argument("--throughput-steps", type=int, default=300, help="updates of each throughput run")
    parser.add_argument("--max-steps", type=int, help="stop each training after this many updates (smoke tests)")
    parser.add_argument("--limit", type=int, help="test images for every metric (default: all 10,000)")
    parser.add_argument("--samples", type=int, help="generated images per metric (default: as many as test images)")
    parser.add_argument("--timed", type=int, default=1000, help="images each sampler draws for its speed")
    parser.add_argument("--dcgan-epochs", type=int, default=5,
                        help="epochs of the dcgan run measured beside DDPM (about its training minutes)")
    parser.add_argument("--images", type=Path, default=Path("docs/images"), help="where the grids go")
    args = parser.parse_args()

    base = ["ddpm", "--dataset", "mnist", "--seed", "0", "--quiet", "--device", args.device]
    for flag, value in (("--lr", args.lr), ("--batch-size", args.batch_size)):
        if value is not None:
            base += [flag, str(value)]
    for option in args.options:
        base += ["--set", option]
    stop = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    length = [*(["--epochs", str(args.epochs)] if args.epochs else []), *stop]
    runs = {"main": args.run_dir / f"unconditional-{args.precision}",
            "conditional": args.run_dir / f"conditional-{args.precision}",
            "dcgan": args.run_dir / f"dcgan-{args.dcgan_epochs}ep"}
    commands = {"main": [*base, *length, "--precision", args.precision],
                "conditional": [*base, *length, "--precision", args.precision, "--set", "conditional=true"],
                "dcgan": ["dcgan", "--dataset", "mnist", "--seed", "0", "--quiet", "--device", args.device,
                          "--epochs", str(args.dcgan_epochs), *stop]}
    sys.stdout.reconfigure(line_buffering=True)  # each table as soon as it is measured, also into a pipe
    minutes = {name: fit_once(path, commands[name]) for name, path in runs.items()}
    model = RunDir(runs["main"]).read_config()["model"]["config"]
    described = ", ".join(f"{key}={value}" for key, value in model.items() if key != "conditional")
    rows = RunDir(runs["main"]).metrics()
    print(f"# DDPM on MNIST; {machine(args.device)}, seed 0")
    print(f"# model: {described}; {rows[-1]['epoch']} epochs ({rows[-1]['step']} steps) at {args.precision}: "
          f"{minutes['main']:.1f} training minutes unconditional, {minutes['conditional']:.1f} conditional, "
          f"dcgan {minutes['dcgan']:.1f}; "
          f"test loss {rows[-1]['test_loss']:.4f}")
    for name, path in runs.items():
        print(f"- {name}: `gentool fit {' '.join(commands[name])} --run-dir {path}`")

    args.images.mkdir(parents=True, exist_ok=True)
    grids = {"unconditional": (runs["main"], args.images / "ddpm-mnist.png", ["-n", "64"])}
    for weight in GUIDANCE:
        grids[f"one row per class, guidance {weight}"] = (
            runs["conditional"], args.images / f"ddpm-mnist-classes-w{weight}.png",
            ["-n", str(CLASS_GRID), "--guidance", str(weight)])
    for run_dir, path, flags in grids.values():
        gentool("sample", "--run", str(run_dir), "--device", args.device, *flags, "--out", str(path), "--force")
    print("\ngrids (DDIM, 50 steps): " + "; ".join(f"{what}: {path}" for what, (_, path, _) in grids.items()))

    throughput = {}
    for precision in ("fp32", "bf16"):
        path = args.run_dir / f"throughput-{precision}"
        fit_once(path, [*base, "--precision", precision, "--epochs", "1", "--max-steps", str(args.throughput_steps)])
        throughput[precision] = images_per_second(path)
    print(f"\n| training precision | images/s ({args.throughput_steps} updates) |")
    print("| --- | ---: |")
    for precision, rate in throughput.items():
        print(f"| {precision} | {rate:,.0f} |")
    print(f"\nbf16 / fp32: {throughput['bf16'] / throughput['fp32']:.2f}x; the measured run: "
          f"{images_per_second(runs['main']):,.0f} images/s over all its epochs")

    timesteps = gt.load_run(runs["main"]).model.config.timesteps
    samplers = {f"DDIM, {args.ddim_steps} steps": ("ddim", {"steps": str(args.ddim_steps)}),
                f"ancestral, all {timesteps} steps": ("ddpm", {})}
    measure = ["--run", str(runs["main"]), "--device", args.device, "--json"]
    measure += ["--limit", str(args.limit)] if args.limit else []
    measure += ["--k", str(args.samples)] if args.samples else []
    quality = {}
    for label, (sampler, options) in samplers.items():
        flags = [part for key, value in options.items() for part in (f"--{key}", value)]
        result = json.loads(gentool("evaluate", *measure, "--metric", "fid,kid,precision-recall",
                                    "--sampler", sampler, *flags))
        quality[label] = (result, sample_seconds(runs["main"], args.device, args.timed, sampler, options))
    first = next(iter(quality.values()))[0]
    tested = f"the first {args.limit:,}" if args.limit else "all 10,000"
    print(f"\n# {first['fid_k']:,} generated images per metric against {tested} test images; "
          f"features: {first['fid_features']}")
    print("| sampler | FID | KID | precision | recall | s per 1,000 images |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, (r, seconds) in quality.items():
        print(f"| {label} | {r['fid']:.3f} | {r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{seconds:.2f} |")
    (fast, fast_seconds), (slow, slow_seconds) = quality.values()
    speedup, fid_change = slow_seconds / fast_seconds, fast["fid"] / slow["fid"] - 1
    met = speedup >= SPEED_GOAL and abs(fid_change) <= FID_GOAL
    print(f"\nDDIM speed-up {speedup:.1f}x, FID {fid_change:+.1%} against ancestral sampling "
          f"(goal: >= {SPEED_GOAL:.0f}x, within {FID_GOAL:.0%}): {'met' if met else 'not met'}")
    dcgan = json.loads(gentool("evaluate", "--run", str(runs["dcgan"]), *measure[2:], "--metric",
                               "fid,kid,precision-recall"))
    dcgan_seconds = sample_seconds(runs["dcgan"], args.device, args.timed, "prior", {})
    print(f"\n| model, {first['fid_k']:,} images | training min | FID | KID | precision | recall | s per 1,000 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, trained, r, seconds in ((f"ddpm, DDIM {args.ddim_steps} steps", minutes["main"], fast, fast_seconds),
                                        (f"dcgan, {args.dcgan_epochs} epochs", minutes["dcgan"], dcgan,
                                         dcgan_seconds)):
        print(f"| {label} | {trained:.1f} | {r['fid']:.3f} | {r['kid']:.4f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {seconds:.2f} |")
    print(f"\nDDPM FID below DCGAN's: {'met' if fast['fid'] < dcgan['fid'] else 'not met'}")

    if "label-accuracy" not in get_toolkit().metrics:
        print("\nlabel accuracy: skipped, no 'label-accuracy' metric is installed (gentool list-metrics)")
        return
    print(f"\n| guidance | label accuracy ({first['fid_k']:,} images, DDIM, {args.ddim_steps} steps) |")
    print("| ---: | ---: |")
    for weight in GUIDANCE:
        result = json.loads(gentool("evaluate", "--run", str(runs["conditional"]), *measure[2:], "--metric",
                                    "label-accuracy", "--guidance", str(weight), "--steps", str(args.ddim_steps)))
        print(f"| {weight} | {result['label_accuracy']:.3f} |")

if __name__ == "__main__":
    main()
