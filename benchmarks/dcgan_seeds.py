"""DCGAN's FID after a few epochs, per seed, channels-last against NCHW memory.

Both formats compute the same losses to float rounding (tests/test_dcgan.py), but a GAN's
FID after a few epochs depends on the path its two players take, which rounding changes.
This trains ``gentool fit dcgan --dataset mnist`` once per seed in each format (existing
runs in ``--runs-dir`` are reused) and measures each with ``gentool evaluate --metric
fid,kid,precision-recall`` on 10,000 generated and all 10,000 test images.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/dcgan_seeds.py --seeds 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared import fit_once, gentool, machine

FORMATS = {"nchw": "--no-channels-last", "channels-last": "--channels-last"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/dcgan-seeds"))
    args = parser.parse_args()
    print(f"# DCGAN on MNIST, {args.epochs} epochs, per seed and memory format; {machine(args.device)}")
    print("# 10,000 generated images per metric against all 10,000 test images")
    print("| seed | format | FID | KID | precision | recall | training minutes |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for seed in args.seeds.split(","):
        for name, flag in FORMATS.items():
            run_dir = args.runs_dir / f"seed{seed}-{name}"
            minutes = fit_once(run_dir, ["dcgan", "--dataset", "mnist", "--seed", seed, "--quiet", "--device",
                                         args.device, "--epochs", str(args.epochs), flag])
            r = json.loads(gentool("evaluate", "--run", str(run_dir), "--device", args.device, "--json",
                                   "--metric", "fid,kid,precision-recall"))
            print(f"| {seed} | {name} | {r['fid']:.3f} | {r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                  f"{minutes:.1f} |")


if __name__ == "__main__":
    main()
