"""The full-scale path (scripts/run_co3d_results.py) dry-run end to end on the tiny model and a
rendered Co3D fixture in the exact upstream formats: rows, fidelity, markdown, resume."""

import importlib.util
import json
from pathlib import Path

import pytest

from co3d_fixture import write_co3d_fixture
from qvggt_lib.eval import co3d_results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_co3d_results.py"


def run_script(argv):
    spec = importlib.util.spec_from_file_location("run_co3d_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_co3d_fixture(tmp_path_factory.mktemp("co3d"), frames_per_sequence=6)


def quick_argv(dataset, out_dir):
    co3d_dir, anno_dir = dataset
    return ["--co3d-dir", str(co3d_dir), "--co3d-anno-dir", str(anno_dir), "--out-dir", str(out_dir),
            "--methods", "rtn", "quantvggt", "--bits", "w4a4", "--frames", "3", "--min-frames", "6",
            "--pool", "4", "--calib-size", "2", "--calib-frames", "2", "--clusters", "2",
            "--calib-min-frames", "6", "--epochs", "1", "--threads", "1", "--categories", "apple", "bench"]


def test_the_paper_scale_run_writes_every_row_and_resumes_without_recomputing(dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_script(quick_argv(dataset, out))
    data = json.loads((out / "results.json").read_text())
    fp = data["fp"]["fp"]
    assert fp["metrics"]["num_sequences"] == 4 and fp["metrics"]["categories"] == ["apple", "bench"]
    assert len(fp["predictions"]) == 4 and len(fp["predictions"][0]["extrinsics"]) == 3  # 3 frames each
    assert sorted(data["table1"]) == ["quantvggt/w4a4", "rtn/w4a4"]
    for row in data["table1"].values():
        fidelity = row["metrics"]["fidelity"]
        assert 0 <= fidelity["auc3"] <= fidelity["auc30"] <= 100 and fidelity["rotation_diff_deg"] >= 0
        assert row["calibration_seconds"] > 0
    assert data["table1"]["quantvggt/w4a4"]["config"]["epochs"] == 1
    markdown = (out / "results.md").read_text()
    assert "## Accuracy against the Co3D cameras" in markdown and "| QuantVGGT | W4A4 |" in markdown
    assert "AUC@5 vs FP" in markdown
    assert not list(out.glob("*.calibration-progress"))  # removed once its row is stored

    def fail(*args, **kwargs):
        raise AssertionError("a stored row was computed again")

    monkeypatch.setattr(co3d_results, "quantize_and_evaluate", fail)
    monkeypatch.setattr(co3d_results, "evaluate_co3d", fail)
    run_script(quick_argv(dataset, out))  # everything stored: only reads and renders
    assert json.loads((out / "results.json").read_text())["table1"] == data["table1"]


def test_the_run_refuses_to_mix_settings_and_names_unknown_ones(dataset, tmp_path):
    out = tmp_path / "run"
    argv = quick_argv(dataset, out)
    argv[argv.index("--methods") + 1: argv.index("--bits")] = ["rtn"]
    run_script(argv)
    argv[argv.index("--frames") + 1] = "4"
    with pytest.raises(SystemExit, match="other settings"):
        run_script(argv)
    with pytest.raises(ValueError, match="unknown Co3D run settings"):
        co3d_results.co3d_settings(scenes=3)


def test_qvggt_eval_on_co3d_prints_the_protocol_table_and_fidelity(dataset, tmp_path, capsys):
    from qvggt_lib.cli import main

    co3d_dir, anno_dir = dataset
    argv = ["eval", "--data", "co3d", "--co3d-dir", str(co3d_dir), "--co3d-anno-dir", str(anno_dir),
            "--categories", "apple", "bench", "--frames", "3", "--min-frames", "6", "--reference", "tiny",
            "--json", str(tmp_path / "co3d.json"), "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Co3Dv2, 4 test sequences of 2 categories x 3 frames at 112 px" in out and "| RTA@30 |" in out
    results = json.loads((tmp_path / "co3d.json").read_text())
    assert results["fidelity"]["auc3"] == 100.0  # the model against itself: the same cameras
    assert sorted(results["per_category"]) == ["apple", "bench"]


@pytest.mark.parametrize("argv, message", [
    (["--data", "co3d"], "--data co3d needs --co3d-dir and --co3d-anno-dir"),
    (["--kf-every", "5"], "--kf-every: not used with --data rendered"),
    (["--data", "7scenes"], "--data 7scenes needs --data-dir"),
])
def test_qvggt_eval_names_missing_and_foreign_data_options(capsys, argv, message):
    from qvggt_lib.cli import main

    assert main(["eval", *argv]) == 2
    assert message in capsys.readouterr().err


def test_qvggt_quantize_calibrates_on_co3d_training_sequences(dataset, tmp_path, capsys):
    from qvggt_lib.cli import main

    co3d_dir, anno_dir = dataset
    out = tmp_path / "q.safetensors"
    argv = ["quantize", "--method", "smoothquant", "--bits", "w8a8", "--calib-co3d-dir", str(co3d_dir),
            "--calib-co3d-anno-dir", str(anno_dir), "--calib-categories", "apple", "bench", "--calib-pool", "4",
            "--calib-size", "2", "--calib-frames", "2", "--calib-clusters", "2", "--calib-min-frames", "6",
            "--out", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0 and out.is_file()
    assert "from a pool of 4 Co3D training sequences" in capsys.readouterr().out
    assert main([*argv, "--calib-images", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    argv[argv.index("--calib-min-frames") + 1] = "50"  # no fixture sequence is that long: a clear error
    assert main(argv) == 2
    assert "only 0 usable train sequences (>= 50 frames)" in capsys.readouterr().err
