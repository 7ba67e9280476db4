"""The training loop every trainer shares.

The data lives in one uint8 tensor on the device; each epoch is one random
permutation, each batch one gather by index. The trainer does the update; the
loop does the bookkeeping: averaging metrics, held-out evaluation, callbacks
(progress, metrics.jsonl, sample grids, checkpoints) and stopping.
"""

from __future__ import annotations

import itertools
import math
import signal
import threading
import time
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._dynamo
from torch import Tensor

from gentoolkit.data import batch_count, index_batches
from gentoolkit.distributed import SINGLE, Group
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import Component, ImageData, Model, Sampler, Trainer, conditional
from gentoolkit.standard import eval_mode

if typing.TYPE_CHECKING:
    from gentoolkit.rundir import RunDir

SCHEDULES = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))),
}
CHECK_EVERY = 32  # steps between reads of the non-finite flag on an accelerator; also at epoch ends and signals
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILED_VERSIONS = 8  # versions torch.compile may make of each network: dynamo's default limit


@dataclass
class TrainingOptions:
    """How long and how to train; the model's recipe fills what the user leaves unset."""

    epochs: int  # total epochs of the run (a resumed run continues up to this)
    batch_size: int  # images per update
    lr: float  # learning rate handed to the trainer
    max_steps: int | None = None  # stop after this many updates in total
    seed: int = 0  # seeds weights, shuffling, noise and the fixed sample grid
    eval_batch_size: int = 1000  # images per held-out evaluation batch
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast (fp16 with loss scaling, CUDA only)
    lr_schedule: str = "constant"  # constant, or cosine: decay to 0 over the run's steps
    patience: int | None = None  # stop when the monitored loss has not improved for this many epochs
    keep_best: bool = False  # also keep the weights of the best epoch in best.safetensors
    on_nan: str = "stop"  # stop at a NaN/Inf loss, or skip that update and count it
    compile: bool = False  # compile the model's networks with torch.compile (same losses, faster steps)
    channels_last: bool | None = None  # 4-D weights in channels-last (NHWC) memory; None: as the model prefers
    log_every: int = 50  # steps between the numbers loggers (tensorboard, csv, wandb) get; metrics.jsonl is per epoch

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise GentoolError(f"--lr-schedule {self.lr_schedule}: use one of {', '.join(SCHEDULES)}.")
        if self.on_nan not in ("stop", "skip"):
            raise GentoolError(f"--on-nan {self.on_nan}: use stop or skip.")
        if self.patience is not None and self.patience <= 0:
            raise GentoolError(f"--patience must be a positive integer, got {self.patience}.")
        if self.precision not in PRECISIONS:
            raise GentoolError(f"--precision {self.precision}: use one of {', '.join(PRECISIONS)}.")
        if self.epochs <= 0:
            raise GentoolError(f"--epochs must be a positive integer, got {self.epochs}.")
        if self.batch_size <= 0:
            raise GentoolError(f"--batch-size must be a positive integer, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GentoolError(f"--lr must be a positive number, got {self.lr}.")
        if self.max_steps is not None and self.max_steps <= 0:
            raise GentoolError(f"--max-steps must be a positive integer, got {self.max_steps}.")
        if self.log_every <= 0:
            raise GentoolError(f"--log-every must be a positive integer, got {self.log_every}.")


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on ``device`` here, or None when it can: checked up front,
    since compilation itself only starts (and fails) at the first training step."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python or platform"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "torch.compile needs Triton for CUDA, and it is not installed"
    if device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler
        try:
            get_cpp_compiler()
        except Exception:  # inductor raises its own InvalidCxxCompiler, or whatever the lookup hit
            return "torch.compile needs a C++ compiler (g++ or clang++) for the CPU, and none was found"
    return None


def compile_networks(model: Model) -> bool:
    """Compile, in place, the model itself (a flow's trainer calls it) and each direct child
    (VAE and GAN trainers call ``encode``, ``decode``, ``netg``, ``netd``, which run the children).

    ``Module.compile`` keeps parameters and state_dict keys as they are, so optimisers built
    before and checkpoints written after work unchanged. Where torch.compile cannot run, this
    warns in one line and leaves the model uncompiled (training gives the same losses either
    way); returns whether it compiled.
    """
    reason = compile_unavailable(model.device)
    if reason:
        warnings.warn(f"--compile ignored: {reason}; training uncompiled.", stacklevel=2)
        return False
    modules = (model, *model.children())  # containers (ModuleList) are never called: a no-op for them
    for module in modules:
        module.compile()
    # Dynamo counts the compiled versions of all these modules together (train or eval mode,
    # gradients on or off, batch sizes), and past its limit runs them uncompiled: a GAN alone
    # needs about 8. Each module compiled gets the default allowance.
    torch._dynamo.config.recompile_limit += COMPILED_VERSIONS * len(modules)
    return True


def trains_channels_last(model: Model, choice: bool | None) -> bool:
    """Whether ``model`` keeps its 4-D weights channels-last (NHWC): as ``--channels-last`` or
    ``--no-channels-last`` chose, else as its class prefers. A loaded run computes in the same
    format it trained in."""
    return model.channels_last if choice is None else choice


@dataclass
class EpochProgress:
    """How far the current epoch got, so an interrupted run resumes mid-epoch exactly."""

    shuffle_state: Tensor  # the shuffling generator's state when the epoch began
    batches: int = 0  # batches done
    images: int = 0  # images seen
    seconds: float = 0.0  # training time spent before an interruption
    sums: dict[str, Tensor] = field(default_factory=dict)  # metric x images, summed
    counts: dict[str, int] = field(default_factory=dict)  # images behind each sum

    def add(self, metrics: dict[str, Tensor], n: int) -> None:
        """A batch of n images done, and its metrics; a skipped batch (--on-nan skip) adds none."""
        self.batches += 1
        self.images += n
        for key, value in metrics.items():
            value = value.detach().float() * n  # float32 sums, also under bf16 autocast
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + n

    def means(self, group: Group = SINGLE) -> dict[str, float]:
        """Per-image means over the epoch, across all training processes."""
        sums = group.sum(self.sums)
        counts = group.sum({k: torch.tensor(float(n)) for k, n in self.counts.items()})
        return {k: (v / counts[k]).item() for k, v in sums.items()}


@dataclass
class LoopState:
    """Where a run is: what a checkpoint needs besides the weights and optimisers."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed updates
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    partial: EpochProgress | None = None  # the epoch in progress, if any


class Callback(Component):
    """Hooks into the loop; override what you need.

    Plugins register callbacks users switch on with ``gentool fit --callback NAME``;
    those are built as ``cls(run_dir)``, a :class:`~gentoolkit.rundir.RunDir` (None on
    processes other than rank 0); a callback keeps its own files at ``run_dir.output(name)``.
    """

    def __init__(self, run_dir: RunDir | None = None):
        self.run_dir = run_dir

    def on_fit_start(self, loop: TrainingLoop) -> None: ...

    def on_step(self, loop: TrainingLoop, metrics: dict[str, Tensor]) -> None: ...

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, loop: TrainingLoop, error: BaseException | None) -> None:
        """Called last, with the exception that ended training early, if any."""


class StopTraining(GentoolError):
    """Training cannot go on (a loss that is not finite); the last checkpoint is kept."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised after the step in progress has finished."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir = None  # set by the API once it knows where the checkpoint went


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM instead of raising at once, so the loop stops between steps.

    A second signal restores the default behaviour and stops immediately.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        received.append(signum)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class TrainingLoop:
    """Runs ``trainer`` over ``data`` for the configured epochs."""

    def __init__(self, model: Model, trainer: Trainer, data: ImageData,
                 options: TrainingOptions, callbacks: list[Callback] = (),
                 state: LoopState | None = None, group: Group = SINGLE, grid_sampler: Sampler | None = None):
        self.model = model
        self.grid_sampler = grid_sampler
        self._grid: tuple[int, int, Tensor] | None = None  # the last grid drawn: (step, n, images)
        self.group = group
        self.trainer = trainer
        self.options = options
        self.callbacks = list(callbacks)
        self.state = state or LoopState()
        device = model.device
        self.train_data = data.train.to(device)
        self.test_data = data.test.to(device) if data.test is not None else None
        # Labels travel with the batch, to class-conditional models only.
        self.train_labels = self.test_labels = None
        if conditional(model):
            if data.train_labels is None or (data.test is not None and data.test_labels is None):
                raise GentoolError(f"model '{model.name}' is class-conditional, but the data set has no class "
                                   "labels; train it on labelled data (mnist, fashion-mnist, a folder of class "
                                   "folders) or without --set conditional=true.")
            self.train_labels = data.train_labels.to(device)
            self.test_labels = data.test_labels.to(device) if data.test is not None else None
        # Between processes every global batch must split evenly, so the last is dropped.
        self.drop_last = trainer.drop_last or group.enabled
        if options.batch_size % group.world_size:
            raise GentoolError(f"--batch-size {options.batch_size} does not split evenly between "
                               f"{group.world_size} processes; use a multiple of {group.world_size}.")
        if len(self.train_data) < options.batch_size and self.drop_last:
            raise GentoolError(f"the data set has {len(self.train_data)} training images, fewer than "
                               f"--batch-size {options.batch_size}; lower --batch-size.")
        if options.precision == "fp16":
            if device.type != "cuda":
                raise GentoolError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 here.")
            trainer.grad_scaler = torch.amp.GradScaler("cuda")
        if options.on_nan == "skip" and group.enabled:
            raise GentoolError("--on-nan skip works in one process only (a skip on one process would "
                               "leave the others waiting); use --on-nan stop with torchrun.")
        trainer.skip_nonfinite = options.on_nan == "skip"
        self.autocast = torch.autocast(device.type, dtype=PRECISIONS[options.precision],
                                       enabled=options.precision != "fp32")
        self.shuffle_generator = torch.Generator().manual_seed(options.seed)
        # The first step whose metrics were not finite (0: none yet), kept on the device so that the
        # check reads it back once every CHECK_EVERY steps on an accelerator, and every step where
        # reading is free (the CPU), a step's metrics decide a skip (--on-nan skip) or processes vote.
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)
        self.check_every_step = device.type == "cpu" or options.on_nan == "skip" or group.enabled
        if trains_channels_last(model, options.channels_last):
            model.to(memory_format=torch.channels_last)  # convolutions then compute in NHWC as well
        if options.compile:
            compile_networks(model)

    @property
    def steps_per_epoch(self) -> int:
        return batch_count(len(self.train_data), self.options.batch_size, self.drop_last)

    @property
    def total_steps(self) -> int:
        total = self.options.epochs * self.steps_per_epoch
        return min(total, self.options.max_steps) if self.options.max_steps else total

    def rng_state(self) -> dict[str, Tensor]:
        """Every random stream the loop draws from, to resume bit for bit."""
        state = {"torch": torch.get_rng_state(), "shuffle": self.shuffle_generator.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def set_rng_state(self, state: dict[str, Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        self.shuffle_generator.set_state(state["shuffle"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])

    @property
    def monitor(self) -> str:
        """The metric early stopping and ``keep_best`` watch: the trainer's, on held-out data where
        the trainer evaluates it there, else on the training batches."""
        held_out = f"test_{self.trainer.monitor}"
        if self.test_data is not None and any(held_out in row for row in self.state.history[-1:]):
            return held_out
        return f"train_{self.trainer.monitor}"

    def is_best(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` has the lowest monitored value of the run so far."""
        values = [r[self.monitor] for r in self.state.history if self.monitor in r]
        return self.monitor in row and row[self.monitor] <= min(values, default=math.inf)

    def _stalled(self) -> bool:
        patience = self.options.patience
        values = [r[self.monitor] for r in self.state.history if self.monitor in r]
        if not patience or not values:
            return False
        best = min(range(len(values)), key=values.__getitem__)
        return len(values) - 1 - best >= patience

    def _done(self) -> bool:
        max_steps = self.options.max_steps
        return (self.state.epoch >= self.options.epochs or bool(max_steps and self.state.step >= max_steps)
                or self._stalled())

    def _schedule_lr(self) -> None:
        """Scale every optimiser's learning rate for the coming step."""
        factor = SCHEDULES[self.options.lr_schedule](self.state.step / max(self.total_steps, 1))
        for optimizer in self.trainer.optimizers():
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def run(self) -> list[dict[str, Any]]:
        """Train until the epoch or step budget is spent; return the per-epoch metrics."""
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            with deferred_signals() as self.signals:
                while not self._done():
                    self._epoch()
        except BaseException as exc:
            for cb in self.callbacks:
                cb.on_fit_end(self, exc)
            raise
        for cb in self.callbacks:
            cb.on_fit_end(self, None)
        return self.state.history

    def _epoch(self) -> None:
        start = time.perf_counter()
        self.model.train()
        if self.state.partial is None:
            self.state.partial = EpochProgress(self.shuffle_generator.get_state())
        progress = self.state.partial
        self.shuffle_generator.set_state(progress.shuffle_state)  # same order after a resume
        batches = index_batches(len(self.train_data), self.options.batch_size, shuffle=True,
                                drop_last=self.drop_last, generator=self.shuffle_generator,
                                device=self.train_data.device)
        position = progress.batches  # batches of this epoch behind us
        for index in itertools.islice(batches, progress.batches, None):
            position += 1
            index = self.group.shard(index)
            if self.options.lr_schedule != "constant":
                self._schedule_lr()
            x = self.model.prepare(self.train_data[index])
            with self.autocast:
                if self.train_labels is None:
                    metrics = self.trainer.train_step(x)
                else:
                    metrics = self.trainer.train_step(x, self.train_labels[index])
            # Every metric is checked: a GAN reports d_loss and g_loss, not "loss".
            values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]) if metrics \
                else torch.zeros(1)
            finite = torch.isfinite(values).all()
            self.first_bad = torch.where(finite | (self.first_bad > 0), self.first_bad, self.state.step + 1)
            last = position == self.steps_per_epoch or self.state.step + 1 == self.options.max_steps
            if self.check_every_step or last or self.signals or (self.state.step + 1) % CHECK_EVERY == 0:
                # Decided together, so every process stops at the same step.
                signalled, diverged = self.group.any(bool(self.signals), bool(self.first_bad > 0))
            else:  # on an accelerator, reading the flag every step would stall its queue
                signalled = diverged = False
            if diverged and not self.trainer.skip_nonfinite:
                first = int(self.first_bad)
                bad = ", ".join(f"{k}={v.item()}" for k, v in metrics.items() if not torch.isfinite(v).all())
                raise StopTraining(f"training diverged: {bad or 'a metric was NaN or infinite'} at step {first} "
                                   f"(epoch {self.state.epoch + 1}); the last checkpoint is kept. Lower --lr, "
                                   "check the data, or pass --on-nan skip.")
            if diverged:  # skipped (--on-nan skip): done, but it contributes no metrics
                self.first_bad.zero_()
            progress.add({} if diverged else metrics, len(index))
            self.state.step += 1
            for cb in self.callbacks:
                cb.on_step(self, metrics)
            if signalled:
                progress.seconds += time.perf_counter() - start
                raise Interrupted(self.signals[0] if self.signals else signal.SIGTERM)
            if self.options.max_steps and self.state.step >= self.options.max_steps:
                break
        seconds = progress.seconds + time.perf_counter() - start
        if position < self.steps_per_epoch:
            # --max-steps stopped mid-epoch: like Ctrl-C, the epoch stays open (a resume finishes it
            # exactly); its row so far is marked partial, and a resume replaces it.
            progress.seconds = seconds
            row: dict[str, Any] = {"epoch": self.state.epoch + 1, "step": self.state.step, "partial": True}
        else:
            self.state.epoch += 1
            self.state.partial = None
            row = {"epoch": self.state.epoch, "step": self.state.step}
        row.update({f"train_{k}": v for k, v in progress.means(self.group).items()})
        row.update({f"test_{k}": v for k, v in self.evaluate().items()})
        if self.trainer.skip_nonfinite:
            row["skipped_steps"] = self.trainer.skipped_steps
        row["seconds"] = round(seconds, 3)
        images = progress.images * self.group.world_size
        row["images_per_second"] = round(images / seconds, 1) if seconds > 0 else None
        self.state.history.append(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)

    def evaluate(self) -> dict[str, float]:
        """The trainer's metrics averaged over the test split, with a fixed noise seed. Draws from the
        global random streams are undone after, so training noise never depends on evaluation:
        a run stopped and resumed between two steps continues bit for bit."""
        if self.test_data is None:
            return {}
        generator = _generator(self.train_data.device, self.options.seed + 1)
        sums: dict[str, Tensor] = {}
        devices = [self.train_data.device] if self.train_data.device.type == "cuda" else []
        with eval_mode(self.model), torch.random.fork_rng(devices=devices):
            for index in index_batches(len(self.test_data), self.options.eval_batch_size,
                                       shuffle=False, drop_last=False, device=self.test_data.device):
                index = self.group.shard(index)
                x = self.model.prepare(self.test_data[index], generator)
                with self.autocast:
                    if self.test_labels is None:
                        metrics = self.trainer.evaluate(x)
                    else:
                        metrics = self.trainer.evaluate(x, self.test_labels[index])
                for key, value in metrics.items():
                    value = value.float() * len(index)
                    sums[key] = sums[key] + value if key in sums else value
        return {k: (v / len(self.test_data)).item() for k, v in self.group.sum(sums).items()}


    def sample_grid(self, n: int = 64) -> Tensor | None:
        """``n`` images from the grid sampler, drawn with the same noise every epoch so one set
        of samples can be watched improving; None when the model has no grid sampler. Drawn
        once per step: the callbacks that save, log and upload an epoch's grid share it."""
        if self.grid_sampler is None:
            return None
        if self._grid is not None and self._grid[:2] == (self.state.step, n):
            return self._grid[2]
        generator = _generator(self.train_data.device, self.options.seed)
        labels = None
        if conditional(self.model):  # one row per class
            labels = (torch.arange(n, device=self.train_data.device) * self.model.num_classes // n)
        with eval_mode(self.model):
            if labels is None:
                images = self.grid_sampler.sample(self.model, n, generator).images
            else:
                images = self.grid_sampler.sample(self.model, n, generator, labels).images
        self._grid = (self.state.step, n, images)
        return images


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
