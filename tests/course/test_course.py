"""The notebooks' parameter cell: MODEL="tiny" or "vggt-1b" (random weights or a checkpoint)."""

import pytest
import torch

from qvggt_lib.course import course_scenes, load_course_model, scene_images, seed_everything
from qvggt_lib.model import build_vggt, save_checkpoint


def test_tiny_with_a_checkpoint_path(tmp_path):
    path = save_checkpoint(build_vggt("tiny", seed=4), tmp_path / "t.safetensors")
    model = load_course_model("tiny", str(path))
    assert not model.training and model.config.img_size == 112


def test_vggt1b_random_weights_load_and_one_small_forward():
    """What a notebook does with MODEL='vggt-1b' and no checkpoint: build, then run at a small size."""
    with pytest.warns(UserWarning, match="random weights"):
        model = load_course_model("vggt-1b")
    assert sum(p.numel() for p in model.parameters()) == 1_190_596_120
    scenes = course_scenes("test", count=1, frames=2, image_size=28)
    with torch.inference_mode():
        out = model(scene_images(scenes[0]))
    assert out["depth"].shape == (1, 2, 28, 28, 1)


def test_scenes_follow_the_model_size_and_seeding_is_repeatable():
    model = build_vggt("tiny", img_size=56, intermediate_layer_idx=(0, 1, 2, 3))
    scenes = course_scenes("test", count=2, frames=2, model=model)
    assert scenes[0]["images"].shape == (2, 3, 56, 56)
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="MODEL must be"):
        load_course_model("vggt-7b")


def test_quiet_native_stderr_silences_file_descriptor_2_only_inside(capfd):
    import os

    from qvggt_lib.course import quiet_native_stderr

    with quiet_native_stderr():
        os.write(2, b"profiler_start\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
