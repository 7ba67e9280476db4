"""Bernoulli VAE on binarised MNIST: train recipes from the CLI, measure test ELBO and NLL.

Each recipe is a ``gentool fit`` command; each run is then measured with
``gentool evaluate --metric elbo,nll`` (NLL: importance weighted, Burda et al.
2015, on a fixed seeded binarisation of the test set). For comparison the
source article's own loop (``vae_speed.py``: its DataLoader and its MLP, maths
fixed, trained on grey levels read as probabilities) is trained for the same 20
epochs, its weights are stored as a gentoolkit run and measured the same way.
The script prints a Markdown table and writes the test-ELBO-per-epoch plot.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/vae_quality.py --only default article iwae --k 5000
    GENTOOL_DATA_DIR=../shared/data python benchmarks/vae_quality.py --only conv conv-iwae --k 5000 --limit 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch
from shared import CONV_RECIPE, fit_once, gentool, timed
from vae_speed import Article

import gentoolkit
import gentoolkit.api as gt
from gentoolkit import checkpoint
from gentoolkit.plots import plot_metrics
from gentoolkit.registry import get_toolkit
from gentoolkit.rundir import RunDir

RECIPES = {  # run folder: (description, gentool fit flags)
    "default": ("`gentool fit vae`: the article's MLP 784-400-20, batch 128, 20 epochs; Adam 1e-3",
                ["--epochs", "20"]),
    "iwae": ("the default trained on the IWAE bound with K=5 instead of the ELBO", [
        "--epochs", "20", "--objective", "iwae", "--set", "objective.samples=5"]),
    "conv": ("conv, 32-d latent, Adam 1e-3 with cosine schedule, 20 epochs", CONV_RECIPE),
    "conv-iwae": ("conv trained on the IWAE bound with K=5",
                  [*CONV_RECIPE, "--objective", "iwae", "--set", "objective.samples=5"]),
}


def article_run(run_dir: Path, like: Path, epochs: int) -> float:
    """Train the article's loop for ``epochs`` and store it in ``run_dir`` as a gentoolkit run
    of the same MLP (the config of the run in ``like``); return the training minutes."""
    torch.manual_seed(0)
    article = Article(str(gt.data_root()))
    minutes = timed(lambda: [article.epoch() for _ in range(epochs)])
    # The same MLP as the gentoolkit run in ``like``, with the article's training options
    # (its own loop trained it, so trainer and objective are those of the equivalent gentoolkit run).
    like_config = gt.load_run(like).config
    config = dataclasses.replace(like_config, training=dataclasses.replace(like_config.training, epochs=epochs,
                                                                           lr=3e-4, seed=0))
    model = gt.build_model(get_toolkit(), config)
    net = article.model
    weights = {  # the article's layers in the order of the MLP's Linear layers
        "encoder.1": (net.fc1.weight, net.fc1.bias),
        "encoder.3": (torch.cat([net.fc2_mean.weight, net.fc2_logvar.weight]),
                      torch.cat([net.fc2_mean.bias, net.fc2_logvar.bias])),
        "decoder.0": (net.fc3.weight, net.fc3.bias),
        "decoder.2": (net.fc4.weight, net.fc4.bias),
    }
    model.load_state_dict({f"{layer}.{kind}": tensor for layer, pair in weights.items()
                           for kind, tensor in zip(("weight", "bias"), pair, strict=True)})
    RunDir(run_dir).write_config(config.to_json())
    checkpoint.save_weights(model, run_dir / RunDir.WEIGHTS)
    return minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--k", type=int, default=5000, help="importance samples for the NLL")
    parser.add_argument("--limit", type=int, default=None, help="test images for the NLL (default: all 10,000)")
    parser.add_argument("--plot", type=Path, default=Path("docs/images/vae-test-elbo.png"))
    parser.add_argument("--only", nargs="+", choices=[*RECIPES, "article"], help="run only these recipes")
    args = parser.parse_args()
    rows = []
    for name in args.only or [*RECIPES, "article"]:
        run_dir = args.runs_dir / name
        if name == "article":
            description = "the article's own loop, maths fixed: DataLoader, grey levels, 20 epochs"
            command = "python benchmarks/vae_quality.py (Article from benchmarks/vae_speed.py, 20 epochs)"
            if not (args.runs_dir / "default" / RunDir.CONFIG).exists():
                sys.exit("the article's run borrows the default recipe's config.json: run that recipe first")
            trained = (run_dir / RunDir.WEIGHTS).exists()  # its minutes are not kept: report them once
            minutes = float("nan") if trained else article_run(run_dir, args.runs_dir / "default", 20)
        else:
            description, flags = RECIPES[name]
            fit = ["vae", "--dataset", "mnist", "--seed", "0", "--quiet", *flags]
            command = f"gentool fit {' '.join(fit)} --run-dir {run_dir}"
            minutes = fit_once(run_dir, fit)
        elbo = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "elbo", "--json"))
        limit = ["--limit", str(args.limit)] if args.limit else []
        nll = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "nll", "--k", str(args.k),
                                 *limit, "--json"))
        rows.append((f"{name} ({description})", command, elbo["elbo"], nll["nll"], minutes))
    print(f"# Bernoulli VAE, binarised MNIST; {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print(f"# test ELBO on all 10,000 test images; NLL (k={args.k}) on "
          + (f"the first {args.limit:,}" if args.limit else "all 10,000"))
    print("| recipe | test ELBO (nats) | test NLL (nats) | training minutes |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, elbo, nll, minutes in rows:
        print(f"| {name} | {elbo:.2f} | {nll:.2f} | {minutes:.1f} |")
    print()
    for name, command, *_ in rows:
        print(f"- {name.split()[0]}: `{command}`")
    curves = {name: RunDir(args.runs_dir / name).metrics() for name in RECIPES}
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot_metrics(curves, ["test_elbo"], args.plot, title="Bernoulli VAE on MNIST: test ELBO per epoch")
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
