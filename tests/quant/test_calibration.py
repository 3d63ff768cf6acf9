"""Facts about calibration: layer statistics, block inputs and layouts, block reconstruction."""

import pytest
import torch

from qvggt_lib.model import build_vggt
from qvggt_lib.quant import reconstruction
from qvggt_lib.quant.api import quantize
from qvggt_lib.quant.configs import QuantVGGTConfig
from qvggt_lib.quant.hadamard import RandomHadamard
from qvggt_lib.quant.linear import QuantLinear
from qvggt_lib.quant.observers import check_calibration, collect_linear_statistics
from qvggt_lib.quant.reconstruction import (
    BlockInputs,
    calibrate_block,
    calibrate_blockwise,
    capture_block_inputs,
    run_block,
)
from qvggt_lib.quant.sampling import SamplingConfig, calibration_scenes
from qvggt_lib.quant.targets import block_chains, quantizable_linears, target_blocks

FRAMES, SIZE = 3, 28  # 2 x 2 patches + 5 special tokens: P = 9 tokens per frame


def small_model(outliers: bool = False):
    model = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0).eval()
    if outliers:  # full-strength residual branches and a few huge LayerNorm channels
        with torch.no_grad():
            for _, _, block in target_blocks(model, ("frame_blocks", "global_blocks")):
                block.ls1.gamma.fill_(1.0)
                block.ls2.gamma.fill_(1.0)
                block.norm1.weight[:4] = 30.0
                block.norm2.weight[-4:] = 30.0
    return model


def scenes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(FRAMES, 3, SIZE, SIZE, generator=g) for _ in range(n)]


def test_statistics_match_the_layer_inputs():
    model, calib = small_model(), scenes(2)
    names = ["aggregator.frame_blocks.1.mlp.fc2", "aggregator.global_blocks.0.attn.qkv"]
    inputs = {name: [] for name in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: inputs[n].append(a[0].reshape(-1, a[0].shape[-1]))) for n in names]
    with torch.no_grad():
        for scene in calib:
            model.aggregator(scene[None])
    for handle in handles:
        handle.remove()
    rotations = {names[0]: RandomHadamard(512, seed=3)}
    stats = collect_linear_statistics(model, calib, names, rotations, need_hessian=True,
                                      progress=False)
    for name in names:
        x = torch.cat(inputs[name])
        assert stats[name].num_tokens == x.shape[0] == 2 * FRAMES * 9
        assert torch.allclose(stats[name].act_absmax, x.abs().amax(0))
        space = rotations[name].rotate(x) if name in rotations else x
        assert torch.allclose(stats[name].hessian, 2 * space.T @ space / len(x), atol=1e-5)
    xr = rotations[names[0]].rotate(torch.cat(inputs[names[0]]))
    assert torch.allclose(stats[names[0]].rotated_absmax, xr.abs().amax(0))
    assert stats[names[1]].rotated_absmax is None


def test_block_inputs_have_the_frame_and_global_layouts():
    model, calib = small_model(), scenes(2)
    blocks = ["aggregator.frame_blocks.1", "aggregator.global_blocks.1"]
    frame, glob = capture_block_inputs(model, blocks, calib, "aggregator").values()
    assert [tuple(a[0].shape) for a in frame] == [(FRAMES, 9, 128)] * 2
    assert [tuple(a[1].shape) for a in frame] == [(FRAMES, 9, 2)] * 2
    assert [tuple(a[0].shape) for a in glob] == [(1, FRAMES * 9, 128)] * 2
    (trunk,) = capture_block_inputs(model, ["camera_head.trunk.0"], calib, "camera_head").values()
    assert [tuple(a[0].shape) for a in trunk] == [(1, FRAMES, 256)] * 8  # 4 iterations


def test_propagated_block_inputs_equal_the_real_ones():
    model, calib = small_model(outliers=True), scenes(2)
    for chain in block_chains(model, ("patch_embed", "frame_blocks", "camera_head")):
        names = [name for name, _, _ in chain]
        real = capture_block_inputs(model, names, calib, chain[0][1].runs_in)
        inputs = BlockInputs(model, chain, calib)
        for name, _, block in chain:
            assert len(inputs.args) == len(real[name]) > 0
            for got, expected in zip(inputs.args, real[name]):
                assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected)), name
            inputs.advance(run_block(block, inputs.args))


def test_calibration_feeds_global_blocks_the_global_layout():
    fp, calib = small_model(), scenes(2)
    q = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, calibrate=False, progress=False)
    seen = {"frame": set(), "global": set()}
    hooks = [q.aggregator.frame_blocks[1].register_forward_pre_hook(
                 lambda m, a: seen["frame"].add(tuple(a[0].shape))),
             q.aggregator.global_blocks[1].register_forward_pre_hook(
                 lambda m, a: seen["global"].add(tuple(a[0].shape)))]
    calibrate_blockwise(fp, q, calib, QuantVGGTConfig(epochs=1), progress=False)
    for hook in hooks:
        hook.remove()
    assert seen == {"frame": {(FRAMES, 9, 128)}, "global": {(1, FRAMES * 9, 128)}}


def test_block_reconstruction_reduces_the_block_output_error():
    fp, calib = small_model(outliers=True), scenes(3)
    config = QuantVGGTConfig(bits="w4a4", epochs=4)
    q = quantize(fp, config, calibration=calib, progress=False)
    blocks = q.quant_report.blocks
    assert [b["name"] for b in blocks] == [
        "aggregator.frame_blocks.0", "aggregator.global_blocks.0",
        "aggregator.frame_blocks.1", "aggregator.global_blocks.1"]
    assert all(b["steps"] == 4 * 3 for b in blocks)
    # a block whose training ended worse keeps its initial state (after == before), so per block
    # only <= is guaranteed; which blocks improve depends on rounding flips during training
    assert all(b["mse_after"] <= b["mse_before"] for b in blocks)
    assert any(b["mse_after"] < b["mse_before"] for b in blocks)
    assert sum(b["mse_after"] for b in blocks) < sum(b["mse_before"] for b in blocks)


def test_calibration_changes_only_smoothing_and_clips():
    fp, calib = small_model(outliers=True), scenes(2)
    start = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, calibrate=False,
                     progress=False)
    flags = {name: p.requires_grad for name, p in start.named_parameters()}
    tuned = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, epochs=2, progress=False)
    changed = {name for name, p in start.named_parameters()
               if not torch.equal(p, tuned.get_submodule("").get_parameter(name))}
    assert changed and all(n.endswith(("smooth", "clip.logit")) for n in changed)
    assert {n: p.requires_grad for n, p in tuned.named_parameters()} == flags
    assert not tuned.training and all(not m.training for m in tuned.modules())


def test_quantized_inputs_option_and_camera_trunk_calibration():
    fp, calib = small_model(outliers=True), scenes(2)
    q = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, epochs=1, input_from="quantized",
                 scopes=("frame_blocks", "global_blocks", "camera_head"), progress=False)
    names = [b["name"] for b in q.quant_report.blocks]
    assert names[-2:] == ["camera_head.trunk.0", "camera_head.trunk.1"]
    assert q.quant_report.blocks[-1]["num_samples"] == 2 * 4
    assert isinstance(q.camera_head.trunk[1].mlp.fc2, QuantLinear)


def test_calibrate_block_without_learnables_only_switches_to_eval():
    model = small_model()
    block = model.aggregator.frame_blocks[0].train()
    assert calibrate_block(block, [], [], epochs=3) == 0 and not block.training


def test_check_calibration_rejects_malformed_scenes():
    model = small_model()
    with pytest.raises(ValueError, match="empty"):
        check_calibration([], model)
    with pytest.raises(ValueError, match=r"scene 1 must be one scene \[S, 3, H, W\]"):
        check_calibration([torch.rand(2, 3, 28, 28), torch.rand(3, 28, 28)], model)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        check_calibration([torch.rand(2, 3, 30, 30)], model)
    assert len(check_calibration(torch.rand(2, 2, 3, 28, 28), model)) == 2


def test_calibration_scenes_pick_from_the_pool():
    model = small_model()
    pool = scenes(6, seed=1)
    picked = calibration_scenes(model, SamplingConfig("random", num_samples=3, seed=0), pool=pool)
    assert len(picked) == 3 and all(any(p is q for q in pool) for p in picked)
    again = calibration_scenes(model, SamplingConfig("random", num_samples=3, seed=0), pool=pool)
    assert [id(p) for p in picked] == [id(p) for p in again]
    nfds = calibration_scenes(model, SamplingConfig("nfds", num_samples=2, num_clusters=2), pool=pool)
    assert len(nfds) == 2


def test_sampling_config_refuses_bad_picks_before_any_forward():
    with pytest.raises(ValueError, match="unknown method"):
        SamplingConfig("kmeans")
    with pytest.raises(ValueError, match="num_samples must be in"):
        SamplingConfig(num_samples=50, pool_size=40)
    with pytest.raises(ValueError, match="num_clusters must be a positive integer"):
        SamplingConfig(num_clusters=0)


def test_quantizable_linears_follow_execution_order():
    model = small_model()
    names = list(quantizable_linears(model))
    assert len(names) == 2 * 2 * 4
    frame0 = "aggregator.frame_blocks.0."
    assert names[:5] == [frame0 + "attn.qkv", frame0 + "attn.proj", frame0 + "mlp.fc1",
                         frame0 + "mlp.fc2", "aggregator.global_blocks.0.attn.qkv"]
    everything = quantizable_linears(model, ("patch_embed", "frame_blocks", "global_blocks",
                                             "camera_head"))
    assert len(everything) == (3 + 2 + 2 + 2) * 4
    assert next(iter(everything)).startswith("aggregator.patch_embed.blocks.0")
    assert list(everything)[-1] == "camera_head.trunk.1.mlp.fc2"


def test_a_block_that_calibration_makes_worse_keeps_its_initial_parameters(monkeypatch):
    def bad_training(block, inputs, targets, epochs, *args):  # a run that ends far off
        with torch.no_grad():
            smooth, clips = reconstruction._learnable(block)
            for p in smooth + clips:
                p.mul_(-3.0).add_(1.0)
        block.train().eval()  # refresh the cached weights, as calibrate_block does
        return epochs * len(inputs)

    fp, calib = small_model(outliers=True), scenes(2)
    start = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, calibrate=False, progress=False)
    monkeypatch.setattr(reconstruction, "calibrate_block", bad_training)
    worse = quantize(fp, "quantvggt", bits="w4a4", calibration=calib, epochs=1, progress=False,
                     weight_rounding="rtn")  # GPTQ would round the restored weights anew
    blocks = worse.quant_report.blocks
    assert len(blocks) == 4 and all(b["restored"] and b["mse_after"] == b["mse_before"] for b in blocks)
    for name, module in start.named_modules():
        if isinstance(module, QuantLinear):
            other = worse.get_submodule(name)
            for key, value in module.state_dict().items():
                assert torch.equal(value, other.state_dict()[key]), (name, key)


@pytest.mark.parametrize("weight_rounding", ["rtn", "gptq"])
def test_an_interrupted_calibration_resumes_after_the_last_finished_block(tmp_path, monkeypatch,
                                                                          weight_rounding):
    """quantize(resume_file=...) records each calibrated block; a second run with the same file
    trains only the blocks that were missing and gives the same model, bit for bit (GPTQ weights
    included: they are recomputed from the restored block)."""
    fp, calib = small_model(outliers=True), scenes(2)
    config = QuantVGGTConfig(bits="w4a4", epochs=1, weight_rounding=weight_rounding)
    uninterrupted = quantize(fp, config, calibration=calib, progress=False)
    progress_file = tmp_path / "run.calibration-progress"
    real_calibrate_block, calls = reconstruction.calibrate_block, []

    def interrupted_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the third block
        calls.append(1)
        return real_calibrate_block(*args, **kwargs)

    monkeypatch.setattr(reconstruction, "calibrate_block", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        quantize(fp, config, calibration=calib, progress=False, resume_file=progress_file)
    assert progress_file.exists()

    def counted(*args, **kwargs):
        calls.append(1)
        return real_calibrate_block(*args, **kwargs)

    monkeypatch.setattr(reconstruction, "calibrate_block", counted)
    calls.clear()
    resumed = quantize(fp, config, calibration=calib, progress=False, resume_file=progress_file)
    assert len(calls) == 2  # 4 blocks: 2 restored from the file, 2 trained now
    def untimed(report):
        return [{k: v for k, v in block.items() if "seconds" not in k} for block in report.blocks]

    assert untimed(resumed.quant_report) == untimed(uninterrupted.quant_report)
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ValueError, match="belongs to another run"):  # other settings, same file
        quantize(fp, QuantVGGTConfig(bits="w4a4", epochs=1, seed=1), calibration=calib, progress=False,
                 resume_file=progress_file)
    with pytest.raises(ValueError, match="QuantVGGT"):
        quantize(fp, "rtn", bits="w4a4", resume_file=progress_file)


def test_gptq_rounding_after_reconstruction_lowers_the_block_error_on_the_grid(tmp_path):
    """weight_rounding="gptq" starts from the same reconstructed s and clips, then rounds with GPTQ
    where that lowers the block's output MSE; the weights stay on the layer's grid (so they
    deploy), and save/load keeps them."""
    from qvggt_lib.quant.serialization import load_quantized, save_quantized

    fp, calib = small_model(outliers=True), scenes(2)
    config = QuantVGGTConfig(bits="w4a4", epochs=1, input_from="fp")  # blocks fitted alike
    rtn = quantize(fp, config, calibration=calib, progress=False, weight_rounding="rtn")
    gptq = quantize(fp, config, calibration=calib, progress=False, weight_rounding="gptq")
    kept = 0
    for r_rtn, r_gptq in zip(rtn.quant_report.blocks, gptq.quant_report.blocks, strict=True):
        assert r_gptq["mse_after"] == r_rtn["mse_after"] and r_rtn["mse_gptq"] is None
        assert r_gptq["gptq_kept"] == (r_gptq["mse_gptq"] < r_gptq["mse_after"])
        kept += r_gptq["gptq_kept"]
        for name, layer in gptq.get_submodule(r_gptq["name"]).named_modules():
            if isinstance(layer, QuantLinear):
                assert layer.weight_grid_error() < 1e-3, name
                other = rtn.get_submodule(r_gptq["name"]).get_submodule(name).quantized_weight
                assert torch.equal(layer.quantized_weight, other) != r_gptq["gptq_kept"], name
    assert kept >= 1
    x = calib[0][None]
    loaded = load_quantized(save_quantized(gptq, tmp_path / "gptq.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(x)["world_points"], gptq(x)["world_points"])


def test_the_paper_recipe_is_named_and_selectable():
    paper = QuantVGGTConfig.paper(bits="w8a8")
    assert (paper.epochs, paper.clip_init_logit, paper.weight_rounding) == (15, 4.0, "rtn")
    assert paper.bits == "w8a8" and QuantVGGTConfig.paper(epochs=2).epochs == 2
    with pytest.raises(ValueError, match="weight_rounding"):
        QuantVGGTConfig(weight_rounding="gptq-ish")
    # a file written before weight_rounding existed was rounded to nearest
    from qvggt_lib.quant.serialization import config_from_dict, config_to_dict

    old = config_to_dict(QuantVGGTConfig.paper())
    del old["fields"]["weight_rounding"]
    assert config_from_dict(old) == QuantVGGTConfig.paper()


def test_clips_start_by_the_bits_of_each_side():
    """By default an 8-bit side starts unclipped (sigmoid(10)), a narrower one at the paper's
    sigmoid(4); a number given applies to both sides."""
    from qvggt_lib.quant.quantizer import CLIP_INIT_LOGIT, NO_CLIP_LOGIT

    assert QuantVGGTConfig(bits="w8a8").clip_init_logits() == (NO_CLIP_LOGIT, NO_CLIP_LOGIT)
    assert QuantVGGTConfig(bits="w4a8").clip_init_logits() == (CLIP_INIT_LOGIT, NO_CLIP_LOGIT)
    assert QuantVGGTConfig(bits="w4a4", clip_init_logit=6.0).clip_init_logits() == (6.0, 6.0)
    q = quantize(small_model(), QuantVGGTConfig(bits="w4a8", calibrate=False), calibration=scenes(1),
                 progress=False)
    layer = next(m for m in q.modules() if isinstance(m, QuantLinear))
    assert torch.all(layer.weight_quantizer.clip.logit == CLIP_INIT_LOGIT)
    assert layer.act_quantizer.clip.logit.item() == NO_CLIP_LOGIT
    with pytest.raises(ValueError, match="clip_init_logit"):
        QuantVGGTConfig(clip_init_logit="high")
