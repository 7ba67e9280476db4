"""The datasets plugin: procedural shapes, image folders and their cache, anime faces, MNIST."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

import gentoolkit.api as gt
from gentoolkit import DataOptions, GentoolError, ImageSpec, apply_overrides
from gentoolkit.registry import get_toolkit
from gentoolkit.testing import toolkit_with
from gentoolkit_datasets import MNIST, AnimeFaces, FashionMNIST, ImageFolder, Shapes, memory
from gentoolkit_datasets import folder as folder_module
from gentoolkit_datasets.torchvision_sets import resize


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Six images of assorted sizes and PIL modes, in a subfolder too, plus a text file and a broken JPEG."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("CMYK", (24, 24), (0, 255, 0, 0)).save(folder / "a-cmyk.jpg")  # magenta
    Image.new("I;16", (12, 10), 128 * 257).save(folder / "b-deep.png")  # 16-bit mid grey
    Image.new("L", (20, 50), 128).save(folder / "c-grey.png")
    Image.new("P", (16, 16), 3).save(folder / "d-palette.gif")
    Image.new("RGB", (40, 30), "red").save(folder / "e-rgb.jpg", quality=95)
    Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(folder / "sub" / "f-clear.png")  # transparent: white
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def load_folder(folder: Path, size: int = 16, **config) -> tuple:
    """Load ``folder`` with image-folder; return the data and the 'skipped' warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ImageFolder(ImageFolder.Config(**config)).load(
            DataOptions(root=folder, data_dir=folder, image_size=size))
    return data, [str(w.message) for w in caught if "skipped" in str(w.message)]


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """A user cache of the test's own, so folder caches never land in the real one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "gentoolkit" / "folders"


def cache_files(user_cache: Path) -> list[Path]:
    return sorted(user_cache.glob("*/*.safetensors"))


# --------------------------------------------------------------- registry


def test_all_data_sets_are_registered_with_a_description():
    registry = get_toolkit().datasets
    for name in ("mnist", "fashion-mnist", "image-folder", "anime", "shapes"):
        cls = registry.get(name)
        assert cls.description() and "\n" not in cls.description()


def test_config_options_are_parsed_and_checked():
    config = apply_overrides(ImageFolder.Config(), [("mode", "grey"), ("test_fraction", "0.1")], "image-folder")
    assert (config.mode, config.test_fraction) == ("grey", 0.1)
    with pytest.raises(GentoolError, match="expected one of rgb, grey"):
        apply_overrides(ImageFolder.Config(), [("mode", "cmyk")], "image-folder")
    with pytest.raises(GentoolError, match="test_fraction must be in"):
        apply_overrides(ImageFolder.Config(), [("test_fraction", "1")], "image-folder")
    with pytest.raises(GentoolError, match="train_size must be a positive"):
        apply_overrides(Shapes.Config(), [("train_size", "0")], "shapes")
    assert AnimeFaces.Config().size == 96 and ImageFolder.Config().size == 64


# ----------------------------------------------------------------- shapes


def test_shapes_are_binary_uint8_with_labels(tmp_path):
    data = Shapes(Shapes.Config(train_size=300, test_size=50)).load(DataOptions(root=tmp_path))
    assert data.train.shape == (300, 1, 28, 28) and data.test.shape == (50, 1, 28, 28)
    assert data.train.dtype == torch.uint8
    assert data.spec == ImageSpec(1, 28, 28, binary=True, classes=4)
    assert set(data.train.unique().tolist()) == {0, 255}
    assert data.train_labels.shape == (300,) and set(data.train_labels.tolist()) == {0, 1, 2, 3}
    ink = data.train.flatten(1).float().mean(1) / 255
    assert ink.min() > 0.02 and ink.max() < 0.6  # every image shows a shape that fits the frame


def test_shapes_repeat_with_a_seed_and_follow_image_size(tmp_path):
    def load(seed: int, size: int | None = None):
        config = Shapes.Config(train_size=100, test_size=0, seed=seed)
        return Shapes(config).load(DataOptions(root=tmp_path, image_size=size))

    first = load(seed=1)
    assert torch.equal(first.train, load(seed=1).train)
    assert not torch.equal(first.train, load(seed=2).train)
    assert first.test is None and first.test_labels is None
    big = load(seed=1, size=40)
    assert big.train.shape == (100, 1, 40, 40) and big.spec.height == 40
    assert torch.equal(big.train_labels, first.train_labels)  # the same shapes, drawn larger


# ----------------------------------------------------------- image folder


def test_image_folder_decodes_every_mode_and_skips_unreadable_files(mixed_folder):
    data, skipped = load_folder(mixed_folder)
    assert data.train.shape == (6, 3, 16, 16) and data.train.dtype == torch.uint8
    assert data.test is None
    assert data.spec == ImageSpec(3, 16, 16, binary=False)
    assert len(skipped) == 1 and "skipped 2 files" in skipped[0] and str(mixed_folder) in skipped[0]
    colour = data.train.float().mean((2, 3))  # images in sorted path order, broken.jpg left out
    assert torch.allclose(colour[0], torch.tensor([255.0, 0, 255]), atol=8)  # CMYK magenta
    assert torch.all(data.train[1] == 128)  # 16-bit grey scaled to 8 bits, not clipped to white
    assert torch.all(data.train[2] == 128)  # grey
    assert torch.allclose(colour[4], torch.tensor([255.0, 0, 0]), atol=8)  # red JPEG
    assert torch.all(data.train[5] == 255)  # transparent on white


def test_grey_mode_gives_one_channel(mixed_folder):
    data, _ = load_folder(mixed_folder, size=8, mode="grey")
    assert data.train.shape == (6, 1, 8, 8)
    assert data.spec.channels == 1


def test_resize_and_crop_match_torchvision(tmp_path):
    y, x = torch.meshgrid(torch.linspace(0, 1, 45), torch.linspace(0, 1, 70), indexing="ij")
    picture = torch.stack([x, y, x * y]).mul(255).to(torch.uint8)  # 3 x 45 x 70 smooth gradients
    path = tmp_path / "gradient.png"
    TF.to_pil_image(picture).save(path)
    ours = folder_module.decode_image(path, 20, "rgb")
    theirs = TF.center_crop(TF.resize(picture, 20, antialias=True), 20)
    assert ours.shape == theirs.shape == (3, 20, 20)
    assert (ours.float() - theirs.float()).abs().mean() < 3


def test_test_fraction_gives_a_seeded_split(mixed_folder):
    data, _ = load_folder(mixed_folder, test_fraction=0.5, seed=3)
    assert len(data.train) == 3 and len(data.test) == 3
    again, _ = load_folder(mixed_folder, test_fraction=0.5, seed=3)
    assert torch.equal(data.test, again.test)


def test_folder_cache_is_written_reused_and_rebuilt(mixed_folder, user_cache, monkeypatch):
    first, _ = load_folder(mixed_folder)
    [cache] = cache_files(user_cache)
    assert cache.name.startswith("rgb16-")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is current")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "decode_image", no_decoding)
        cached, skipped = load_folder(mixed_folder)
    assert torch.equal(cached.train, first.train)
    assert len(skipped) == 1 and "skipped 2 files" in skipped[0]  # the same warning from the cache

    other_size, _ = load_folder(mixed_folder, size=8)
    assert len(cache_files(user_cache)) == 2  # one cache per size and mode

    Image.new("RGB", (20, 20), "green").save(mixed_folder / "sub" / "g-new.png")
    grown, _ = load_folder(mixed_folder)
    assert len(grown.train) == 7
    assert not cache.exists()  # the stale cache of this size and mode is gone
    assert len(cache_files(user_cache)) == 2
    assert other_size.train.shape == (6, 3, 8, 8)


def test_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(GentoolError, match="image-folder needs --data-dir DIR"):
        ImageFolder().load(DataOptions(root=tmp_path))
    with pytest.raises(GentoolError, match="does not exist"):
        ImageFolder().load(DataOptions(root=tmp_path, data_dir=tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(GentoolError, match="no images in .*expected files ending in .*jpg"):
        ImageFolder().load(DataOptions(root=tmp_path, data_dir=tmp_path / "empty"))
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GentoolError, match="none of the 1 image files"):
        ImageFolder().load(DataOptions(root=tmp_path, data_dir=tmp_path / "empty"))


def test_folder_too_large_for_memory_is_streamed(mixed_folder, monkeypatch, tmp_path):
    in_memory, _ = load_folder(mixed_folder, test_fraction=0.5)
    # 6 images of 3 x 16 x 16 take 4608 bytes (3 x 28 x 28: 14112), but one at a time fits
    monkeypatch.setattr(memory, "memory_limit", lambda: 4000)
    monkeypatch.setattr(folder_module, "STREAM_BATCH", 1)
    options = DataOptions(root=mixed_folder, data_dir=mixed_folder, image_size=16)
    with pytest.warns(UserWarning, match="decoded from disk batch by batch"):
        streamed = ImageFolder(ImageFolder.Config(test_fraction=0.5)).load(options)
    assert isinstance(streamed.train, folder_module.StreamedImages)
    assert streamed.train.shape == in_memory.train.shape and len(streamed.test) == len(in_memory.test)
    index = torch.tensor([1, 0])
    assert torch.equal(streamed.train[index], in_memory.train[index])  # same split, same pixels
    # The training loop runs on it unchanged (the corrupt file was never picked: it is a clear error).
    with toolkit_with():
        run = gt.fit("dcgan", "image-folder", data_dir=mixed_folder, image_size=28, batch_size=2, max_steps=2,
                     epochs=5, device="cpu", run_dir=tmp_path / "run", overrides=["nz=8", "ngf=4", "ndf=4"])
    assert run.metrics[-1]["step"] == 2


# ------------------------------------------------------------------ anime


def test_anime_reads_root_anime_at_96_pixels(tmp_path):
    faces = tmp_path / "anime" / "batch1"
    faces.mkdir(parents=True)
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (120, 100), colour).save(faces / f"{i}.jpg")
    data = AnimeFaces().load(DataOptions(root=tmp_path))
    assert data.train.shape == (2, 3, 96, 96) and data.spec == ImageSpec(3, 96, 96)
    # --data-dir may name the data root (its anime/ is used) or the faces folder itself
    assert len(AnimeFaces().load(DataOptions(root=tmp_path, data_dir=tmp_path)).train) == 2
    assert len(AnimeFaces().load(DataOptions(root=faces, data_dir=faces, image_size=32)).train) == 2


def test_missing_anime_faces_say_where_to_put_them(tmp_path):
    with pytest.raises(GentoolError, match=r"anime.*does not exist.*docs/datasets.md") as error:
        AnimeFaces().load(DataOptions(root=tmp_path))
    assert str(tmp_path / "anime") in str(error.value)


# ------------------------------------------------------------------ MNIST


def test_mnist_from_the_data_dir(mnist_root):
    data = MNIST().load(DataOptions(root=mnist_root, download=False))
    assert data.train.shape == (60000, 1, 28, 28) and data.test.shape == (10000, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and data.train.max() == 255
    assert data.spec == ImageSpec(1, 28, 28, binary=True, classes=10)
    assert data.train_labels.shape == (60000,) and set(data.test_labels.tolist()) == set(range(10))


def test_resize_keeps_uint8_range():
    images = torch.zeros(5, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 7:21, 7:21] = 255
    small = resize(images, 14)
    assert small.shape == (5, 1, 14, 14) and small.dtype == torch.uint8
    assert small[0, 0, 7, 7] == 255 and small[0, 0, 0, 0] == 0


@pytest.mark.parametrize("cls,title", [(MNIST, "MNIST"), (FashionMNIST, "FashionMNIST")])
def test_missing_mnist_without_download_is_a_clear_error(cls, title, tmp_path):
    with pytest.raises(GentoolError, match=f"{title} not found under .*drop --no-download .*{title}/raw"):
        cls().load(DataOptions(root=tmp_path, download=False))


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST.source, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(GentoolError, match="could not download MNIST into .*--no-download") as error:
        MNIST().load(DataOptions(root=tmp_path, download=True))
    assert "\n" not in str(error.value)
