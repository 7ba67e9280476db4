"""DDIM's noise (``--eta``) against FID, on a trained ddpm run, beside ancestral sampling.

One ``gentool evaluate --metric fid,kid,precision-recall`` call per eta, with DDIM at
``--steps`` steps, and one with the ancestral sampler through all T steps, all on the same
generated-image count and test images, so the rows compare with each other. The run is
``diffusion_mnist.py``'s (trained there; this script only measures).

    GENTOOL_DATA_DIR=../shared/data python benchmarks/ddim_eta.py --samples 500
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared import gentool, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/benchmarks/diffusion-mnist/unconditional-fp32"))
    parser.add_argument("--etas", default="0,0.5,1", help="comma-separated values of --eta")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--samples", type=int, default=500, help="generated images per evaluation")
    parser.add_argument("--ancestral", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure ancestral sampling through all T steps (slow on a CPU)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not (args.run / "config.json").is_file():
        raise SystemExit(f"{args.run} is not a trained run; train it with benchmarks/diffusion_mnist.py first.")
    measure = ["evaluate", "--run", str(args.run), "--device", args.device, "--json", "--k", str(args.samples),
               "--metric", "fid,kid,precision-recall"]
    samplers = {f"DDIM, {args.steps} steps, eta {eta}": ["--sampler", "ddim", "--steps", str(args.steps), "--eta", eta]
                for eta in args.etas.split(",")}
    if args.ancestral:
        samplers["ancestral, all steps"] = ["--sampler", "ddpm"]
    rows = {label: json.loads(gentool(*measure, *flags)) for label, flags in samplers.items()}
    print(f"# DDIM eta against FID; run {args.run}; {machine(args.device)}")
    print(f"# {args.samples:,} generated images per metric against all test images; "
          f"features: {next(iter(rows.values()))['fid_features']}")
    print("| sampler | FID | KID | precision | recall | s to evaluate |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in rows.items():
        print(f"| {label} | {r['fid']:.3f} | {r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['settings']['seconds']:.0f} |")


if __name__ == "__main__":
    main()
