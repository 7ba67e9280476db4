"""The run directory: the one object that knows every file of a run and writes it.

A run directory holds::

    config.json          the typed run config (gentoolkit.runconfig.RunConfig) as JSON
    model.safetensors    the model's weights
    trainer.safetensors  everything to resume, in one file: weights, optimisers, RNG
                         states, counters (the non-tensor part as JSON in its metadata)
    metrics.jsonl        one JSON object per epoch
    best.safetensors     with --keep-best: the weights of the best epoch
    best.json            which epoch that was, and its monitored value
    samples/epoch-NNN.png
    .lock                while a process trains it: that process's pid and host

A run directory is the user's data, the work of hours or days. Every write goes
through :func:`gentoolkit.checkpoint.atomic_write` (a temporary file, flushed and
renamed over the old one), so a run killed at any moment keeps its last complete
version of every file; plugins that keep files of their own ask for a path with
:meth:`RunDir.output`, which never hands out one of the run's own files.

The weights and the resume state of one checkpoint carry the same generation (the
training step). The state is written first and holds the weights too, so if a kill
leaves model.safetensors a generation behind, the newer weights are read from the
state: the newest complete generation wins. One process at a time may write a run:
:meth:`RunDir.lock` keeps a second one out, and recognises a lock left by a process
that no longer runs.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gentoolkit import checkpoint
from gentoolkit.errors import GentoolError


class RunDir:
    """One run's folder: its paths, and every read and write of its files."""

    CONFIG = "config.json"
    WEIGHTS = "model.safetensors"
    STATE = "trainer.safetensors"
    METRICS = "metrics.jsonl"
    BEST_WEIGHTS = "best.safetensors"
    BEST_INFO = "best.json"
    SAMPLES = "samples"
    LOCK = ".lock"
    OWN = (CONFIG, WEIGHTS, STATE, METRICS, BEST_WEIGHTS, BEST_INFO, SAMPLES, LOCK)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------- finding runs

    @classmethod
    def new(cls, root: str | Path, model_name: str) -> RunDir:
        """``root/<model>/<timestamp>/``, made unique if two runs start in the same second."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / model_name / stamp
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{stamp}-{n}")
        return cls(path)

    @classmethod
    def latest(cls, root: str | Path, model_name: str) -> RunDir:
        """The newest run of ``model_name`` under ``root`` that has a checkpoint."""
        folder = Path(root) / model_name
        runs = sorted((p for p in folder.glob("*") if (p / cls.CONFIG).is_file() and (p / cls.WEIGHTS).is_file()),
                      key=lambda p: (p / cls.CONFIG).stat().st_mtime)
        if not runs:
            raise GentoolError(f"no run of '{model_name}' under {folder}; train one with "
                               f"'gentool fit {model_name}', or pass --run DIR.")
        return cls(runs[-1])

    def holds_run(self) -> bool:
        """Whether a run was started here (it has a config)."""
        return (self.path / self.CONFIG).exists()

    def check(self, weights: str = WEIGHTS) -> RunDir:
        """Raise a clear error unless this is a run directory with the given weights."""
        if not self.path.exists():
            raise GentoolError(f"run directory {self.path} does not exist.")
        if not self.path.is_dir() or not (self.path / self.CONFIG).is_file():
            raise GentoolError(f"{self.path} is not a gentoolkit run: it has no {self.CONFIG}.")
        if not (self.path / weights).is_file():
            if weights == self.BEST_WEIGHTS:
                raise GentoolError(f"{self.path} has no {weights}; train with --keep-best to keep the best epoch.")
            raise GentoolError(f"{self.path} has no {weights}: the run saved no checkpoint yet.")
        return self

    # ------------------------------------------------------------------ config

    def write_config(self, config: dict[str, Any]) -> None:
        """Create the folder and write the run config (the JSON form of a RunConfig)."""
        self.path.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(self.path / self.CONFIG, config)

    def read_config(self) -> dict[str, Any]:
        """The JSON of config.json, checked to be an object."""
        config = checkpoint.read_json(self.path / self.CONFIG)
        if not isinstance(config, dict) or "model" not in config:
            raise GentoolError(f"{self.path / self.CONFIG} is not a gentoolkit run config.")
        return config

    # ------------------------------------------------------------- checkpoints

    def save_checkpoint(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """The resume state first, then the weights, both of generation ``state["step"]``: a kill
        between the two leaves weights one generation behind, and the state holds the newer ones."""
        checkpoint.save_state(self.path / self.STATE, state, generation=state["step"])
        checkpoint.save_weights(model, self.path / self.WEIGHTS, generation=state["step"])

    def has_state(self) -> bool:
        return (self.path / self.STATE).is_file()

    def has_checkpoint(self) -> bool:
        return self.has_state() or (self.path / self.WEIGHTS).is_file()

    def load_state(self) -> dict[str, Any]:
        """The resume state, or a clear error when the run saved none yet."""
        if not self.has_state():
            raise GentoolError(f"{self.path} has no checkpoint to resume: the run stopped before its first one. "
                               f"Start it again with gentool fit ... --run-dir {self.path}.")
        return checkpoint.load_state(self.path / self.STATE)

    def load_weights(self, model: torch.nn.Module, weights: str = WEIGHTS) -> None:
        """Load the run's weights, or the newer ones in the resume state where a kill left
        model.safetensors a generation behind it."""
        path = self.path / weights
        if weights == self.WEIGHTS and self.has_state():
            have, newest = checkpoint.generation(path), checkpoint.generation(self.path / self.STATE)
            if have is not None and newest is not None and newest > have:
                warnings.warn(f"{path} is from step {have} but the run's checkpoint is from step {newest} (a process "
                              f"was stopped while replacing it); using the step-{newest} weights in {self.STATE}.",
                              stacklevel=2)
                self.load_state_weights(model, checkpoint.load_state(self.path / self.STATE))
                return
        checkpoint.load_weights(model, path)

    def load_state_weights(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """Load the weights stored inside a resume state, checking names and shapes."""
        checkpoint.load_checked(model, state["model"], self.path / self.STATE)

    def save_best(self, model: torch.nn.Module, info: dict[str, Any]) -> None:
        checkpoint.save_weights(model, self.path / self.BEST_WEIGHTS)
        checkpoint.write_json(self.path / self.BEST_INFO, info)

    # ------------------------------------------------------------------ writing

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process while it writes: a second process gets one line saying
        who holds it; a lock whose process is gone (on this host) is taken over. Temporary files
        that a killed process left behind are removed once the lock is held."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GentoolError(f"cannot create run directory {self.path}: {exc.strerror or exc}.") from None
        path = self.path / self.LOCK
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.datetime.now().isoformat(timespec="seconds")}
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder.get("host") == owner["host"] and not _alive(holder.get("pid")):
                    path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise GentoolError(f"{self.path} is in use by process {holder.get('pid', '?')} on "
                                   f"{holder.get('host', '?')} (since {holder.get('since', '?')}); wait for it to "
                                   f"finish, or delete {path} if that process no longer runs.") from None
            except OSError as exc:
                raise GentoolError(f"cannot write to run directory {self.path}: {exc.strerror or exc}.") from None
            with os.fdopen(fd, "w") as handle:
                json.dump(owner, handle)
            break
        try:
            self.remove_stale_temporaries()
            yield
        finally:
            path.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes a killed process never finished."""
        for folder in (self.path, self.path / self.SAMPLES):
            for tmp in folder.glob(f".*{checkpoint.TMP_MARK}*"):
                tmp.unlink(missing_ok=True)

    def clear_unfinished(self) -> None:
        """Remove what a run that stopped before its first checkpoint left, so it can start again."""
        for name in (self.METRICS, self.CONFIG):
            (self.path / name).unlink(missing_ok=True)

    # ----------------------------------------------------------------- metrics

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl, one per epoch."""
        return checkpoint.read_metrics(self.path / self.METRICS)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one epoch's row, crash-safe: the file is rewritten atomically with the row added,
        so a kill leaves either the old rows or all of them, never half a line."""
        path = self.path / self.METRICS
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        checkpoint.atomic_write(path, lambda tmp: tmp.write_text(old + json.dumps(row) + "\n"))

    def trim_metrics(self, epochs: int) -> list[dict[str, Any]]:
        """Keep the rows of the epochs the checkpoint holds; drop any written after it
        (a run killed between logging an epoch and saving it)."""
        rows = [row for row in self.metrics() if row.get("epoch", 0) <= epochs]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        checkpoint.atomic_write(self.path / self.METRICS, lambda tmp: tmp.write_text(text))
        return rows

    # ----------------------------------------------------------------- outputs

    def sample_grid_path(self, epoch: int) -> Path:
        folder = self.path / self.SAMPLES
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"epoch-{epoch:03d}.png"

    def output(self, name: str) -> Path:
        """A path in the run directory for a plugin's own file or folder (``tensorboard``,
        ``metrics.csv``); the run's own files are refused, so no plugin can overwrite them."""
        if name in self.OWN or Path(name).name != name or name.startswith("."):
            raise GentoolError(f"'{name}' is not a free name in a run directory: a plugin's outputs may not "
                               f"replace the run's own files ({', '.join(self.OWN)}) or leave the folder.")
        return self.path / name

    @classmethod
    def enclosing(cls, path: str | Path) -> RunDir | None:
        """The run directory ``path`` is, or is inside, if any: where no output may be written over.
        Resolved first, so a relative path (``epoch-001.png`` from inside ``samples/``) is seen too."""
        path = Path(path).resolve()
        return next((cls(p) for p in (path, *path.parents) if cls(p).holds_run()), None)


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: Any) -> bool:
    """Whether a process with this pid runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    return True
