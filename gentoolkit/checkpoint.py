"""Checkpoint files: JSON and safetensors only, written atomically.

Nothing is unpickled, so a checkpoint from a stranger cannot run code. Each file
is written to a temporary name, flushed to disk and renamed over the old one:
a process killed at any moment leaves the previous complete file in place.
Which files a run holds is :class:`gentoolkit.rundir.RunDir`'s business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gentoolkit.errors import GentoolError

TMP_MARK = ".tmp-"  # in the names of temporary files: .<name>.tmp-<pid>


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move ``tmp`` over ``path`` once it is safely on disk.

    A failed write (a full disk, a read-only folder) leaves the old file as it was and is one
    GentoolError saying so."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
        raise GentoolError(f"could not write {path}: {exc.strerror or exc}; {kept}. Free disk space or "
                           "choose a writable folder.") from None
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_json(path: Path) -> Any:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise GentoolError(f"{path} is not a regular file; a run's files are plain files.")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GentoolError(f"{path} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GentoolError(f"{path} is not valid JSON ({exc}); the file is damaged.") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file, one JSON object per line. A line that is not one is an
    error naming the file and line: nothing reads past it, and nothing drops it."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise GentoolError(f"{path} is not a regular file; a run's metrics are a plain file.")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GentoolError(f"{path}, line {number}: not valid JSON ({exc.msg}); repair or delete that line "
                               "(keep a copy) and try again.") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise GentoolError(f"{path}, line {number}: not a metrics row (a JSON object with an 'epoch'); "
                               "repair or delete that line (keep a copy) and try again.")
        rows.append(row)
    return rows


def write_tensors(path: Path, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_tensors_and_metadata(path)[0]


def read_tensors_and_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a safetensors file and its string metadata, in one read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}
    except FileNotFoundError:
        raise GentoolError(f"{path} is missing.") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise GentoolError(f"{path} is not a readable safetensors file ({exc}); "
                           "it is truncated or damaged.") from None


# ------------------------------------------------------- nested state <-> flat


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state (dicts, lists, tensors, numbers) into JSON and named tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value
            return {"__tensor__": key}
        if isinstance(value, dict):
            if not all(isinstance(k, (str, int)) for k in value):
                raise TypeError(f"state keys under '{key}' must be str or int")
            # JSON keys are strings: remember which were ints (optimizer state uses them).
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at '{key}' in a checkpoint")

    return walk(state, prefix or "state"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_weights(model: torch.nn.Module, path: Path, generation: int | None = None) -> None:
    """Write a model's weights; ``generation`` (the training step) ties them to a resume state."""
    metadata = None if generation is None else {"generation": str(generation)}
    write_tensors(path, model.state_dict(), metadata)


def save_state(path: Path, state: dict[str, Any], generation: int | None = None) -> None:
    """Write nested state (tensors, numbers, strings) as one safetensors file."""
    skeleton, tensors = flatten_state(state)
    metadata = {"state": json.dumps(skeleton)}
    if generation is not None:
        metadata["generation"] = str(generation)
    write_tensors(path, tensors, metadata)


def load_state(path: Path) -> dict[str, Any]:
    """Read what :func:`save_state` wrote."""
    tensors, metadata = read_tensors_and_metadata(path)
    try:
        state = unflatten_state(json.loads(metadata["state"]), tensors)
    except (KeyError, TypeError, ValueError, IndexError):
        raise GentoolError(f"{path} holds no gentoolkit training state, or a damaged one.") from None
    expected = {"model": dict, "trainer": dict, "rng": dict, "epoch": int, "step": int}
    wrong = [key for key, kind in expected.items() if not isinstance(state.get(key), kind)]
    if not isinstance(state, dict) or wrong:
        raise GentoolError(f"{path} is a damaged training state ({', '.join(wrong) or 'not an object'} "
                           "missing or of the wrong type); resume from a backup, or train again.")
    return state


def generation(path: Path) -> int | None:
    """The generation (training step) recorded in a safetensors file's metadata, None if none is."""
    try:
        with safe_open(str(path), framework="pt") as f:
            value = (f.metadata() or {}).get("generation")
    except (SafetensorError, OSError, ValueError) as exc:
        raise GentoolError(f"{path} is not a readable safetensors file ({exc}); it is truncated or damaged.") from None
    return int(value) if value is not None and value.isdigit() else None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights from a safetensors file, checking every name and shape first."""
    load_checked(model, read_tensors(path), path)


def load_checked(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``tensors`` into ``model`` after checking every name and shape against it."""
    check_shapes(model, {k: tuple(v.shape) for k, v in tensors.items()}, source)
    model.load_state_dict(tensors)


def check_shapes(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """Raise a GentoolError naming exactly which tensors are missing, extra or mis-shaped."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"missing '{k}'" for k in expected if k not in shapes]
    problems += [f"unexpected '{k}'" for k in shapes if k not in expected]
    problems += [f"'{k}' is {list(shapes[k])} in the file but {list(v)} in the model"
                 for k, v in expected.items() if k in shapes and shapes[k] != v]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise GentoolError(f"{source} does not match model '{type(model).name}': {shown}.")


def shared_tensors(module: torch.nn.Module) -> list[list[str]]:
    """Groups of state-dict entries that share or overlap in memory, which safetensors cannot store."""
    spans: list[tuple[int, int, str]] = []
    for name, tensor in module.state_dict().items():
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        start = tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()
        spans.append((start, start + tensor.numel() * tensor.element_size(), name))
    spans.sort()
    groups: list[list[str]] = []
    end = -1
    for start, stop, name in spans:
        if start < end:
            groups[-1].append(name)
        else:
            groups.append([name])
        end = max(end, stop)
    return [g for g in groups if len(g) > 1]
