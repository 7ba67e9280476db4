"""The command line through Click's runner: output, files and one-line errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from phase_log import phase_log
from safetensors.torch import load_file

from gentoolkit import optionfiles
from gentoolkit.cli import cli, fit


@pytest.fixture
def gentool(toy, tmp_path, monkeypatch):
    """Run ``gentool ARGS`` in a temporary folder with the toy plugin; return the result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # wide tables, so rows do not wrap
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(cli, [str(a) for a in args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def one_line_error(result, fragment):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def test_list_models_shows_name_alias_and_plugin(gentool):
    out = gentool("list-models").output
    assert "pixels" in out and "px" in out and "Independent Bernoulli pixels" in out


def test_plugins_json_lists_what_each_registers(gentool):
    rows = json.loads(gentool("plugins", "--json", "--all").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["toy_plugin"]["registers"]["model"] == ["pixels"]
    assert by_name["gentoolkit"]["registers"]["sampler"] == ["interpolate", "prior", "reconstruct"]


def test_fit_then_sample_png_and_tensor(gentool, tmp_path):
    gentool("fit", "px", "--dataset", "stripes", "--epochs", "2", "--quiet")
    runs = list((tmp_path / "runs" / "pixels").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert {"config.json", "model.safetensors", "metrics.jsonl", "samples"} <= {p.name for p in run.iterdir()}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]

    gentool("sample", "px", "-n", "9", "--out", "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gentool("sample", "--run", run, "-n", "5", "--out", "a.safetensors", "--seed", "1")
    gentool("sample", "--run", run, "-n", "5", "--out", "b.safetensors", "--seed", "1")
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a["images"].shape == (5, 1, 8, 8) and torch.equal(a["images"], b["images"])
    assert a["images"].min() >= 0 and a["images"].max() <= 1


def test_fit_set_reaches_model_and_objective(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r",
            "--set", "init=0.5", "--set", "objective.scale=2")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["config"] == {"init": 0.5}
    assert config["objective"] == {"name": "pixel-nll", "config": {"scale": 2.0}}


def test_resume_appends_epochs(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    gentool("fit", "--resume", "r", "--epochs", "3", "--quiet")
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("args,fragment", [
    (["fit", "pixles", "--dataset", "stripes"], "Did you mean 'pixels'"),
    (["fit", "pixels", "--dataset", "stipes"], "unknown dataset 'stipes'. Did you mean 'stripes'"),
    (["fit", "pixels", "--dataset", "stripes", "--epochs", "0"], "--epochs must be a positive"),
    (["fit", "pixels", "--dataset", "stripes", "--batch-size", "-1"], "--batch-size must be a positive"),
    (["fit", "pixels", "--dataset", "stripes", "--lr", "0"], "--lr must be a positive"),
    (["fit", "pixels", "--dataset", "stripes", "--set", "inti=1"], "Did you mean 'init'"),
    (["fit", "pixels", "--dataset", "stripes", "--set", "init=big"], "expected float"),
    (["fit", "pixels", "--dataset", "stripes", "--set", "init"], "expected KEY=VALUE"),
    (["fit", "pixels", "--dataset", "stripes", "--objective", "nll"], "unknown objective 'nll'"),
    (["fit", "pixels", "--dataset", "stripes", "--sampler", "x"], "No such option"),
    (["fit", "--resume", "nowhere"], "does not exist"),
    (["sample", "pixels", "-n", "0"], "-n must be a positive"),
    (["sample", "pixels"], "no run of 'pixels'"),
    (["sample", "pixels", "--out", "missing/x.png"], "does not exist"),
    (["sample", "pixels", "--out", "x.gif"], "unsupported format '.gif'; use a .png, .jpg or .webp"),
    (["sample", "--run", "."], "is not a gentoolkit run"),
])
def test_bad_input_is_one_clear_line(gentool, args, fragment):
    one_line_error(gentool(*args, ok=False), fragment)


def test_cuda_on_a_cpu_machine_is_a_clear_error(gentool):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(gentool("fit", "pixels", "--dataset", "stripes", "--device", "cuda", ok=False),
                   "no CUDA GPU")


def test_unknown_sampler_option_suggests(gentool):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet")
    one_line_error(gentool("sample", "pixels", "--batch-sise", "3", ok=False), "Did you mean '--batch-size'")


def test_truncated_checkpoint_is_a_clear_error(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    weights = tmp_path / "r" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:30])
    one_line_error(gentool("sample", "--run", "r", ok=False), "truncated or damaged")


def test_tensorboard_logs_every_log_every_steps_and_each_epoch_against_the_step(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--quiet", "--run-dir", "r",
            "--callback", "tensorboard", "--log-every", "2", "--lr-schedule", "cosine")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "r" / "tensorboard")).Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["train/loss"] == steps["train/nll"] == steps["train/lr"] == list(range(2, 17, 2))  # 8 per epoch
    assert steps["epoch/train_loss"] == steps["epoch/test_nll"] == [8, 16]
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.1  # the cosine schedule, step by step


def test_csv_logs_steps_and_epochs_and_a_resumed_run_writes_what_a_straight_one_does(gentool, tmp_path):
    log = ["--callback", "csv", "--log-every", "3", "--quiet", "--set", "init=0.3"]
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--run-dir", "straight", *log)
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--max-steps", "10", "--run-dir", "resumed",
            *log)
    gentool("fit", "--resume", "resumed", "--max-steps", "16", "--quiet")

    def rows(run):
        with (tmp_path / run / "metrics.csv").open() as handle:
            table = list(csv.DictReader(handle))
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in table]

    straight = rows("straight")
    assert list(straight[0]) == ["step", "epoch", "loss", "nll", "lr", "train_loss", "train_nll", "test_loss",
                                 "test_nll"]
    assert [(r["step"], r["epoch"], bool(r["loss"]), bool(r["test_loss"])) for r in straight] == [
        ("3", "1", True, False), ("6", "1", True, False), ("8", "1", False, True), ("9", "2", True, False),
        ("12", "2", True, False), ("15", "2", True, False), ("16", "2", False, True)]
    assert rows("resumed") == [{**r, "partial": ""} for r in straight]  # the partial epoch's row was replaced


def test_evaluate_json_and_show(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--quiet", "--run-dir", "r")
    out = json.loads(gentool("evaluate", "--run", "r", "--metric", "pixel-nll", "--json").stdout)
    assert out["nll"] > 0 and out["settings"]["split"] == "test"
    assert out["settings"]["seconds"] >= 0  # how long the evaluation took, as the table's caption says
    shown = gentool("show", "r", "--plot", "curve.png").output
    assert "test_loss" in shown and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    one_line_error(gentool("evaluate", "--run", "r", "--metric", "nope", ok=False), "unknown metric 'nope'")


def test_evaluate_set_reaches_the_metric(gentool):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    one_line_error(gentool("evaluate", "--run", "r", "--metric", "pixel-nll", "--set", "pixel-nll.x=1", ok=False),
                   "metric 'pixel-nll' has no options")
    one_line_error(gentool("evaluate", "--run", "r", "--metric", "pixel-nll", "--set", "fid.x=1", ok=False),
                   "expected METRIC.KEY=VALUE")


def make_folder(folder, corrupt=True):
    """A tiny image folder: mixed sizes and modes, a text file and a corrupt JPEG."""
    from PIL import Image

    folder.mkdir()
    for i, (mode, size) in enumerate([("RGB", (40, 30)), ("L", (32, 32)), ("RGBA", (20, 50)), ("P", (33, 33)),
                                      ("CMYK", (36, 36)), ("RGB", (64, 48))] * 2):
        Image.new(mode, size, color=i * 20 % 255 if mode in ("L", "P") else None).save(
            folder / f"{i}.{'jpg' if mode in ('RGB', 'L', 'CMYK') else 'png'}")
    (folder / "notes.txt").write_text("not an image")
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")


def test_dcgan_trains_on_a_mixed_image_folder_and_ranks(gentool, tmp_path):
    make_folder(tmp_path / "faces")
    result = gentool("fit", "dcgan", "--dataset", "image-folder", "--data-dir", "faces", "--image-size", "32",
                     "--max-steps", "3", "--batch-size", "4", "--quiet", "--run-dir", "gan",
                     "--set", "ngf=8", "--set", "ndf=8", "--set", "nz=16")
    assert [line for line in result.output.splitlines() if "skipped 2 files" in line]  # text + corrupt
    gentool("sample", "--run", "gan", "-n", "4", "--sampler", "ranking", "--candidates", "16", "--out", "best.png")
    scores = json.loads((tmp_path / "best.scores.json").read_text())["scores"]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    gentool("sample", "--run", "gan", "-n", "4", "--sampler", "ranking", "--candidates", "16", "--out", "best/")
    assert json.loads((tmp_path / "best" / "scores.json").read_text())["scores"] == scores


@pytest.mark.parametrize("setup,args,fragment", [
    (lambda p: (p / "empty").mkdir(), ["--dataset", "image-folder", "--data-dir", "empty"], "no images in"),
    (lambda p: ((p / "texts").mkdir(), (p / "texts" / "a.txt").write_text("x")),
     ["--dataset", "image-folder", "--data-dir", "texts"], "no images in"),
    (lambda p: (p / "nodata").mkdir(), ["--dataset", "mnist", "--data-dir", "nodata", "--no-download"],
     "drop --no-download"),
])
def test_bad_data_is_one_clear_line(gentool, tmp_path, setup, args, fragment):
    setup(tmp_path)
    one_line_error(gentool("fit", "vae", *args, ok=False), fragment)


def test_ranking_a_vae_and_a_foreign_checkpoint_are_clear_errors(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "px")
    gentool("fit", "vae", "--dataset", "shapes", "--max-steps", "2", "--quiet", "--run-dir", "vae",
            "--set", "data.train_size=256", "--set", "data.test_size=64", "--set", "hidden=16", "--set", "latent_dim=2")
    one_line_error(gentool("sample", "--run", "vae", "--sampler", "ranking", ok=False),
                   "sampler 'ranking' does not work with model 'bernoulli-vae'")
    (tmp_path / "vae" / "model.safetensors").write_bytes((tmp_path / "px" / "model.safetensors").read_bytes())
    one_line_error(gentool("sample", "--run", "vae", ok=False), "does not match model 'bernoulli-vae'")


def test_debug_shows_the_traceback(gentool, monkeypatch):
    monkeypatch.setenv("GENTOOL_DEBUG", "1")
    result = gentool("fit", "pixles", "--dataset", "stripes", ok=False)
    assert result.exit_code == 1 and "Traceback" in result.output


def test_evaluate_shows_each_phase_of_the_likelihood_metrics(gentool):
    gentool("fit", "vae", "--dataset", "shapes", "--max-steps", "2", "--quiet", "--run-dir", "vae",
            "--set", "data.train_size=256", "--set", "data.test_size=64", "--set", "hidden=16", "--set", "latent_dim=2")
    result = gentool("evaluate", "--run", "vae", "--metric", "elbo,nll,recon", "--k", "3", "--limit", "16")
    started, timed = phase_log(result.stderr)
    assert timed == ["loading data set 'shapes'", "elbo", "nll", "recon"]
    assert started == [
        "loading data set 'shapes'", "elbo", "elbo › the ELBO of 16 images",
        "nll", "nll › log p(x) of 16 images, 3 importance samples each", "recon", "recon › reconstructing 16 images"]
    assert "elbo" in result.stdout and "nll" in result.stdout and "evaluated in" in result.stdout


# ------------------------------------------------------------ config files


def trained_as(path):
    """What a run's config.json says about how it trained: everything but the machine it ran on."""
    config = json.loads(path.read_text())
    config["training"].pop("device")
    return {key: config[key] for key in ("model", "objective", "trainer", "dataset", "training", "callbacks")}


def test_fit_reads_a_toml_config_and_flags_override_it(gentool, tmp_path):
    (tmp_path / "px.toml").write_text(
        'model = "pixels"\ndataset = "stripes"\nepochs = 3\nbatch-size = 16\nquiet = true\n'
        'callback = "tensorboard"\n\n[set]\ninit = 0.5\n\n[set.objective]\nscale = 2.0\n')
    gentool("fit", "--config", "px.toml", "--run-dir", "a", "--epochs", "1", "--set", "init=0.25")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model"]["config"] == {"init": 0.25}  # --set wins over the file's [set] ...
    assert config["objective"]["config"] == {"scale": 2.0}  # ... and adds to the rest of it
    assert (config["training"]["epochs"], config["training"]["batch_size"]) == (1, 16)
    assert config["callbacks"] == ["tensorboard"]


def test_fit_reads_a_json_config_with_dotted_set_keys_and_underscored_names(gentool, tmp_path):
    (tmp_path / "px.json").write_text(json.dumps({"model": "px", "dataset": "stripes", "max_steps": 3,
                                                  "set": {"objective.scale": 3, "init": -1}}))
    gentool("fit", "--config", "px.json", "--run-dir", "a", "--quiet")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["objective"]["config"] == {"scale": 3.0} and config["model"]["config"] == {"init": -1.0}
    assert config["training"]["max_steps"] == 3


def test_a_runs_config_json_and_from_run_train_the_same_run_again(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--batch-size", "16", "--lr", "0.05",
            "--lr-schedule", "cosine", "--seed", "3", "--set", "init=0.5", "--set", "objective.scale=2",
            "--quiet", "--run-dir", "original")
    gentool("fit", "--config", "original/config.json", "--run-dir", "replayed", "--quiet")
    gentool("fit", "--from", "original", "--run-dir", "again", "--quiet")
    original = trained_as(tmp_path / "original" / "config.json")
    assert trained_as(tmp_path / "replayed" / "config.json") == original
    assert trained_as(tmp_path / "again" / "config.json") == original
    rows = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("original", "again")]
    assert [json.loads(r)["train_loss"] for r in rows[0]] == [json.loads(r)["train_loss"] for r in rows[1]]

    gentool("fit", "--from", "original", "--run-dir", "longer", "--epochs", "3", "--set", "init=0", "--quiet")
    longer = trained_as(tmp_path / "longer" / "config.json")
    assert longer["training"]["epochs"] == 3 and longer["model"]["config"] == {"init": 0.0}
    assert longer["objective"] == original["objective"] and longer["training"]["seed"] == 3


@pytest.mark.parametrize("text,fragment", [
    ('model = "px"\nepoch = 2\n', "px.toml: unknown option 'epoch'. Did you mean 'epochs'?"),
    ('model = "px"\nepochs = "many"\n', "px.toml: epochs = 'many': 'many' is not a valid integer"),
    ('model = "px"\nprecision = "fp64"\n', "px.toml: precision = 'fp64'"),
    ('model = "px"\nresume = "r"\n', "unknown option 'resume'"),
    ('model = "px"\nset = 3\n', "'set' must be a table of options"),
    ('model = "px\n', "not valid TOML"),
])
def test_a_bad_config_file_is_one_line_naming_the_file(gentool, tmp_path, text, fragment):
    (tmp_path / "px.toml").write_text(text)
    one_line_error(gentool("fit", "--config", "px.toml", "--dataset", "stripes", ok=False), fragment)


def test_config_and_from_need_a_file_and_a_run_and_start_new_runs_only(gentool, tmp_path):
    one_line_error(gentool("fit", "--from", ".", ok=False), "--from .: not a gentoolkit run")
    one_line_error(gentool("fit", "--config", "nowhere.toml", ok=False), "--config nowhere.toml: cannot read it")
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    one_line_error(gentool("fit", "--resume", "r", "--from", "r", ok=False), "so --from cannot be given with it")


def test_the_config_file_in_the_docs_reads_as_it_says(tmp_path):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    (tmp_path / "conv-vae.toml").write_text(re.search(r"^```toml\n(.*?)^```", doc, re.MULTILINE | re.DOTALL).group(1))
    values = optionfiles.read(tmp_path / "conv-vae.toml", fit, click.Context(fit))
    assert values["overrides"] == ("arch=conv", "latent_dim=32", "channels=32,64", "trainer.grad_clip=1.0")
    assert (values["model"], values["epochs"], values["lr_schedule"]) == ("vae", 30, "cosine")
    assert values["callback_names"] == ("tensorboard", "csv")


def test_wandb_offline_writes_its_run_files_in_the_run_and_a_resume_continues_that_run(gentool, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'gentoolkit[wandb]')")
    for variable, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": tmp_path / "cfg",
                            "WANDB_CACHE_DIR": tmp_path / "cache", "WANDB_DATA_DIR": tmp_path / "data"}.items():
        monkeypatch.setenv(variable, str(value))
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--run-dir", "r", "--quiet",
            "--callback", "wandb", "--log-every", "2")
    run_id = (tmp_path / "r" / "wandb" / "gentoolkit-run-id").read_text()
    (first,) = (tmp_path / "r" / "wandb").glob("offline-run-*")
    assert first.name.endswith(f"-{run_id}") and (first / f"run-{run_id}.wandb").stat().st_size > 0

    gentool("fit", "--resume", "r", "--epochs", "2", "--quiet")
    runs = sorted((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(f"-{run_id}") for run in runs)


def test_samplers_from_real_images_need_an_encoder(gentool):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "px")
    one_line_error(gentool("sample", "--run", "px", "--sampler", "reconstruct", ok=False),
                   "sampler 'reconstruct' does not work with model 'pixels': it needs a model with LatentModel, "
                   "LatentEncoder")
    one_line_error(gentool("sample", "--run", "px", "--sampler", "interpolate", ok=False),
                   "--between data needs a model with an encoder (LatentEncoder)")
    gentool("sample", "--run", "px", "--sampler", "interpolate", "--between", "prior", "--out", "paths.png")


# ------------------------------------------------------------ image output


def test_grids_in_png_jpeg_and_webp_with_rows_and_scale(gentool, tmp_path):
    from PIL import Image

    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    gentool("sample", "--run", "r", "-n", "12", "--out", "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (4 * 10 + 2, 3 * 10 + 2)  # 8 px images, 2 px apart
    gentool("sample", "--run", "r", "-n", "12", "--nrow", "6", "--scale", "3", "--out", "wide.jpg")
    picture = Image.open(tmp_path / "wide.jpg")
    assert (picture.format, picture.mode, picture.size) == ("JPEG", "L", (3 * (6 * 10 + 2), 3 * (2 * 10 + 2)))
    gentool("sample", "--run", "r", "-n", "4", "--out", "grid.webp")
    assert Image.open(tmp_path / "grid.webp").format == "WEBP"
    gentool("sample", "--run", "r", "-n", "4", "--out", "grid.jpeg")
    assert Image.open(tmp_path / "grid.jpeg").format == "JPEG"
    one_line_error(gentool("sample", "--run", "r", "--nrow", "0", ok=False), "--nrow")


def test_out_dir_writes_one_file_per_image_in_batches(gentool, tmp_path, monkeypatch):
    from PIL import Image

    import gentoolkit.api
    import gentoolkit.cli

    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "1", "--quiet", "--run-dir", "r")
    monkeypatch.setattr(gentoolkit.cli, "STREAMED_BATCH", 4)
    sizes = []
    original = gentoolkit.api.Run.sample_batches

    def counted(self, *args, **kwargs):
        for samples in original(self, *args, **kwargs):
            sizes.append(len(samples.images))
            yield samples

    monkeypatch.setattr(gentoolkit.api.Run, "sample_batches", counted)
    gentool("sample", "--run", "r", "-n", "10", "--scale", "2", "--out", "each/")
    assert sizes == [4, 4, 2]
    files = sorted((tmp_path / "each").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(10)]
    assert Image.open(files[0]).size == (16, 16)
    one_line_error(gentool("sample", "--run", "r", "-n", "3", "--out", "each/", ok=False), "pass --force")
    gentool("sample", "--run", "r", "-n", "3", "--out", "each/", "--force")
    one_line_error(gentool("sample", "--run", "r", "-n", "3", "--out", "r/images/", ok=False), "inside the run")
    one_line_error(gentool("sample", "--run", "r", "-n", "3", "--out", "nowhere/each/", ok=False), "does not exist")


# ------------------------------------------------------------------ show


def test_show_summarises_the_run_and_splits_its_table_to_fit_the_terminal(gentool, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "3", "--quiet", "--run-dir", "r", "--keep-best")
    out = gentool("show", "r").stdout
    lines = out.splitlines()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["test_loss"])
    assert lines[:3] == ["pixels on stripes: 256 training and 64 test images",
                         lines[1], f"best test_loss {best['test_loss']:.4g} at epoch {best['epoch']}; "
                                   "best.safetensors holds it"]
    assert lines[1].startswith("3 of 3 epochs, 24 steps, ") and lines[1].endswith(" min on cpu")
    assert lines[3].startswith("last epoch: test_loss ")
    assert max(map(len, lines)) <= 60 and '"model"' not in out  # no config JSON
    headers = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in lines if line.startswith("┃")]
    assert len(headers) == 2 and all(header[0] == "epoch" for header in headers)  # two tables, each by epoch
    assert {"train_loss", "train_nll", "test_loss", "test_nll", "seconds"} == {*headers[0][1:], *headers[1][1:]}


def test_show_config_prints_the_json_and_a_stopped_epoch_is_marked(gentool, tmp_path):
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--max-steps", "12", "--quiet", "--run-dir", "r")
    config = json.loads(gentool("show", "r", "--config").stdout)
    assert config == json.loads((tmp_path / "r" / "config.json").read_text())
    out = gentool("show", "r").stdout
    assert "1 of 2 epochs, 12 steps" in out and "stopped in epoch 2, --resume finishes it" in out
    assert "2*" in out and "* stopped in this epoch" in out


def test_show_plot_draws_train_and_test_of_a_metric_on_one_axis(gentool, tmp_path, monkeypatch):
    import gentoolkit.plots

    drawn = {}
    monkeypatch.setattr(gentoolkit.plots, "plot_metrics",
                        lambda series, keys, path, title: drawn.update(series=series, keys=keys, path=path))
    gentool("fit", "pixels", "--dataset", "stripes", "--epochs", "2", "--quiet", "--run-dir", "r")
    for name in ("curves.jpg", "curves.safetensors"):
        one_line_error(gentool("show", "r", "--plot", name, ok=False), f"--plot {name}: the curves are drawn as a PNG")
    assert not drawn
    gentool("show", "r", "--plot", "curves.png")
    assert drawn["keys"] == ["loss", "nll"] and set(drawn["series"]) == {"train", "test"}
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [p["loss"] for p in drawn["series"]["test"]] == [r["test_loss"] for r in rows]
