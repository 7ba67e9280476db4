"""One table across model families on MNIST: likelihood, sample quality, training and sampling cost.

Each model is trained from the CLI (``gentool fit``; existing runs are reused) and
measured with the same two ``gentool evaluate`` calls:

- ``--metric nll`` where the model has a likelihood. Its bits/dim are NOT all on one
  scale: ``gaussian-vae`` and ``glow`` model the 8-bit pixels dequantised into
  [0, 1], so theirs are bits per 8-bit pixel (8 = knowing nothing); ``bernoulli-vae``
  models binarised {0, 1} pixels, so its are bits per binary pixel (1 = a fair
  coin), a far easier target. The VAEs' NLL is importance weighted (``--k``
  samples), glow's is exact.
- ``--metric fid,kid,precision-recall`` with the model's default sampler (glow at
  temperature 1), all in the same feature space: the offline MNIST classifier of the
  ``metrics`` plugin unless Inception weights are installed (see docs/evaluation.md).

Sampling speed is ``run.sample(1000)`` through the Python API after one warm-up draw,
so process start-up is not counted. Training minutes are the epochs' own ``seconds``
from metrics.jsonl (the training loop: no start-up, no held-out evaluation), the same
for a run trained here and one reused. The two evaluation columns are each call's
``settings.seconds``: data loading, sampling and the metrics, without start-up.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/families.py --k 500 --limit 1000
    GENTOOL_DATA_DIR=../shared/data python benchmarks/families.py --device cuda --epochs glow=30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from shared import CONV_OPTIONS, fit_once, gentool, machine

import gentoolkit.api as gt
from gentoolkit import capabilities
from gentoolkit.registry import get_toolkit

MODELS = {  # name: (gentool fit flags, default epochs, what its bits/dim are bits of)
    "bernoulli-vae": (CONV_OPTIONS, 20, "binarised pixels"),
    "gaussian-vae": (CONV_OPTIONS, 20, "8-bit pixels"),
    "dcgan": ([], 5, None),
    "glow": (["--lr-schedule", "cosine"], 8, "8-bit pixels"),
}
SAMPLED = 1000  # images drawn for the sampling speed


def epochs_per_model(pairs: list[str]) -> dict[str, int]:
    """``["glow=30", "dcgan=2"]`` over the defaults in MODELS."""
    epochs = {name: default for name, (_, default, _) in MODELS.items()}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in MODELS or not value.isdigit() or int(value) <= 0:
            raise SystemExit(f"--epochs {pair}: expected MODEL=EPOCHS with MODEL one of {', '.join(MODELS)}")
        epochs[name] = int(value)
    return epochs


def sample_seconds(run_dir: Path, device: str) -> float:
    """Seconds to draw SAMPLED images with the model's default sampler, after a warm-up draw."""
    run = gt.load_run(run_dir, device)
    run.sample(8)
    cuda = run.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(run.device)
    start = time.perf_counter()
    run.sample(SAMPLED, seed=1)
    if cuda:
        torch.cuda.synchronize(run.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/families"))
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="measure only these models")
    parser.add_argument("--epochs", nargs="+", default=[], metavar="MODEL=N",
                        help="epochs per model; default: " + ", ".join(f"{m}={e}" for m, (_, e, _) in MODELS.items()))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: for training, evaluation and sampling")
    parser.add_argument("--k", type=int, help="importance samples for the VAEs' NLL (default: the metric's, 5000)")
    parser.add_argument("--samples", type=int, help="generated images for fid, kid and precision-recall "
                                                    "(default: as many as test images)")
    parser.add_argument("--limit", type=int, help="test images for every metric (default: all 10,000)")
    parser.add_argument("--max-steps", type=int, help="stop each training after this many updates (smoke tests)")
    args = parser.parse_args()
    epochs = epochs_per_model(args.epochs)
    limit = ["--limit", str(args.limit)] if args.limit else []
    rows = []
    for name in args.only or MODELS:
        flags, _, bits_of = MODELS[name]
        fit = [name, "--dataset", "mnist", "--seed", "0", "--quiet", "--device", args.device, *flags,
               "--epochs", str(epochs[name])]
        if args.max_steps:
            fit += ["--max-steps", str(args.max_steps)]
        run_dir = args.runs_dir / f"{name}-{epochs[name]}ep"
        minutes = fit_once(run_dir, fit)
        run = ["--run", str(run_dir), "--device", args.device, *limit, "--json"]
        result = {}
        if "Likelihood" in capabilities(get_toolkit().models.get(name)):
            k = ["--k", str(args.k)] if args.k else []
            result.update(json.loads(gentool("evaluate", *run, "--metric", "nll", *k)))
            result["nll_seconds"] = result.pop("settings")["seconds"]
        samples = ["--k", str(args.samples)] if args.samples else []
        result.update(json.loads(gentool("evaluate", *run, "--metric", "fid,kid,precision-recall", *samples)))
        result["fid_seconds"] = result.pop("settings")["seconds"]
        rows.append((name, bits_of, result, minutes, sample_seconds(run_dir, args.device),
                     f"gentool fit {' '.join(fit)} --run-dir {run_dir}"))

    print(f"# MNIST, one row per family; {machine(args.device)}, seed 0")
    print(f"# test images: {f'the first {args.limit:,}' if args.limit else 'all 10,000'}; "
          f"features: {rows[0][2]['fid_features']}, {rows[0][2]['fid_k']:,} generated images per metric")
    print("| model | epochs | NLL bits/dim | bits of | NLL | FID | KID | precision | recall | training minutes "
          f"| s per {SAMPLED:,} samples | s to evaluate nll | s to evaluate fid,kid,precision-recall |")
    print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, bits_of, r, minutes, seconds, _ in rows:
        if "nll" in r:
            how = "exact" if r["nll_kind"] == "exact" else f"{r['nll_kind']}, k={r['nll_k']}"
            likelihood = f"{r['nll_bits_per_dim']:.3f} | {bits_of} | {r['nll']:.1f} nats ({how})"
            nll_seconds = f"{r['nll_seconds']:.1f}"
        else:
            likelihood, nll_seconds = "- | - | -", "-"
        print(f"| {name} | {epochs[name]} | {likelihood} | {r['fid']:.3f} | {r['kid']:.4f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {minutes:.1f} | {seconds:.2f} | {nll_seconds} | {r['fid_seconds']:.1f} |")
    print()
    for name, *_, command in rows:
        print(f"- {name}: `{command}`")


if __name__ == "__main__":
    main()
