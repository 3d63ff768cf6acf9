"""Bad input at every public entry point: a clear error naming the problem, or a correct result.

One table per entry point: (case, call, expected exception, words the message must contain).
"""
import os

import numpy as np
import pytest
import qvggt_kernels as qk
import torch
from PIL import Image

from qvggt_lib.cli import main
from qvggt_lib.io import load_and_preprocess_images
from qvggt_lib.model import CheckpointError, build_vggt, load_checkpoint, save_checkpoint
from qvggt_lib.quant import make_config, quantize


@pytest.fixture(scope="module")
def model():
    return build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1)).eval()


def frames(n=2, px=28, fill=None):
    x = torch.rand(n, 3, px, px, generator=torch.Generator().manual_seed(0))
    if fill is not None:
        x[-1, 0, 3, 4] = fill  # one bad pixel in the last frame
    return x


MODEL_CASES = [
    ("a NaN pixel", lambda: frames(fill=float("nan")), ValueError, ["NaN or Inf", "frame 1"]),
    ("an Inf pixel", lambda: frames(fill=float("inf")), ValueError, ["NaN or Inf", "frame 1"]),
    ("zero frames", lambda: torch.zeros(0, 3, 28, 28), ValueError, ["at least one frame"]),
    ("a zero-frame batch", lambda: torch.zeros(1, 0, 3, 28, 28), ValueError, ["at least one frame"]),
    ("a 0x0 image", lambda: torch.zeros(1, 3, 0, 0), ValueError, ["at least 14x14"]),
    ("float64", lambda: frames().double(), TypeError, ["float64", "images.float()"]),
    ("uint8", lambda: (frames() * 255).to(torch.uint8), TypeError, ["divide uint8 by 255"]),
    ("0-255 floats", lambda: frames() * 255, ValueError, ["[0, 1]", "divide 0-255"]),
    ("channels last", lambda: frames().permute(0, 2, 3, 1), ValueError, ["3 (RGB) channels"]),
    ("not a multiple of 14", lambda: torch.rand(1, 3, 30, 28), ValueError, ["multiples of the patch size"]),
    ("a numpy array", lambda: frames().numpy(), TypeError, ["torch.Tensor"]),
]


@pytest.mark.parametrize("case, make, error, words", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_forward_rejects(model, case, make, error, words):
    with pytest.raises(error) as info, torch.inference_mode():
        model(make())
    assert all(w in str(info.value) for w in words), str(info.value)


def test_model_forward_accepts_one_frame(model):
    with torch.inference_mode():
        out = model(frames(n=1))
    assert out["depth"].shape == (1, 1, 28, 28, 1) and torch.isfinite(out["depth"]).all()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(d / "ok.png")
    (d / "text.png").write_bytes(b"not an image")
    Image.new("RGB", (2000, 5)).save(d / "thin.png")
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).round().astype(np.uint16)  # 16-bit horizontal ramp
    Image.fromarray(ramp).save(d / "ramp16.png")
    return d


LOADER_CASES = [
    ("a missing file", lambda d: load_and_preprocess_images([d / "none.png"]), FileNotFoundError, ["none.png"]),
    ("not an image", lambda d: load_and_preprocess_images([d / "text.png"]), ValueError, ["text.png", "PNG/JPEG"]),
    ("no images", lambda d: load_and_preprocess_images([]), ValueError, ["At least 1 image"]),
    ("an unknown mode", lambda d: load_and_preprocess_images([d / "ok.png"], mode="fit"), ValueError, ["'crop'"]),
    ("size 0", lambda d: load_and_preprocess_images([d / "ok.png"], size=0), ValueError, ["positive multiple"]),
    ("size 15", lambda d: load_and_preprocess_images([d / "ok.png"], size=15), ValueError, ["multiple of the patch"]),
    ("an empty PIL image", lambda d: load_and_preprocess_images([Image.new("RGB", (0, 0))]), ValueError, ["empty"]),
    ("2000x5 pixels", lambda d: load_and_preprocess_images([d / "thin.png"], size=112), ValueError, ["elongated"]),
    ("float pixels", lambda d: load_and_preprocess_images([Image.new("F", (28, 28))]), ValueError, ["mode F"]),
]


@pytest.mark.parametrize("case, call, error, words", LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_image_loader_rejects(image_dir, case, call, error, words):
    with pytest.raises(error) as info:
        call(image_dir)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_sixteen_bit_png_is_scaled_not_clipped(image_dir):
    assert Image.open(image_dir / "ramp16.png").mode.startswith("I")
    images = load_and_preprocess_images([image_dir / "ramp16.png"], size=56)
    row = images[0, 0, 28]
    # the ramp survives: dark on the left, bright on the right, about half grey on average
    # (before the fix, convert("RGB") clipped it to 99 % ones)
    assert row[0] < 0.05 and row[-1] > 0.95 and 0.4 < float(images.mean()) < 0.6


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("checkpoints")
    (d / "junk.safetensors").write_bytes(b"\x00" * 20)
    Image.new("RGB", (8, 8)).save(d / "image.pt", format="PNG")
    torch.save({"weights": [1, 2, 3]}, d / "list.pt")
    save_checkpoint(build_vggt("tiny"), d / "other_size.safetensors")
    return d


CHECKPOINT_CASES = [
    ("a missing file", "none.pt", FileNotFoundError, ["none.pt", "does not exist"]),
    ("a truncated safetensors", "junk.safetensors", CheckpointError, ["Could not read", "junk.safetensors"]),
    ("an image named .pt", "image.pt", CheckpointError, ["Could not read", "image.pt"]),
    ("a dict of lists", "list.pt", CheckpointError, ["plain state dict"]),
    ("another model size", "other_size.safetensors", CheckpointError, []),
]


@pytest.mark.parametrize("case, name, error, words", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_loading_rejects(model, bad_files, case, name, error, words):
    with pytest.raises(error) as info:
        load_checkpoint(model, bad_files / name)
    assert all(w in str(info.value) for w in words), str(info.value)


QUANTIZE_CASES = [
    ("an unknown method", lambda m: make_config("best", "w4a4"), ValueError, ["unknown method"]),
    ("unknown bits", lambda m: make_config("rtn", "w4a9"), ValueError, ["unknown bits"]),
    ("an option of another method", lambda m: make_config("rtn", "w4a4", alpha=0.5), ValueError, ["alpha"]),
    ("no calibration", lambda m: quantize(m, make_config("quantvggt", "w4a4")), ValueError, ["needs calibration"]),
    ("empty calibration", lambda m: quantize(m, make_config("smoothquant", "w8a8"), calibration=[]), ValueError,
     ["calibration is empty"]),
    ("a NaN calibration frame", lambda m: quantize(m, make_config("smoothquant", "w8a8"),
                                                   calibration=[frames(fill=float("nan"))]),
     ValueError, ["calibration scene 0", "NaN"]),
    ("a zero-frame calibration scene", lambda m: quantize(m, make_config("smoothquant", "w8a8"),
                                                          calibration=[torch.zeros(0, 3, 28, 28)]),
     ValueError, ["calibration scene 0", "at least one frame"]),
]


@pytest.mark.parametrize("case, call, error, words", QUANTIZE_CASES, ids=[c[0] for c in QUANTIZE_CASES])
def test_quantize_rejects(model, case, call, error, words):
    with pytest.raises(error) as info:
        call(model)
    assert all(w in str(info.value) for w in words), str(info.value)


KERNEL_CASES = [
    ("integer activations", lambda: qk.quantize_per_token(torch.ones(4, 16, dtype=torch.int32), 4, backend="torch"),
     TypeError, ["dtype"]),
    ("GEMM K mismatch", lambda: qk.w8a8_matmul(torch.zeros(4, 16, dtype=torch.int8), torch.ones(4),
                                               torch.zeros(8, 32, dtype=torch.int8), torch.ones(8), None,
                                               backend="torch"), ValueError, ["K mismatch"]),
    ("packing an odd K", lambda: qk.pack_int4(torch.zeros(2, 5, dtype=torch.int8), backend="torch"), ValueError, []),
]


@pytest.mark.parametrize("case, call, error, words", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernels_reject(case, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert all(w in str(info.value) for w in words), str(info.value)


CLI_CASES = [
    ("eval of a missing checkpoint", ["eval", "--checkpoint", "no/such/file.safetensors"], "does not exist"),
    ("quantize with unknown bits", ["quantize", "--model", "tiny", "--method", "rtn", "--bits", "w4a9",
                                    "--out", "unused.safetensors"], "unknown bits"),
    ("demo with an unknown model", ["demo", "--model", "huge"], "Unknown model config"),
    ("eval of an unknown split", ["eval", "--split", "holdout", "--scenes", "1"], "split"),
]


@pytest.mark.parametrize("case, argv, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_gives_one_line_and_exit_code_2(capsys, case, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


ARGPARSE_CASES = [
    ["demo", "--frames", "0"],
    ["demo", "--repeats", "0"],
    ["eval", "--scenes", "-3"],
    ["eval", "--threads", "0"],
    ["quantize", "--method", "rtn", "--out", "x.safetensors", "--calib-size", "two"],
    ["table", "--frames", "0"],
    ["train", "--steps", "0"],
]


@pytest.mark.parametrize("argv", ARGPARSE_CASES, ids=[" ".join(a) for a in ARGPARSE_CASES])
def test_cli_rejects_bad_numbers_in_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "must be an integer" in err[0]


def bad_output_paths(tmp):
    (tmp / "a_file").write_text("")
    locked = tmp / "locked"
    locked.mkdir(mode=0o500)
    return {"a folder": (tmp, "is a directory"), "a file as folder": (tmp / "a_file" / "out.json", "cannot"),
            "unwritable": (locked / "out.json", "cannot")}


SUBCOMMANDS_WITH_OUTPUT = {
    "quantize --out": lambda p: ["quantize", "--method", "rtn", "--bits", "w8a8", "--out", str(p)],
    "eval --json": lambda p: ["eval", "--scenes", "1", "--json", str(p)],
    "table --json": lambda p: ["table", "--methods", "rtn", "--bits", "w8a8", "--json", str(p)],
}


@pytest.mark.parametrize("command", SUBCOMMANDS_WITH_OUTPUT)
@pytest.mark.parametrize("which", ["a folder", "a file as folder", "unwritable"])
def test_cli_checks_output_paths_before_any_work(tmp_path, capsys, monkeypatch, command, which):
    import qvggt_lib.model

    path, words = bad_output_paths(tmp_path)[which]
    if which == "unwritable" and os.access(path.parent, os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): permissions are not enforced")

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(qvggt_lib.model, "load_pretrained", no_work)
    assert main(SUBCOMMANDS_WITH_OUTPUT[command](path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_train_checks_its_out_dir_first(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["train", "--steps", "1", "--out-dir", str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0], err


def test_cli_reads_a_non_checkpoint_as_a_clear_error(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.safetensors", format="PNG")
    assert main(["eval", "--checkpoint", str(tmp_path / "photo.safetensors"), "--scenes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Could not read checkpoint" in err[0], err


# Checkpoint files whose contents contradict themselves, and the one loader for every kind
# ---------------------------------------------------------------------------------------
def rewrite(path, out, metadata_change=None, tensor_change=None, keep_digest=False):
    """Copy a safetensors file, editing its metadata and/or tensors (a tampered or broken file).
    Without keep_digest the metadata digest is dropped, as in files written before it existed,
    so the checks behind it are the ones tested."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from qvggt_lib.model.checkpoint import DIGEST_KEY

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if not keep_digest:
        metadata.pop(DIGEST_KEY)
    (metadata_change or (lambda m: None))(metadata)
    (tensor_change or (lambda t: None))(tensors)
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    from qvggt_lib.deploy import deploy, save_deployed
    from qvggt_lib.quant import save_quantized

    d = tmp_path_factory.mktemp("saved")
    q = quantize(model, make_config("rtn", "w4a4"), progress=False)
    return {"dir": d, "float": save_checkpoint(model, d / "float.safetensors"), "quantized_model": q,
            "quantized": save_quantized(q, d / "q.safetensors"),
            "deployed": save_deployed(deploy(q, backend="torch"), d / "deployed.safetensors")}


def test_a_missing_key_is_reported_not_hidden(model, saved):
    path = rewrite(saved["float"], saved["dir"] / "no_camera_token.safetensors",
                   tensor_change=lambda t: t.pop("aggregator.camera_token"))
    fresh = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=1)
    report = load_checkpoint(fresh, path, strict=False)
    assert report.missing == ["aggregator.camera_token"]
    assert "MISSING" in str(report) and "aggregator.camera_token" in str(report)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(fresh, path)


def test_integer_weights_are_refused(model, saved):
    def to_int8(tensors):
        tensors["aggregator.camera_token"] = tensors["aggregator.camera_token"].to(torch.int8)

    path = rewrite(saved["float"], saved["dir"] / "int8.safetensors", tensor_change=to_int8)
    with pytest.raises(CheckpointError, match="non-float"):
        load_checkpoint(build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1)), path)


def edit_config(**changes):
    import json

    def change(metadata):
        config = json.loads(metadata["config"])
        config.update(changes)
        metadata["config"] = json.dumps(config)

    return change


@pytest.mark.parametrize("changes, words", [
    ({"depth": 999}, "depth=999"),                 # would allocate until memory runs out
    ({"embed_dim": "wide"}, "embed_dim='wide'"),
    ({"rope_freq": -1.0}, "rope_freq=-1.0"),
    ({"depth": 3, "intermediate_layer_idx": [0, 1, 2, 2]}, "does not match its tensors"),
], ids=["huge depth", "a string width", "negative rope_freq", "another depth"])
def test_a_tampered_config_fails_before_allocating(saved, changes, words):
    from qvggt_lib.model import load_model

    path = rewrite(saved["float"], saved["dir"] / "tampered.safetensors", metadata_change=edit_config(**changes))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert words in str(info.value), str(info.value)


def test_a_quantized_file_relabelled_to_other_bits_is_refused(saved):
    import json

    from qvggt_lib.quant import load_quantized

    def relabel(metadata):
        config = json.loads(metadata["quant_config"])
        config["fields"]["bits"] = "w8a8"  # the tensors are 4-bit
        metadata["quant_config"] = json.dumps(config)

    path = rewrite(saved["quantized"], saved["dir"] / "relabelled.safetensors", metadata_change=relabel)
    with pytest.raises(CheckpointError, match="not on the w8a8 grid"):
        load_quantized(path)
    assert load_quantized(saved["quantized"]).quant_config.bits == "w4a4"  # the untouched file loads


@pytest.mark.parametrize("kind", ["float", "quantized", "deployed"])
def test_metadata_edited_after_saving_is_noticed(saved, kind):
    """rope_freq changes no tensor shape: without the digest such an edit would load silently."""
    from qvggt_lib.quant import load_any

    path = rewrite(saved[kind], saved["dir"] / f"edited_{kind}.safetensors", keep_digest=True,
                   metadata_change=edit_config(rope_freq=50.0))
    with pytest.raises(CheckpointError, match="edited after it was saved"):
        load_any(path)


def test_load_any_reads_every_kind_and_the_float_loader_names_the_right_one(saved):
    from qvggt_lib.deploy import Int4Linear
    from qvggt_lib.model import load_model
    from qvggt_lib.quant import QuantLinear, load_any

    qkv = lambda m: m.aggregator.frame_blocks[0].attn.qkv
    assert isinstance(qkv(load_any(saved["float"])), torch.nn.Linear)
    assert isinstance(qkv(load_any(saved["quantized"])), QuantLinear)
    assert isinstance(qkv(load_any(saved["deployed"])), Int4Linear)
    for kind, loader in (("quantized", "load_quantized"), ("deployed", "load_deployed")):
        with pytest.raises(CheckpointError, match=loader):
            load_model(saved[kind])


def test_save_checkpoint_refuses_a_quantized_model(saved):
    with pytest.raises(TypeError, match="save_quantized"):
        save_checkpoint(saved["quantized_model"], saved["dir"] / "wrong.safetensors")


def test_cli_eval_reads_a_deployed_checkpoint(saved, capsys):
    assert main(["eval", "--checkpoint", str(saved["deployed"]), "--scenes", "1", "--frames", "2",
                 "--image-size", "28", "--no-baselines", "--no-progress", "--threads", "1"]) == 0
    assert "deployed" in capsys.readouterr().out


def test_a_tall_image_is_cropped_as_resize_then_crop_would(tmp_path):
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (60, 2, 3), dtype=np.uint8))
    tall = small.resize((20, 600), Image.Resampling.BILINEAR)  # smooth, like a photo
    got = load_and_preprocess_images([tall], mode="crop", size=112)  # resized height 3360: band path
    full = tall.resize((112, 3360), Image.Resampling.BICUBIC)  # upstream: resize all, then crop
    expected = torch.from_numpy(np.asarray(full, dtype=np.float32) / 255.0).permute(2, 0, 1)[:, 1624:1736]
    assert got.shape == (1, 3, 112, 112)
    # the band's filter positions differ from the full resize's by float rounding: measured at
    # most 1 level (mean 0.04) on this smooth image; pixel noise can differ more at a few taps
    diff = (got[0] - expected).abs() * 255
    assert float(diff.max()) <= 3 and float(diff.mean()) < 0.25


def test_an_extreme_aspect_ratio_does_not_need_memory_for_the_full_resize(tmp_path):
    """5x4000 pixels at 518: resize-then-crop would build a 518 x 414,400 image (about 3 GB as
    float32); the band path keeps the peak memory near the output's size."""
    import subprocess
    import sys

    Image.new("RGB", (5, 4000), (90, 120, 150)).save(tmp_path / "needle.png")
    script = (
        "import resource, torch\n"
        "from qvggt_lib.io import load_and_preprocess_images\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"x = load_and_preprocess_images([{str(tmp_path / 'needle.png')!r}], size=518)\n"
        "assert x.shape == (1, 3, 518, 518)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    grown_mib = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                   check=True).stdout.strip())
    assert grown_mib < 200, grown_mib
