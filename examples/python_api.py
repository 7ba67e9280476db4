"""Train a VAE, sample from it and reload the run, from Python instead of the CLI.

    python examples/python_api.py                      # offline, on the procedural shapes
    python examples/python_api.py --dataset mnist      # downloads MNIST unless $GENTOOL_DATA_DIR has it
"""

from __future__ import annotations

import argparse

import gentoolkit.api as gt
from gentoolkit.images import save_grid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vae")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()

    # The same call `gentool fit` makes; unset options come from the model's recipe.
    run = gt.fit(args.model, args.dataset, epochs=args.epochs, runs_dir=args.runs_dir,
                 overrides=["latent_dim=16"], progress=True)
    for row in run.metrics:
        print(f"epoch {row['epoch']}: test ELBO {row.get('test_elbo', float('nan')):.2f} nats")

    # Reload the run as `gentool sample` does, and draw 64 images in [0, 1].
    reloaded = gt.load_run(run.path)
    samples = reloaded.sample(64, seed=0)
    save_grid(samples.images, run.path / "api-samples.png")
    print(f"model {type(reloaded.model).__name__} with {sum(p.numel() for p in reloaded.model.parameters()):,}"
          f" parameters; samples in {run.path / 'api-samples.png'}")


if __name__ == "__main__":
    main()
