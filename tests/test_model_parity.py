"""Numerical parity with the official VGGT forward, without the upstream package.

Each ``ref_*`` function below is a small re-statement of one upstream computation
(facebookresearch/vggt: layers/rope.py, layers/attention.py, layers/vision_transformer.py,
models/aggregator.py, heads/utils.py, heads/dpt_head.py, heads/head_act.py,
heads/camera_head.py, utils/load_fn.py), written in upstream's own control flow and
operation order, and run on the weights of our modules. Where the ops are the same the
results must be bit-identical, so most checks use ``torch.equal``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from qvggt_lib.io import load_and_preprocess_images
from qvggt_lib.model import build_vggt
from qvggt_lib.model.heads import ResidualConvUnit, uv_position_embedding
from qvggt_lib.model.layers import RotaryPositionEmbedding2D


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_vggt("tiny", seed=0).eval()
    # Non-trivial LayerScale / norm affine / special tokens, so that every term matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or "norm" in name or "token" in name or "pos_embed" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


# --------------------------------------------------------------------------- references


def ref_rope(tokens, positions, base=100.0):
    """layers/rope.py RotaryPositionEmbedding2D.forward."""
    dim = tokens.size(-1) // 2
    seq_len = int(positions.max()) + 1
    exponents = torch.arange(0, dim, 2, device=tokens.device).float() / dim
    inv_freq = 1.0 / (base**exponents)
    pos = torch.arange(seq_len, device=tokens.device, dtype=inv_freq.dtype)
    angles = torch.einsum("i,j->ij", pos, inv_freq).to(tokens.dtype)
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos().to(tokens.dtype), angles.sin().to(tokens.dtype)

    def rot(x):
        d = x.shape[-1]
        return torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)

    def one(x, p):
        c = F.embedding(p, cos)[:, None, :, :]
        s = F.embedding(p, sin)[:, None, :, :]
        return x * c + rot(x) * s

    v, h = tokens.chunk(2, dim=-1)
    return torch.cat((one(v, positions[..., 0]), one(h, positions[..., 1])), dim=-1)


def ref_block(block, x, pos=None, rope=False):
    """layers/block.py Block.forward (eval) with layers/attention.py Attention.forward."""
    attn = block.attn
    B, N, C = x.shape
    y = block.norm1(x)
    qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, attn.num_heads, C // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope:
        q, k = ref_rope(q, pos), ref_rope(k, pos)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    y = F.linear(y.transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias)
    x = x + y * block.ls1.gamma
    y = block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
    return x + y * block.ls2.gamma


def ref_dino(vit, x):
    """vision_transformer.py prepare_tokens_with_masks + forward_features -> x_norm_patchtokens."""
    B, nc, w, h = x.shape  # upstream's (swapped) naming: w is the height
    x = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    previous_dtype = x.dtype
    npatch, N = x.shape[1] - 1, vit.pos_embed.shape[1] - 1
    if npatch == N and w == h:
        pe = vit.pos_embed
    else:
        pos_embed = vit.pos_embed.float()
        M = int(math.sqrt(N))
        w0, h0 = w // vit.patch_size, h // vit.patch_size
        patch = F.interpolate(
            pos_embed[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2), mode="bicubic", antialias=True, size=(w0, h0)
        )
        assert (w0, h0) == patch.shape[-2:]
        patch = patch.permute(0, 2, 3, 1).view(1, -1, x.shape[-1])
        pe = torch.cat((pos_embed[:, 0].unsqueeze(0), patch), dim=1).to(previous_dtype)
    x = x + pe
    R = vit.register_tokens.shape[1]
    x = torch.cat((x[:, :1], vit.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
    for blk in vit.blocks:
        x = ref_block(blk, x)
    return vit.norm(x)[:, R + 1 :]


def ref_aggregator(agg, images):
    """models/aggregator.py Aggregator.forward (aa_block_size 1, order frame then global)."""
    B, S, C_in, H, W = images.shape
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    images = ((images - mean) / std).view(B * S, C_in, H, W)
    patch_tokens = ref_dino(agg.patch_embed, images)

    def slice_expand_and_flatten(t):
        query = t[:, 0:1, ...].expand(B, 1, *t.shape[2:])
        others = t[:, 1:, ...].expand(B, S - 1, *t.shape[2:])
        return torch.cat([query, others], dim=1).view(B * S, *t.shape[2:])

    tokens = torch.cat(
        [slice_expand_and_flatten(agg.camera_token), slice_expand_and_flatten(agg.register_token), patch_tokens], dim=1
    )
    p = agg.patch_size
    pos = torch.cartesian_prod(torch.arange(H // p), torch.arange(W // p)).view(1, -1, 2).expand(B * S, -1, 2).clone()
    pos = pos + 1
    pos = torch.cat([torch.zeros(B * S, agg.patch_start_idx, 2).to(pos.dtype), pos], dim=1)
    _, P, C = tokens.shape
    outputs = []
    for fb, gb in zip(agg.frame_blocks, agg.global_blocks):
        tokens = ref_block(fb, tokens.view(B, S, P, C).view(B * S, P, C), pos.view(B * S, P, 2), rope=True)
        frame = tokens.view(B, S, P, C)
        tokens = ref_block(gb, tokens.view(B, S, P, C).view(B, S * P, C), pos.view(B, S, P, 2).view(B, S * P, 2), rope=True)
        outputs.append(torch.cat([frame, tokens.view(B, S, P, C)], dim=-1))
    return outputs


def ref_uv_pos_embed(x, W, H, ratio=0.1):
    """heads/dpt_head.py _apply_pos_embed with heads/utils.py create_uv_grid / position_grid_to_embed."""
    pw, ph = x.shape[-1], x.shape[-2]
    ar = W / H
    diag = (ar**2 + 1.0) ** 0.5
    sx, sy = ar / diag, 1.0 / diag
    xs = torch.linspace(-sx * (pw - 1) / pw, sx * (pw - 1) / pw, steps=pw, dtype=x.dtype)
    ys = torch.linspace(-sy * (ph - 1) / ph, sy * (ph - 1) / ph, steps=ph, dtype=x.dtype)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack((uu, vv), dim=-1)  # [ph, pw, 2]

    def sincos(d, pos):
        omega = torch.arange(d // 2, dtype=torch.double)
        omega /= d / 2.0
        omega = 1.0 / 100**omega
        out = torch.einsum("m,d->md", pos.reshape(-1), omega)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()

    C = x.shape[1]
    flat = grid.reshape(-1, 2)
    emb = torch.cat([sincos(C // 2, flat[:, 0]), sincos(C // 2, flat[:, 1])], dim=-1).view(ph, pw, C)
    emb = emb * ratio
    return x + emb.permute(2, 0, 1)[None].expand(x.shape[0], -1, -1, -1)


def ref_rcu(rcu, x):
    """dpt_head.py ResidualConvUnit with the shared nn.ReLU(inplace=True)."""
    act = torch.nn.ReLU(inplace=True)
    out = act(x)
    out = rcu.conv1(out)
    out = act(out)
    out = rcu.conv2(out)
    return torch.add(out, x)  # x was rectified in place by the first activation


def ref_fusion(block, *xs, size=None):
    output = xs[0]
    if block.has_residual:
        output = torch.add(output, ref_rcu(block.resConfUnit1, xs[1]))
    output = ref_rcu(block.resConfUnit2, output)
    if size is None:  # custom_interpolate turns scale_factor=2 into an explicit size
        size = (int(output.shape[-2] * 2), int(output.shape[-1] * 2))
    output = F.interpolate(output, size=size, mode="bilinear", align_corners=True)
    return block.out_conv(output)


def ref_dpt_impl(head, tokens_list, images, psi, start=None, end=None):
    """dpt_head.py DPTHead._forward_impl + activate_head (expp1)."""
    if start is not None:
        images = images[:, start:end]
    B, S, _, H, W = images.shape
    ph, pw = H // head.patch_size, W // head.patch_size
    out = []
    for i, layer_idx in enumerate(head.intermediate_layer_idx):
        x = tokens_list[layer_idx][:, :, psi:]
        if start is not None:
            x = x[:, start:end]
        x = x.reshape(B * S, -1, x.shape[-1])  # upstream .view (same values)
        x = head.norm(x)
        x = x.permute(0, 2, 1).reshape((x.shape[0], x.shape[-1], ph, pw))
        x = head.projects[i](x)
        x = ref_uv_pos_embed(x, W, H)
        out.append(head.resize_layers[i](x))
    s = head.scratch
    l1, l2, l3, l4 = s.layer1_rn(out[0]), s.layer2_rn(out[1]), s.layer3_rn(out[2]), s.layer4_rn(out[3])
    o = ref_fusion(s.refinenet4, l4, size=l3.shape[2:])
    o = ref_fusion(s.refinenet3, o, l3, size=l2.shape[2:])
    o = ref_fusion(s.refinenet2, o, l2, size=l1.shape[2:])
    o = ref_fusion(s.refinenet1, o, l1)
    o = s.output_conv1(o)
    o = F.interpolate(o, size=(ph * head.patch_size, pw * head.patch_size), mode="bilinear", align_corners=True)
    o = ref_uv_pos_embed(o, W, H)
    o = s.output_conv2(o)
    fmap = o.permute(0, 2, 3, 1)
    xyz, conf = fmap[:, :, :, :-1], fmap[:, :, :, -1]
    if head.activation == "exp":
        pts = torch.exp(xyz)
    else:
        pts = torch.sign(xyz) * torch.expm1(torch.abs(xyz))
    conf = 1 + conf.exp()
    return pts.view(B, S, *pts.shape[1:]), conf.view(B, S, *conf.shape[1:])


def ref_dpt(head, tokens_list, images, psi, frames_chunk_size=8):
    S = images.shape[1]
    if frames_chunk_size is None or frames_chunk_size >= S:
        return ref_dpt_impl(head, tokens_list, images, psi)
    parts = [
        ref_dpt_impl(head, tokens_list, images, psi, s, min(s + frames_chunk_size, S))
        for s in range(0, S, frames_chunk_size)
    ]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def ref_camera(head, tokens_list, num_iterations=4):
    """heads/camera_head.py CameraHead.forward / trunk_fn with activate_pose(linear, linear, relu)."""
    pose_tokens = head.token_norm(tokens_list[-1][:, :, 0])
    B, S, C = pose_tokens.shape
    pred, preds = None, []
    for _ in range(num_iterations):
        if pred is None:
            module_input = head.embed_pose(head.empty_pose_tokens.expand(B, S, -1))
        else:
            pred = pred.detach()
            module_input = head.embed_pose(pred)
        shift, scale, gate = head.poseLN_modulation(module_input).chunk(3, dim=-1)
        modulated = gate * (head.adaln_norm(pose_tokens) * (1 + scale) + shift)
        modulated = modulated + pose_tokens
        for blk in head.trunk:
            modulated = ref_block(blk, modulated)
        delta = head.pose_branch(head.trunk_norm(modulated))
        pred = delta if pred is None else pred + delta
        preds.append(torch.cat([pred[..., :3], pred[..., 3:7], F.relu(pred[..., 7:])], dim=-1))
    return preds


# --------------------------------------------------------------------------- tests


def test_rope_matches_reference_bit_exactly():
    torch.manual_seed(1)
    rope = RotaryPositionEmbedding2D(100.0)
    x = torch.randn(3, 4, 17, 32)
    pos = torch.randint(0, 9, (3, 17, 2))
    assert torch.equal(rope(x, pos), ref_rope(x, pos))


@pytest.mark.parametrize("C,h,w,W,H", [(32, 8, 8, 112, 112), (128, 6, 10, 140, 84), (64, 24, 40, 140, 84)])
def test_dpt_uv_pos_embed_matches_reference_bit_exactly(C, h, w, W, H):
    x = torch.randn(2, C, h, w)
    assert torch.equal(uv_position_embedding(x, W, H), ref_uv_pos_embed(x, W, H))


def test_residual_conv_unit_uses_rectified_skip():
    torch.manual_seed(2)
    rcu = ResidualConvUnit(8)
    x = torch.randn(2, 8, 5, 7)
    expected = ref_rcu(rcu, x.clone())
    assert torch.equal(rcu(x), expected)
    assert not torch.allclose(expected, rcu.conv2(F.relu(rcu.conv1(F.relu(x)))) + x)  # x + ... would be wrong


@pytest.mark.parametrize("shape", [(1, 2, 3, 112, 112), (2, 2, 3, 84, 140)])
def test_aggregator_matches_reference(tiny, shape):
    torch.manual_seed(3)
    images = torch.rand(*shape)
    with torch.no_grad():
        ours, psi = tiny.aggregator(images)
        ref = ref_aggregator(tiny.aggregator, images)
    assert psi == 5 and len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_camera_head_matches_reference(tiny):
    torch.manual_seed(4)
    tokens = [torch.randn(2, 3, 69, 256) for _ in range(tiny.config.depth)]
    with torch.no_grad():
        ours = tiny.camera_head(tokens)
        ref = ref_camera(tiny.camera_head, tokens)
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("head_name", ["depth_head", "point_head"])
@pytest.mark.parametrize("chunk", [8, 2])
def test_dpt_heads_match_reference(tiny, head_name, chunk):
    torch.manual_seed(5)
    B, S, H, W = 1, 3, 84, 140
    images = torch.rand(B, S, 3, H, W)
    P = 5 + (H // 14) * (W // 14)
    tokens = [torch.randn(B, S, P, 256) for _ in range(tiny.config.depth)]
    head = getattr(tiny, head_name)
    with torch.no_grad():
        ours = head(tokens, images, 5, frames_chunk_size=chunk)
        ref = ref_dpt(head, tokens, images, 5, frames_chunk_size=chunk)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_full_model_matches_reference_composition(tiny):
    torch.manual_seed(6)
    images = torch.rand(1, 2, 3, 84, 140)
    with torch.no_grad():
        out = tiny(images)
        tokens = ref_aggregator(tiny.aggregator, images)
        pose = ref_camera(tiny.camera_head, tokens)
        depth, depth_conf = ref_dpt(tiny.depth_head, tokens, images, 5)
        pts, pts_conf = ref_dpt(tiny.point_head, tokens, images, 5)
    exact = dict(rtol=0, atol=0)
    torch.testing.assert_close(out["pose_enc"], pose[-1], **exact)
    torch.testing.assert_close(out["depth"], depth, **exact)
    torch.testing.assert_close(out["depth_conf"], depth_conf, **exact)
    torch.testing.assert_close(out["world_points"], pts, **exact)
    torch.testing.assert_close(out["world_points_conf"], pts_conf, **exact)


def ref_target_size(w, h, mode, target=518):
    """utils/load_fn.py: new (width, height) before crop/pad, in upstream's float expression order."""
    if mode == "pad" and not w >= h:
        return round(w * (target / h) / 14) * 14, target
    return target, round(h * (target / w) / 14) * 14


@pytest.mark.parametrize(
    "w,h,mode",
    [(222, 219, "crop"), (222, 207, "crop"), (640, 480, "crop"), (219, 222, "pad"), (480, 640, "pad"), (54, 135, "crop")],
)
def test_load_and_preprocess_sizes_round_like_upstream(w, h, mode):
    img = Image.fromarray((torch.rand(h, w, 3) * 255).to(torch.uint8).numpy())
    new_w, new_h = ref_target_size(w, h, mode)
    out = load_and_preprocess_images([img], mode=mode)
    if mode == "crop":
        assert out.shape == (1, 3, min(new_h, 518), 518)
    else:
        assert out.shape == (1, 3, 518, 518)
        inner = out[0, :, :, (518 - new_w) // 2 : (518 - new_w) // 2 + new_w]
        assert not torch.all(inner == 1.0)
    # pixels equal PIL's bicubic resize / 255 (torchvision ToTensor)
    resized = torch.from_numpy(np.array(img.resize((new_w, new_h), Image.Resampling.BICUBIC)))
    resized = resized.permute(2, 0, 1).float().div(255)
    if mode == "crop":
        top = (new_h - 518) // 2 if new_h > 518 else 0
        torch.testing.assert_close(out[0], resized[:, top : top + min(new_h, 518)], rtol=0, atol=0)
    else:
        left = (518 - new_w) // 2
        torch.testing.assert_close(out[0, :, :, left : left + new_w], resized, rtol=0, atol=0)
