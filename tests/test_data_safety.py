"""Nothing lost, whatever the user does: deep image modes, damaged MNIST files and caches,
run directories that name other people's folders, and image sizes no memory can hold.

Where a user meets the behaviour on the command line, it is checked through the CLI:
one line, exit code 1, no traceback and never the catch-all "internal error".
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from gentoolkit import DataOptions, resources
from gentoolkit.cli import cli
from gentoolkit_datasets import FashionMNIST, memory
from gentoolkit_datasets import folder as folder_module
from gentoolkit_datasets.folder import decode_image
from gentoolkit_metrics import features


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """An empty user cache ($XDG_CACHE_HOME/gentoolkit) of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "gentoolkit"


@pytest.fixture
def gentool(toy, user_cache, tmp_path, monkeypatch):
    """Run ``gentool ARGS`` in a temporary folder with the toy plugin; return the result."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: object, ok: bool = True):
        result = runner.invoke(cli, [str(a) for a in args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def one_line_error(result, *fragments: str) -> str:
    """The CLI's single error line, after checking exit code 1, no traceback and no 'internal error'."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output
    return errors[0]


def grey_images(folder: Path, count: int = 4, size: int = 12) -> Path:
    """``count`` small grey PNGs of different levels in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (size, size), 40 * i).save(folder / f"{i}.png")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``, hidden ones included, with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------ deep image modes (1)


@pytest.mark.parametrize("mode,value,grey", [
    ("F", 0.5, 128),  # floats in [0, 1]: x * 255
    ("F", 1.0, 255),
    ("I;16", 128 * 257, 128),  # 16-bit integers: x / 257
    ("I;16B", 64 * 257, 64),
    ("I", 200 * 257, 200),
])
def test_float_and_16_bit_images_decode_to_their_grey_level(tmp_path, mode, value, grey):
    path = tmp_path / "deep.tif"
    Image.new(mode, (10, 6), value).save(path)
    assert Image.open(path).mode == mode  # the file really is that deep
    for channels in ("grey", "rgb"):
        assert torch.all(decode_image(path, 4, channels) == grey), (mode, channels)


def test_values_beyond_the_range_are_scaled_by_the_image_maximum(tmp_path):
    for mode, top in (("F", 1000.0), ("I", 300_000)):
        image = Image.new(mode, (8, 8), 0)
        image.paste(top, (0, 0, 8, 4))  # top half at the maximum, bottom half at half of it
        image.paste(top / 2 if mode == "F" else top // 2, (0, 4, 8, 8))
        image.putpixel((0, 7), -5 if mode == "I" else float("nan"))  # negative, NaN: black
        image.save(tmp_path / "bright.tif")
        pixels = decode_image(tmp_path / "bright.tif", 8, "grey")[0]
        assert torch.all(pixels[:4] == 255) and torch.all(pixels[4:, 1:] == 128), mode
        assert pixels[7, 0] == 0


# ------------------------------------------------ damaged MNIST files (2)


@pytest.fixture
def mnist_copy(mnist_root, tmp_path) -> Path:
    """A writable copy of the real MNIST files: a data root to damage."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        shutil.copyfile(mnist_root / "MNIST" / "raw" / name, raw / name)
    return tmp_path / "data"


IDX_FILES = {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
             "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}


def damage(path: Path, how: str) -> None:
    """Truncate ``path`` to a tenth, empty it, or overwrite it with random bytes of the same size."""
    size = path.stat().st_size
    if how == "truncated":
        os.truncate(path, size // 10)
    elif how == "empty":
        os.truncate(path, 0)
    else:
        path.write_bytes(os.urandom(size))


@pytest.mark.parametrize("name,how,problem", [
    ("train-images-idx3-ubyte", "truncated", "4704001 bytes instead of 47040016 (truncated)"),
    ("t10k-labels-idx1-ubyte", "empty", "0 bytes instead of 10008 (truncated)"),
    ("train-labels-idx1-ubyte", "random", "its header (magic number, then shape) is "),
])
@pytest.mark.parametrize("download", [True, False])
def test_damaged_mnist_files_are_reported_as_damaged(gentool, mnist_copy, name, how, problem, download):
    path = mnist_copy / "MNIST" / "raw" / name
    damage(path, how)
    flags = () if download else ("--no-download",)
    result = gentool("fit", "px", "--dataset", "mnist", "--data-dir", mnist_copy, *flags, ok=False)
    fix = ("delete it and run again to download it afresh." if download else
           "delete it and run again without --no-download to download it afresh, or put an intact copy there.")
    line = one_line_error(result, f"MNIST file {path} is damaged: {problem}", fix)
    assert "not found" not in line


def idx_file(name: str, extra: int = 0) -> bytes:
    """A well-formed MNIST-shaped IDX file of zeros, with ``extra`` bytes more (or fewer, when negative)."""
    dims = (60000 if name.startswith("train") else 10000, *((28, 28) if "images" in name else ()))
    header = struct.pack(f">{1 + len(dims)}I", 0x0803 if "images" in name else 0x0801, *dims)
    return header + bytes(IDX_FILES[name] - len(header) + extra)


@pytest.mark.parametrize("name,extra,problem", [
    ("t10k-images-idx3-ubyte", -1, "7840015 bytes instead of 7840016 (truncated)"),
    ("train-labels-idx1-ubyte", 1, "60009 bytes instead of 60008;"),
])
def test_damaged_fashion_mnist_files_are_reported_as_damaged(gentool, tmp_path, name, extra, problem):
    """Fashion-MNIST's files have MNIST's shapes: well-formed ones, one with a byte too few or too many."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for each in IDX_FILES:
        (raw / each).write_bytes(idx_file(each, extra if each == name else 0))
    result = gentool("fit", "px", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "data", "--no-download",
                     ok=False)
    one_line_error(result, f"FashionMNIST file {raw / name} is damaged: {problem}")


def test_well_formed_files_pass_the_checks(tmp_path):
    """The checks accept the files they describe: all zeros, but the right header and size."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).write_bytes(idx_file(name))
    data = FashionMNIST().load(DataOptions(root=tmp_path, download=False))
    assert data.train.shape == (60000, 1, 28, 28) and data.test_labels.shape == (10000,)


# ------------------------------------------- damaged classifier cache (3)


@pytest.fixture
def shapes_run(gentool, monkeypatch) -> Callable[[], dict]:
    """A run of the toy model on 8 x 8 shapes, and ``evaluate()``: its FID on classifier features,
    trained with 20 updates to keep the test quick (the cache key does not depend on them)."""
    monkeypatch.setattr(features, "train_classifier", functools.partial(features.train_classifier, steps=20))
    gentool("fit", "px", "--dataset", "shapes", "--set", "data.train_size=256", "--set", "data.test_size=64",
            "--image-size", "8", "--epochs", "1", "--run-dir", "run", "--quiet")

    def evaluate():
        result = gentool("evaluate", "--run", "run", "--metric", "fid", "--k", "64", "--set",
                         "fid.features=classifier", "--json")
        results = json.loads(result.stdout.splitlines()[-1])
        del results["settings"]["seconds"]  # the time it took differs from call to call
        return result, results

    return evaluate


@pytest.mark.parametrize("how", ["truncated", "random", "other tensors", "not finite"])
def test_a_damaged_classifier_cache_is_retrained_and_rewritten(shapes_run, user_cache, how):
    first, results = shapes_run()
    [cache] = (user_cache / "features").iterdir()
    weights = {k: v.clone() for k, v in load_file(cache).items()}  # not views of the file, which is damaged next
    if how == "truncated":
        os.truncate(cache, cache.stat().st_size // 2)
    elif how == "random":
        cache.write_bytes(os.urandom(1000))
    elif how == "other tensors":
        save_file({"head.1.weight": torch.zeros(3, 128)}, cache)
    else:
        save_file({**weights, "mean": torch.full((128,), float("nan"))}, cache)

    second, again = shapes_run()
    warning = [line for line in second.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"the cached feature classifier {cache} is damaged (" in warning[0], second.stderr
    assert "training it again and overwriting it." in warning[0]
    assert again == results  # the same classifier, trained again
    assert {k: torch.equal(v, weights[k]) for k, v in load_file(cache).items()} == dict.fromkeys(weights, True)
    assert list((user_cache / "features").iterdir()) == [cache]  # no temporary file left behind
    third, _ = shapes_run()
    assert "warning" not in third.stderr


def test_a_cache_that_cannot_be_written_is_only_a_warning(shapes_run, user_cache):
    user_cache.mkdir(parents=True)
    (user_cache / "features").write_text("a file where the cache folder should be")
    result, results = shapes_run()
    assert "could not cache the feature classifier" in result.stderr and results["fid"] >= 0


# ------------------------------------------- a run directory is data (4)


def test_evaluating_someone_elses_run_leaves_their_folder_untouched(gentool, tmp_path, user_cache):
    """A run's config.json names an image folder: evaluate and sample read it, write nothing there
    (the decode cache goes to the user's cache) and delete nothing, not even old-style cache files."""
    mine = grey_images(tmp_path / "mine")
    gentool("fit", "px", "--dataset", "image-folder", "--data-dir", mine, "--set", "data.mode=grey",
            "--image-size", "8", "--epochs", "1", "--run-dir", "run", "--quiet")
    theirs = grey_images(tmp_path / "theirs", count=6)
    (theirs / ".gentool-cache-grey8-0123456789abcdef0123.safetensors").write_bytes(b"not ours to delete")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["dataset"].update(data_dir=str(theirs), root=str(theirs))
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    shutil.rmtree(user_cache)
    before = snapshot(theirs)

    result = gentool("evaluate", "--run", "run", "--metric", "pixel-nll", "--split", "train", "--json")
    gentool("sample", "--run", "run", "-n", "4", "--out", "grid.png")

    assert snapshot(theirs) == before
    assert len(list((user_cache / "folders").glob("*/grey8-*.safetensors"))) == 1
    assert json.loads(result.stdout.splitlines()[-1])["nll"] > 0


def test_the_decode_cache_follows_the_files_and_the_settings(gentool, tmp_path, user_cache):
    """The cache is keyed by the folder's contents and the decode settings: a changed file,
    another size or mode each get their own decode, never a stale tensor."""
    folder = grey_images(tmp_path / "images", count=3)
    fit = ("fit", "px", "--dataset", "image-folder", "--data-dir", folder, "--epochs", "1", "--quiet")
    gentool(*fit, "--image-size", "8", "--run-dir", "a")
    gentool(*fit, "--image-size", "6", "--set", "data.mode=grey", "--run-dir", "b")
    caches = user_cache / "folders"
    assert sorted(p.name.split("-")[0] for p in caches.glob("*/*.safetensors")) == ["grey6", "rgb8"]
    [stale] = caches.glob("*/rgb8-*.safetensors")
    Image.new("L", (12, 12), 255).save(folder / "0.png")  # same name, new content
    gentool(*fit, "--image-size", "8", "--run-dir", "c")
    [fresh] = caches.glob("*/rgb8-*.safetensors")  # decoded afresh, the stale one removed
    assert fresh.name != stale.name and not stale.exists()
    assert snapshot(folder).keys() == {"0.png", "1.png", "2.png"}


def test_a_decode_cache_that_cannot_be_written_is_only_a_warning(gentool, tmp_path, user_cache):
    folder = grey_images(tmp_path / "images", count=3)
    user_cache.mkdir(parents=True)
    (user_cache / "folders").write_text("a file where the cache folder should be")
    result = gentool("fit", "px", "--dataset", "image-folder", "--data-dir", folder, "--image-size", "8",
                     "--epochs", "1", "--quiet")
    assert "could not write the decode cache" in result.stderr and "decoded again next run" in result.stderr
    assert snapshot(folder).keys() == {"0.png", "1.png", "2.png"}


# ----------------------------------------------------- absurd image sizes (5)


@pytest.fixture
def eight_gib(monkeypatch):
    """A machine with 8 GiB of memory, so data may take 4 GiB; no image may be decoded."""
    for module in (resources, memory):  # the core's limit, and the plugin's message
        monkeypatch.setattr(module, "usable_memory", lambda: 8 * 2**30)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the size was refused")

    monkeypatch.setattr(folder_module, "decode_image", no_decoding)
    monkeypatch.setattr(folder_module, "opens", no_decoding)


@pytest.mark.parametrize("dataset", ["image-folder", "anime"])
def test_an_image_size_no_memory_holds_is_refused_before_decoding(gentool, eight_gib, tmp_path, dataset):
    folder = grey_images(tmp_path / "faces", count=3)
    result = gentool("fit", "px", "--dataset", dataset, "--data-dir", folder, "--image-size", "100000", ok=False)
    one_line_error(result, f"image folder {folder}: 3 images of 3 x 100000 x 100000 would take 83.8 GiB decoded "
                           "(27.9 GiB each), more than the 4.0 GiB data may take here (half of 8.0 GiB of memory); "
                           "choose a smaller --image-size.")


def test_streaming_is_refused_when_even_a_batch_does_not_fit(gentool, eight_gib, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_module, "STREAM_BATCH", 2)
    folder = grey_images(tmp_path / "faces", count=3)
    result = gentool("fit", "px", "--dataset", "image-folder", "--data-dir", folder, "--image-size", "30000",
                     ok=False)
    one_line_error(result, "3 images of 3 x 30000 x 30000 would take 7.5 GiB decoded (2.5 GiB each), "
                           "and even 2 at a time, streamed from disk, need 5.0 GiB, more than the 4.0 GiB")


def test_a_run_config_asking_for_an_absurd_size_is_refused(gentool, tmp_path, monkeypatch):
    gentool("fit", "px", "--dataset", "shapes", "--set", "data.train_size=64", "--set", "data.test_size=16",
            "--image-size", "8", "--epochs", "1", "--run-dir", "run", "--quiet")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["dataset"]["image_size"] = 100000
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    for module in (resources, memory):  # the core's limit, and the plugin's message
        monkeypatch.setattr(module, "usable_memory", lambda: 8 * 2**30)
    result = gentool("evaluate", "--run", "run", "--metric", "pixel-nll", ok=False)
    one_line_error(result, "shapes: 80 images of 1 x 100000 x 100000 would take 745.1 GiB decoded")


def test_usable_memory_is_the_container_limit_when_lower(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    monkeypatch.setattr(resources, "CGROUP_LIMITS", (tmp_path / "missing", limit))
    assert resources.usable_memory() == 2**30
    limit.write_text("max\n")  # cgroup v2 without a limit: the RAM
    assert resources.usable_memory() > 2**30
