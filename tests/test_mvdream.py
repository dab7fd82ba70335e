"""MVDream / Animate3D / IP-Adapter modules against float64 NumPy references written from
the formulas, diffusers' IP-Adapter processor and image projection, and the converter."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection as TorchImageProjection
from diffusers.models.embeddings import SinusoidalPositionalEmbedding as TorchSinusoidal
from flax import nnx

from t4a_jax.models.attention import Attention
from t4a_jax.models.mvdream import (PROCESSOR_RENAMES, CameraEmbedding,
                                    ImageProjection, IPAdapterCrossAttention,
                                    MultiViewI2VAttention, SpatioTemporalAttention,
                                    sine_position_encoding_2d, sinusoidal_table)
from tools.convert_weights.core import ConversionError, convert_state_dict
from torch_utils import numpy_state_dict, randomize_

RNG = np.random.default_rng(0)
C, HEADS, HEAD_DIM = 16, 2, 8
ATOL = 1e-5


def _randomize(module: nnx.Module, seed: int, std: float = 0.3, skip: str = "") -> None:
    """Fill every nnx.Param (except paths containing `skip`) with N(0, std)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    for path, leaf in nnx.to_flat_state(state):
        if skip and skip in ".".join(map(str, path)):
            continue
        leaf[...] = rng.normal(scale=std, size=leaf[...].shape).astype(np.float32)
    nnx.update(module, state)


def _w(linear: nnx.Linear) -> tuple[np.ndarray, np.ndarray | None]:
    kernel = np.asarray(linear.kernel[...], np.float64)
    bias = None if linear.bias is None else np.asarray(linear.bias[...], np.float64)
    return kernel, bias


def _lin(x: np.ndarray, linear: nnx.Linear) -> np.ndarray:
    kernel, bias = _w(linear)
    return x @ kernel + (0.0 if bias is None else bias)


def _np_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) v per head; q [Lq, C], k, v [Lk, C] -> [Lq, C]."""
    d = q.shape[-1] // heads
    qh, kh, vh = (a.reshape(a.shape[0], heads, d) for a in (q, k, v))
    scores = np.einsum("qhd,khd->hqk", qh, kh) / math.sqrt(d)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, vh).reshape(q.shape[0], -1)


# ----------------------------------------------------------------------------- camera

def test_camera_embedding_is_linear_silu_linear():
    m = CameraEmbedding(16, 24, rngs=nnx.Rngs(0))
    _randomize(m, 1)
    cam = RNG.normal(size=(3, 16))
    h = _lin(cam, m.linear_1)
    expected = _lin(h / (1 + np.exp(-h)), m.linear_2)
    np.testing.assert_allclose(m(cam.astype(np.float32)), expected, atol=ATOL)


# ------------------------------------------------------------------ multi-view + I2V

def _np_multiview_i2v(m: MultiViewI2VAttention, x: np.ndarray, b: int, n: int, f: int,
                      i2v: bool) -> np.ndarray:
    """Loop over objects and frames: each frame attends over all views' tokens; the I2V
    query attends over frame 0 of all views of the same object."""
    l = x.shape[1]
    xs = x.astype(np.float64).reshape(b, n, f, l, -1)
    out = np.zeros_like(xs)
    for ob in range(b):
        frame0 = xs[ob, :, 0].reshape(n * l, -1)
        for fr in range(f):
            tokens = xs[ob, :, fr].reshape(n * l, -1)
            h = _np_attention(_lin(tokens, m.to_q), _lin(tokens, m.to_k),
                              _lin(tokens, m.to_v), HEADS)
            if i2v:
                h = h + _lin(_np_attention(_lin(tokens, m.to_q_i2v), _lin(frame0, m.to_k),
                                           _lin(frame0, m.to_v), HEADS), m.to_out_i2v)
            out[ob, :, fr] = _lin(h, m.to_out[0]).reshape(n, l, -1)
    return out.reshape(b * n * f, l, -1)


def test_multiview_i2v_attention_matches_reference():
    b, n, f, l = 2, 3, 3, 4
    x = RNG.normal(size=(b * n * f, l, C)).astype(np.float32)
    m = MultiViewI2VAttention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(m.to_q_i2v.kernel[...], m.to_q.kernel[...])
    assert not np.any(m.to_out_i2v.kernel[...]) and not np.any(m.to_out_i2v.bias[...])

    plain = m(x, num_views=n, num_frames=f, i2v=False)
    np.testing.assert_allclose(plain, _np_multiview_i2v(m, x, b, n, f, False), atol=ATOL)
    # The zero-initialised to_out_i2v makes the adapter a no-op at initialisation.
    np.testing.assert_allclose(m(x, num_views=n, num_frames=f), plain, atol=1e-6)

    _randomize(m, 2)
    out = m(x, num_views=n, num_frames=f)
    np.testing.assert_allclose(out, _np_multiview_i2v(m, x, b, n, f, True), atol=ATOL)
    assert np.abs(out - m(x, num_views=n, num_frames=f, i2v=False)).max() > 1e-2


def test_single_view_without_i2v_is_plain_self_attention():
    x = RNG.normal(size=(3, 5, C)).astype(np.float32)
    m = MultiViewI2VAttention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(0))
    _randomize(m, 3)
    plain = Attention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(1))
    for name in ("to_q", "to_k", "to_v"):
        getattr(plain, name).kernel[...] = getattr(m, name).kernel[...]
    plain.to_out[0].kernel[...] = m.to_out[0].kernel[...]
    plain.to_out[0].bias[...] = m.to_out[0].bias[...]
    np.testing.assert_allclose(m(x, num_views=1, num_frames=1, i2v=False), plain(x),
                               atol=1e-6)

    # Built without the adapter (MVDream alone): no i2v parameters, the same attention.
    mv = MultiViewI2VAttention(C, heads=HEADS, head_dim=HEAD_DIM, use_i2v=False,
                               rngs=nnx.Rngs(0))
    names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(mv, nnx.Param))}
    assert names == {"to_q.kernel", "to_k.kernel", "to_v.kernel", "to_out.0.kernel",
                     "to_out.0.bias"}
    nnx.update(mv, nnx.state(plain, nnx.Param))
    y = RNG.normal(size=(2 * 3, 5, C)).astype(np.float32)             # 2 views, 3 frames
    np.testing.assert_allclose(mv(y, num_views=2, num_frames=3),
                               m(y, num_views=2, num_frames=3, i2v=False), atol=1e-6)
    with pytest.raises(ValueError, match="use_i2v=False"):
        mv(y, num_views=2, num_frames=3, i2v=True)


# ------------------------------------------------------------------------ IP-Adapter

@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_ip_adapter_cross_attention_matches_diffusers(scale):
    cross = 12
    t = TorchAttention(C, cross_attention_dim=cross, heads=HEADS, dim_head=HEAD_DIM,
                       processor=IPAdapterAttnProcessor2_0(C, cross, num_tokens=(4,),
                                                           scale=scale))
    m = IPAdapterCrossAttention(C, heads=HEADS, head_dim=HEAD_DIM, cross_dim=cross,
                                ip_scale=scale, rngs=nnx.Rngs(0))
    sd = numpy_state_dict(randomize_(t))
    assert {"processor.to_k_ip.0.weight", "processor.to_v_ip.0.weight"} <= set(sd)
    convert_state_dict(sd, m, renames=PROCESSOR_RENAMES)

    x = RNG.normal(size=(2, 6, C)).astype(np.float32)
    text = RNG.normal(size=(2, 7, cross)).astype(np.float32)
    ip = RNG.normal(size=(2, 4, cross)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x),
                     encoder_hidden_states=(torch.from_numpy(text), [torch.from_numpy(ip)]))
    np.testing.assert_allclose(m(x, text, ip), expected.numpy(), atol=1e-4)

    # Without image tokens it is the plain text cross-attention.
    plain = Attention(C, heads=HEADS, head_dim=HEAD_DIM, cross_dim=cross, rngs=nnx.Rngs(1))
    convert_state_dict({k: v for k, v in sd.items() if "_ip" not in k}, plain)
    np.testing.assert_allclose(m(x, text), plain(x, text), atol=1e-6)


def test_image_projection_matches_diffusers():
    t = randomize_(TorchImageProjection(image_embed_dim=24, cross_attention_dim=12,
                                        num_image_text_embeds=4))
    m = ImageProjection(24, 12, 4, rngs=nnx.Rngs(0))
    convert_state_dict(numpy_state_dict(t), m, renames=[(r"^image_embeds\.", "proj.")])
    emb = RNG.normal(size=(3, 24)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(emb)).numpy()
    out = m(emb)
    assert out.shape == (3, 4, 12)
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ------------------------------------------------------------ spatio-temporal (motion)

def test_position_tables_match_their_formulas():
    table = sinusoidal_table(32, C)
    for p in range(32):
        for i in range(C // 2):
            angle = p / 10000 ** (2 * i / C)
            assert table[p, 2 * i] == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[p, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-12)
    np.testing.assert_allclose(table[None], TorchSinusoidal(C, 32).pe.numpy(), atol=1e-6)

    h, w, feats = 3, 5, C // 2
    enc = sine_position_encoding_2d(h, w, C)
    assert enc.shape == (h, w, C)
    for i in range(h):
        for j in range(w):
            for k in range(feats):
                dim_t = 10000 ** (2 * (k // 2) / feats)
                fn = math.sin if k % 2 == 0 else math.cos
                y = (i + 1) / (h + 1e-6) * 2 * math.pi
                x = (j + 1) / (w + 1e-6) * 2 * math.pi
                assert enc[i, j, k] == pytest.approx(fn(y / dim_t), abs=1e-12)
                assert enc[i, j, feats + k] == pytest.approx(fn(x / dim_t), abs=1e-12)


def _softmax(scores: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    p = np.exp(scores - scores.max(axis=axes, keepdims=True))
    return p / p.sum(axis=axes, keepdims=True)


def _np_spatiotemporal(m: SpatioTemporalAttention, x: np.ndarray, n: int) -> np.ndarray:
    """Einsum reference on x viewed as [b, n, f, h, w, c]; heads split as (z, d)."""
    bn, f, h, w, c = x.shape
    xs = x.astype(np.float64).reshape(bn // n, n, f, h, w, c)
    heads = lambda a: a.reshape(*a.shape[:-1], HEADS, HEAD_DIM)
    merge = lambda a: a.reshape(*a.shape[:-2], HEADS * HEAD_DIM)
    scale = 1 / math.sqrt(HEAD_DIM)

    # Temporal: the sinusoidal table added per frame; for each (b, n, h, w) the f frames
    # attend to each other.
    t = xs + m.time_pos_embed.table[0, :f, None, None, :]
    q, k, v = (heads(_lin(t, lin)) for lin in (m.to_q, m.to_k, m.to_v))
    p = _softmax(np.einsum("bnfhwzd,bnghwzd->bnhwzfg", q, k) * scale, (-1,))
    temporal = _lin(merge(np.einsum("bnhwzfg,bnghwzd->bnfhwzd", p, v)), m.to_out[0])

    # Spatial: the 2-D encoding added on every view's h x w grid; for each (b, f) the
    # n*h*w positions of all views attend to each other.
    s = xs + sine_position_encoding_2d(h, w, c)
    q, k, v = (heads(_lin(s, lin)) for lin in (m.to_q_sp, m.to_k_sp, m.to_v_sp))
    p = _softmax(np.einsum("bnfijzd,bmfklzd->bfznijmkl", q, k) * scale, (-3, -2, -1))
    spatial = _lin(merge(np.einsum("bfznijmkl,bmfklzd->bnfijzd", p, v)), m.to_out_sp)

    a = 1 / (1 + math.exp(-float(np.asarray(m.alpha_blender.mix_factor[...])[0])))
    return (a * spatial + (1 - a) * temporal).reshape(x.shape)


def test_spatiotemporal_attention_matches_reference():
    b, n, f, h, w = 2, 2, 3, 4, 4
    x = RNG.normal(size=(b * n, f, h, w, C)).astype(np.float32)
    m = SpatioTemporalAttention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(0))
    assert float(m.alpha_blender.mix_factor[...][0]) == 0.0
    _randomize(m, 4, skip="mix_factor")
    out = m(x, num_views=n)
    np.testing.assert_allclose(out, _np_spatiotemporal(m, x, n), atol=ATOL)

    # mix_factor = 0 blends half and half: zeroing to_out_sp leaves 0.5 * temporal.
    zero_sp = SpatioTemporalAttention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(0))
    _randomize(zero_sp, 4, skip="mix_factor")
    zero_sp.to_out_sp.kernel[...] = np.zeros((C, C), np.float32)
    zero_sp.to_out_sp.bias[...] = np.zeros(C, np.float32)
    zero_sp.alpha_blender.mix_factor[...] = np.full(1, 30.0, np.float32)   # all spatial
    np.testing.assert_allclose(zero_sp(x, num_views=n), 0.0, atol=1e-6)
    zero_sp.alpha_blender.mix_factor[...] = np.zeros(1, np.float32)
    m.alpha_blender.mix_factor[...] = np.full(1, -30.0, np.float32)        # all temporal
    np.testing.assert_allclose(zero_sp(x, num_views=n), 0.5 * m(x, num_views=n), atol=1e-6)

    # A learned mix factor, and the module under jax.jit over (graphdef, state).
    m.alpha_blender.mix_factor[...] = np.full(1, 0.7, np.float32)
    graphdef, state = nnx.split(m)
    jitted = jax.jit(lambda st, v: nnx.merge(graphdef, st)(v, num_views=n))
    np.testing.assert_allclose(jitted(state, x), _np_spatiotemporal(m, x, n), atol=ATOL)


def test_time_table_is_a_constant_not_state():
    m = SpatioTemporalAttention(C, heads=HEADS, head_dim=HEAD_DIM, rngs=nnx.Rngs(0))
    state = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(m))}
    assert "alpha_blender.mix_factor" in state
    assert not [name for name in state if "time_pos_embed" in name]
    assert m.time_pos_embed.table.shape == (1, 32, C)
    # Built abstractly (as converters do), the table is still there.
    abstract = nnx.eval_shape(lambda: SpatioTemporalAttention(C, heads=HEADS,
                                                               head_dim=HEAD_DIM,
                                                               rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(abstract.time_pos_embed.table, m.time_pos_embed.table)


# ------------------------------------------------------------------------- conversion

# Key names exactly as in reference/animate3d_full_unet_keys.json and
# animate3d_motion_modules_keys.json, relative to the module; shapes at C = 16.
ATTN1_KEYS = {"to_q.weight": (C, C), "to_k.weight": (C, C), "to_v.weight": (C, C),
              "to_out.0.weight": (C, C), "to_out.0.bias": (C,),
              "processor.to_q_i2v.weight": (C, C), "processor.to_out_i2v.weight": (C, C),
              "processor.to_out_i2v.bias": (C,)}
ATTN2_KEYS = {"to_q.weight": (C, C), "to_k.weight": (C, 12), "to_v.weight": (C, 12),
              "to_out.0.weight": (C, C), "to_out.0.bias": (C,),
              "processor.to_k_ip.0.weight": (C, 12), "processor.to_v_ip.0.weight": (C, 12)}
MOTION_KEYS = {"to_q.weight": (C, C), "to_k.weight": (C, C), "to_v.weight": (C, C),
               "to_out.0.weight": (C, C), "to_out.0.bias": (C,),
               "processor.to_q_sp.weight": (C, C), "processor.to_k_sp.weight": (C, C),
               "processor.to_v_sp.weight": (C, C), "processor.to_out_sp.weight": (C, C),
               "processor.to_out_sp.bias": (C,), "processor.time_pos_embed.pe": (1, 32, C),
               "processor.alpha_blender.mix_factor": (1,)}
CAMERA_KEYS = {"linear_1.weight": (24, 16), "linear_1.bias": (24,),
               "linear_2.weight": (24, 24), "linear_2.bias": (24,)}
IMAGE_PROJ_KEYS = {"proj.weight": (4 * 12, 20), "proj.bias": (4 * 12,),
                   "norm.weight": (12,), "norm.bias": (12,)}


def _synthetic(keys: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Random tensors under the reference names; the position table holds what a real
    checkpoint holds (diffusers' `SinusoidalPositionalEmbedding` buffer)."""
    return {k: (TorchSinusoidal(shape[-1], shape[1]).pe.numpy() if k.endswith(".pe")
                else RNG.normal(size=shape).astype(np.float32)) for k, shape in keys.items()}


@pytest.mark.parametrize("keys, build", [
    (ATTN1_KEYS, lambda: MultiViewI2VAttention(C, heads=HEADS, head_dim=HEAD_DIM,
                                               rngs=nnx.Rngs(0))),
    (ATTN2_KEYS, lambda: IPAdapterCrossAttention(C, heads=HEADS, head_dim=HEAD_DIM,
                                                 cross_dim=12, rngs=nnx.Rngs(0))),
    (MOTION_KEYS, lambda: SpatioTemporalAttention(C, heads=HEADS, head_dim=HEAD_DIM,
                                                  rngs=nnx.Rngs(0))),
    (CAMERA_KEYS, lambda: CameraEmbedding(16, 24, rngs=nnx.Rngs(0))),
    (IMAGE_PROJ_KEYS, lambda: ImageProjection(20, 12, 4, rngs=nnx.Rngs(0))),
], ids=["attn1", "attn2", "motion", "camera", "image_proj"])
def test_reference_key_names_convert(keys, build):
    module = build()
    sd = _synthetic(keys)
    pe_keys = [k for k in sd if k.endswith("time_pos_embed.pe")]
    if pe_keys:
        # The position table is a constant, not a parameter: left in, it is an unused
        # key; a converter checks it against the module's table and takes it out.
        with pytest.raises(ConversionError, match="time_pos_embed.pe"):
            convert_state_dict(sd, module, renames=PROCESSOR_RENAMES)
    for key in pe_keys:
        np.testing.assert_allclose(sd.pop(key), module.time_pos_embed.table, atol=1e-6)
    report = convert_state_dict(sd, module, renames=PROCESSOR_RENAMES)
    assert set(report.consumed) == set(sd)
    params = dict(nnx.to_flat_state(nnx.state(module, nnx.Param)))
    for key, path in report.consumed.items():
        value = params[tuple(int(p) if p.isdigit() else p for p in path.split("."))][...]
        expected = sd[key].T if path.endswith("kernel") else sd[key]
        np.testing.assert_array_equal(value, expected)
