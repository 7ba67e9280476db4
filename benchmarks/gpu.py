"""Every speed benchmark on one device, each in fp32, channels-last, bf16 and compiled: one Markdown table.

Rows, each timed four ways, one lever at a time (fp32 with contiguous NCHW weights;
fp32 with ``--channels-last``; ``--precision bf16`` autocast; fp32 with ``--compile``):

- vae: ``gentool fit vae``'s default recipe (the article's MLP, batch 128): training
  images/s, and the seconds an epoch of the training split takes at that rate;
- dcgan: the article's 96 x 96 DCGAN, batch 64, discriminator every batch and generator
  every 5th (``--set trainer.g_every=5``): training images/s;
- glow, ddpm: their default recipes' training images/s, where a plugin registers them
  (a "not installed" row otherwise);
- nll: the ``nll`` metric of the conv VAE (the docs' conv recipe) with k importance
  samples per image: seconds per 1,000 test images and importance samples/s;
- fid: the ``fid`` metric of the DCGAN over N generated and N real images, in seconds,
  with its feature classifier cached; training that classifier, which its first use
  does, is timed on its own row before.

Training goes through ``gentoolkit.api.fit``, gentoolkit's own training path. Its first
steps (compilation, allocator and cuDNN warm-up) are not timed; the device is synchronised
at the end of every timed step; a row stops after its step count or time budget
(``--budget``). With ``--rounds N`` the whole table is measured N times over, round after
round, so that every variant meets the machine in each state (a shared CPU's load, a GPU's
clocks); each cell is then the median round, with the rounds' spread. Metrics
are timed through the registered metric on data loaded once, after one untimed call on a
batch of the same shape, with the device synchronised around the timed call. Weights
trained for one step suffice: speed does not depend on what the model has learnt.

On a GPU (MNIST's raw files in ./.gpu-data/MNIST/raw):

    python benchmarks/gpu.py --device cuda --data-dir .gpu-data --out gpu-speed.md

On a CPU, as the test suite does (procedural data, smallest sizes):

    python benchmarks/gpu.py --device cpu --quick --dataset shapes

The levers on a CPU, on the rows a CPU can run at full size:

    python benchmarks/gpu.py --device cpu --only vae,dcgan --rounds 3 --budget 10 --out cpu-levers.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path

import torch
from shared import CONV_VAE, StepClock, synchronize

import gentoolkit
import gentoolkit.api as gt
from gentoolkit import Callback, GentoolError, ImageData
from gentoolkit.registry import get_toolkit
from gentoolkit.training import PRECISIONS, compile_networks, compile_unavailable
from gentoolkit_metrics.features import classifier_features


@dataclass(frozen=True)
class Sizes:
    """How much work each row does: a full run for a GPU, or a --quick check."""

    warmup: int  # training steps before the timed ones (compilation happens here)
    steps: int  # at most this many timed training steps per row
    budget: float  # at most this many timed seconds per training row
    dcgan_size: int  # image side of the dcgan and fid rows
    nll_k: int  # importance samples per image
    nll_images: int  # test images per nll evaluation
    nll_max_floats: int  # the nll metric's max_floats: floats decoded at once
    fid_images: int  # generated images, and real ones, per fid evaluation
    eval_batch: int  # images per metric batch (one batch is the untimed warm-up call)
    shapes: tuple[int, int] | None  # train and test images of the shapes data set (None: its default)
    # --set options and batch size that shrink the glow and ddpm rows' models (empty: their default recipes)
    small: dict[str, tuple[str, ...]] = field(default_factory=dict)
    small_batch: int | None = None


FULL = Sizes(warmup=30, steps=3000, budget=5.0, dcgan_size=96, nll_k=5000, nll_images=1000,
             nll_max_floats=1 << 26, fid_images=10_000, eval_batch=500, shapes=None)
QUICK = Sizes(warmup=2, steps=3, budget=2.0, dcgan_size=28, nll_k=8, nll_images=8,
              nll_max_floats=1 << 20, fid_images=16, eval_batch=4, shapes=(384, 32),
              small={"glow": ("steps=2", "hidden=16"),
                     "ddpm": ("base_channels=8", "channel_mult=1,2", "res_blocks=1", "attention_levels=1",
                              "timesteps=20")},
              small_batch=16)


@dataclass(frozen=True)
class Variant:
    """One way to run every benchmark."""

    name: str
    precision: str  # autocast precision, as --precision
    compile: bool  # as --compile
    channels_last: bool = False  # as --channels-last; the others train contiguous, whatever the model prefers


VARIANTS = {v.name: v for v in (Variant("fp32", "fp32", False), Variant("channels_last", "fp32", False, True),
                                Variant("bf16", "bf16", False), Variant("compile", "fp32", True))}
ROWS = ("vae", "dcgan", "glow", "ddpm", "nll", "fid")  # what --only chooses from: each row's first word


@dataclass
class Result:
    """The measured cells of one row."""

    rate: str = ""  # throughput
    time: str = ""  # seconds for a stated amount of work
    warmup: str = ""  # untimed seconds before it, compilation included
    measured: str = ""  # what the numbers were measured over, or why there are none
    value: float | None = None  # the number rounds are ranked by (a rate or a time); None: nothing to rank


@dataclass
class Row:
    """One line of the table, measured once per round when ``measure`` is called."""

    benchmark: str
    variant: str
    measure: Callable[[], Result]
    once: bool = False  # measured in the first round only (a second call would measure something else)
    results: list[Result] = field(default_factory=list)

    @property
    def result(self) -> Result:
        """The median round, and the rounds' spread; a failed round's error, which outranks numbers."""
        failed = [r for r in self.results if r.value is None]
        if failed or len(self.results) == 1:
            return (failed or self.results)[0]
        ranked = sorted(self.results, key=lambda r: r.value)
        median = ranked[(len(ranked) - 1) // 2]
        spread = (ranked[-1].value - ranked[0].value) / median.value
        return replace(median, measured=f"{median.measured}; median of {len(ranked)} rounds, spread {spread:.0%}")


@dataclass
class Bench:
    """Where and on what every row runs."""

    device: torch.device
    dataset: str
    data_dir: Path
    sizes: Sizes
    runs: Path  # temporary run directories

    def fit(self, model: str, variant: Variant, max_steps: int, image_size: int | None = None,
            batch_size: int | None = None, overrides: tuple[str, ...] = (),
            callbacks: tuple[Callback, ...] = ()) -> gt.Run:
        """Train with ``gentoolkit.api.fit`` on the benchmark's data (the model's recipe where unset)."""
        data = [f"data.train_size={self.sizes.shapes[0]}", f"data.test_size={self.sizes.shapes[1]}"] \
            if self.dataset == "shapes" and self.sizes.shapes else []
        return gt.fit(model, self.dataset, data_dir=self.data_dir, download=False, image_size=image_size,
                      batch_size=batch_size, epochs=10_000, max_steps=max_steps, device=str(self.device),
                      precision=variant.precision, compile=self.compiles(variant),
                      channels_last=variant.channels_last, runs_dir=self.runs,
                      overrides=[*overrides, *data], callbacks=callbacks, progress=False)

    def compiles(self, variant: Variant) -> bool:
        """Whether ``variant`` compiles; an error where it cannot, rather than uncompiled numbers under its name."""
        reason = compile_unavailable(self.device) if variant.compile else None
        if reason:
            raise GentoolError(reason)
        return variant.compile

    def train(self, model: str, variant: Variant, per_epoch: bool = False, image_size: int | None = None,
              batch_size: int | None = None, overrides: tuple[str, ...] = ()) -> Result:
        """Training images/s at steady state (and seconds per epoch of the training split at that rate)."""
        sizes = self.sizes
        clock = StepClock(sizes.warmup, sizes.steps, sizes.budget)
        run = self.fit(model, variant, sizes.warmup + sizes.steps, image_size, batch_size, overrides, (clock,))
        rate = clock.images_per_second
        epoch = f"{run.config.dataset.train_size / rate:.3g} s/epoch" if per_epoch else ""
        return Result(f"{rate:,.0f} images/s", epoch, f"{clock.warmup_seconds:.3g}",
                      f"{clock.steps} steps, {clock.seconds:.3g} s", rate)

    def trained(self, model: str, image_size: int | None = None,
                overrides: tuple[str, ...] = ()) -> tuple[gt.Run, ImageData]:
        """A run of ``model`` trained for one step (weights for a metric to evaluate), and its data."""
        run = self.fit(model, VARIANTS["fp32"], 1, image_size, overrides=overrides)
        return run, gt.load_data(run.toolkit, run.config.dataset)

    @cached_property
    def conv_vae(self) -> tuple[gt.Run, ImageData]:
        return self.trained("vae", overrides=tuple(CONV_VAE))

    @cached_property
    def dcgan(self) -> tuple[gt.Run, ImageData]:
        return self.trained("dcgan", image_size=self.sizes.dcgan_size)

    @contextmanager
    def evaluation(self, run: gt.Run, variant: Variant) -> Iterator[gt.Run]:
        """A fresh copy of ``run`` on the device, in the memory format, compiled and under autocast
        as ``variant`` says."""
        fresh = gt.load_run(run.path, device=str(self.device))
        if variant.channels_last:
            fresh.model.to(memory_format=torch.channels_last)
        if self.compiles(variant):
            compile_networks(fresh.model)
        with torch.autocast(self.device.type, dtype=PRECISIONS[variant.precision],
                            enabled=variant.precision != "fp32"):
            yield fresh

    def metric_clock(self, run: gt.Run, name: str, data: ImageData, **config) -> Callable[[torch.Tensor, int], float]:
        """A function timing the registered metric ``name`` on some images with some k, in seconds."""
        metric_cls = run.toolkit.metrics.get(name)
        metric = metric_cls(metric_cls.Config(**config))

        def seconds(images: torch.Tensor, k: int) -> float:
            synchronize(self.device)
            start = time.perf_counter()
            metric.compute(run.model, images, k=k, batch_size=self.sizes.eval_batch, data=data,
                           sampler=run.sampler(), generator=torch.Generator(device=self.device).manual_seed(0))
            synchronize(self.device)
            return time.perf_counter() - start

        return seconds

    def nll(self, variant: Variant) -> Result:
        """Importance samples/s of the nll metric, and seconds per 1,000 images."""
        (run, data), sizes = self.conv_vae, self.sizes
        images = data.test[:sizes.nll_images].to(self.device)
        with self.evaluation(run, variant) as fresh:
            clock = self.metric_clock(fresh, "nll", data, max_floats=sizes.nll_max_floats)
            warmup, seconds = clock(images[:sizes.eval_batch], sizes.nll_k), clock(images, sizes.nll_k)
        return Result(f"{len(images) * sizes.nll_k / seconds:,.0f} samples/s",
                      f"{seconds * 1000 / len(images):.3g} s per 1,000 images", f"{warmup:.3g}",
                      f"{len(images):,} images", seconds)

    def classifier(self) -> Result:
        """Seconds to train and cache fid's feature classifier, as its first use does."""
        _, data = self.dcgan
        start = time.perf_counter()
        classifier_features(data, self.device, "fid")  # the cache folder starts empty: this trains it
        synchronize(self.device)
        seconds = time.perf_counter() - start
        return Result(time=f"{seconds:.3g} s", measured=f"{len(data.train):,} training images", value=seconds)

    def fid(self, variant: Variant) -> Result:
        """Seconds of the fid metric: draw and embed N images, embed N real ones, compare."""
        (run, data), n = self.dcgan, self.sizes.fid_images
        images = data.test[:n].to(self.device)
        with self.evaluation(run, variant) as fresh:
            clock = self.metric_clock(fresh, "fid", data, features="classifier")
            warmup, seconds = clock(images[:self.sizes.eval_batch], self.sizes.eval_batch), clock(images, n)
        return Result(time=f"{seconds:.3g} s", warmup=f"{warmup:.3g}",
                      measured=f"{n:,} generated, {len(images):,} real", value=seconds)


def rows(bench: Bench, variants: list[Variant]) -> list[Row]:
    """Every row of the table, in order, not yet measured."""
    sizes, models = bench.sizes, get_toolkit().models
    side = sizes.dcgan_size
    table = [Row("vae fit: default recipe (MLP 784-400-20, batch 128)", v.name,
                 partial(bench.train, "vae", v, per_epoch=True)) for v in variants]
    table += [Row(f"dcgan fit: {side}x{side}, batch 64, g_every=5", v.name,
                  partial(bench.train, "dcgan", v, image_size=side, batch_size=64, overrides=("trainer.g_every=5",)))
              for v in variants]
    for model in ("glow", "ddpm"):
        if model not in models:
            table.append(Row(f"{model} fit", "all", partial(Result, measured="not installed"), once=True))
            continue
        if model in sizes.small:
            label, shrink = f"{model} fit: small ({', '.join(sizes.small[model])}; batch {sizes.small_batch})", \
                dict(batch_size=sizes.small_batch, overrides=sizes.small[model])
        else:
            label, shrink = f"{model} fit: default recipe (batch {models.get(model).recipe.batch_size})", {}
        table += [Row(label, v.name, partial(bench.train, model, v, **shrink)) for v in variants]
    table += [Row(f"nll: conv VAE, k={sizes.nll_k}, batch {sizes.eval_batch}, max_floats={sizes.nll_max_floats:,}",
                  v.name, partial(bench.nll, v)) for v in variants]
    table.append(Row("fid feature classifier: first use trains and caches it", "fp32", bench.classifier, once=True))
    table += [Row(f"fid: dcgan {side}x{side}, {sizes.fid_images:,} generated vs real, batch {sizes.eval_batch}",
                  v.name, partial(bench.fid, v)) for v in variants]
    return table


def header(bench: Bench, variants: list[Variant], rounds: int) -> list[str]:
    """What the numbers were measured on and with."""
    device, sizes = bench.device, bench.sizes
    if device.type == "cuda":
        card = torch.cuda.get_device_name(device)
    else:
        card = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    data = "shapes (procedural)" if bench.dataset == "shapes" else f"{bench.dataset} from {bench.data_dir}"

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    return [
        f"*gentoolkit speed on {card} ({device.type}); torch {torch.__version__}, "
        f"gentoolkit {gentoolkit.__version__}, Python {platform.python_version()}*  ",
        f"*data: {data}; variants: {', '.join(v.name for v in variants)} (compile: fp32, torch.compile's "
        f"default mode); TF32 matmul {on(torch.backends.cuda.matmul.allow_tf32)}, cuDNN TF32 "
        f"{on(torch.backends.cudnn.allow_tf32)}, cudnn.benchmark {on(torch.backends.cudnn.benchmark)}*  ",
        f"*training: {sizes.warmup} untimed warm-up steps, then at most {sizes.steps} steps or {sizes.budget:g} s, "
        f"synchronised every step; metrics: one untimed call on one batch first"
        f"{f'; every row measured in {rounds} rounds, the median shown' if rounds > 1 else ''}*  ",
    ]


def markdown(rows: list[Row]) -> list[str]:
    lines = ["| benchmark | variant | throughput | time | warm-up s | measured over |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in rows:
        r = row.result
        lines.append(f"| {row.benchmark} | {row.variant} | {r.rate} | {r.time} | {r.warmup} | {r.measured} |")
    return lines


def measure(row: Row) -> bool:
    """Add a round's result to ``row``, or the error that stopped it; whether it succeeded."""
    try:
        row.results.append(row.measure())
        return True
    except Exception as exc:  # one failed row must not cost the others' numbers
        traceback.print_exc()
        row.results.append(Result(measured=f"error: {type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")))
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cpu or mps")
    parser.add_argument("--dataset", choices=["mnist", "shapes"], default="mnist",
                        help="mnist (MNIST/raw under the data folder) or shapes (procedural: no files needed)")
    parser.add_argument("--data-dir", help="data folder holding MNIST/raw; default $GENTOOL_DATA_DIR")
    parser.add_argument("--quick", action="store_true", help="smallest sizes and steps: a check, not a measurement")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"a comma-separated subset of "
                        f"{','.join(VARIANTS)} (default: all)")
    parser.add_argument("--only", default=",".join(ROWS), help=f"a comma-separated subset of the rows "
                        f"{','.join(ROWS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="measure the whole table this many times over and "
                        "show each row's median round (default: 1)")
    parser.add_argument("--budget", type=float, help="timed seconds per training row (default: 5, 2 with --quick)")
    parser.add_argument("--out", type=Path, help="also write the table here (rewritten after every row)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    variants = [v for name, v in VARIANTS.items() if name in args.variants.split(",")]
    only = set(args.only.split(","))
    if only - set(ROWS):
        parser.error(f"--only: unknown {', '.join(sorted(only - set(ROWS)))}; choose from {', '.join(ROWS)}")
    started = time.perf_counter()
    data_dir = gt.data_root(args.data_dir)  # before the cache folder moves below
    device = gt.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp  # empty: fid's classifier is trained (and timed) here, no cache touched
        sizes = QUICK if args.quick else FULL
        if args.budget is not None:
            sizes = replace(sizes, budget=args.budget)
        bench = Bench(device, args.dataset, data_dir, sizes, Path(tmp) / "runs")
        table = [row for row in rows(bench, variants) if row.benchmark.split()[0].rstrip(":") in only]
        failed = 0
        for number in range(args.rounds):
            for row in table:
                if number and row.once:
                    continue
                failed += not measure(row)
                r = row.results[-1]
                print(f"round {number + 1}: {row.benchmark} / {row.variant}: {r.rate} {r.time} {r.measured}",
                      file=sys.stderr)
                lines = [*header(bench, variants, args.rounds), "", *markdown([t for t in table if t.results]), "",
                         f"total wall time (imports not counted): {time.perf_counter() - started:.0f} s"]
                if args.out:
                    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
