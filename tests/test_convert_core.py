"""The generic conversion loop and the shared blocks against diffusers' PyTorch modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.resnet import Downsample2D as TorchDownsample
from diffusers.models.resnet import ResnetBlock2D as TorchResnet
from diffusers.models.resnet import Upsample2D as TorchUpsample
from flax import nnx

from t4a_jax.models.attention import Attention
from t4a_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from tools.convert_weights.core import ConversionError, convert_state_dict
from torch_utils import nchw, nhwc, numpy_state_dict, randomize_

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 8, 8, 32)).astype(np.float32)


def _converted(torch_module, nnx_module):
    convert_state_dict(numpy_state_dict(randomize_(torch_module)), nnx_module)
    return torch_module, nnx_module


def test_resnet_block_matches_diffusers():
    temb = RNG.normal(size=(2, 16)).astype(np.float32)
    t, m = _converted(TorchResnet(in_channels=32, out_channels=64, temb_channels=16, groups=8,
                                  eps=1e-6),
                      ResnetBlock2D(32, 64, temb_channels=16, groups=8, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(m(X, temb), nhwc(t(nchw(X), torch.from_numpy(temb))),
                               atol=1e-4)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_downsample_matches_diffusers(asymmetric):
    t, m = _converted(TorchDownsample(32, use_conv=True, padding=0 if asymmetric else 1),
                      Downsample2D(32, asymmetric_pad=asymmetric, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(m(X), nhwc(t(nchw(X))), atol=1e-4)


def test_upsample_matches_diffusers():
    t, m = _converted(TorchUpsample(32, use_conv=True), Upsample2D(32, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(m(X), nhwc(t(nchw(X))), atol=1e-4)


def test_cross_attention_matches_diffusers():
    x = RNG.normal(size=(2, 10, 64)).astype(np.float32)
    c = RNG.normal(size=(2, 7, 48)).astype(np.float32)
    t, m = _converted(TorchAttention(64, cross_attention_dim=48, heads=4, dim_head=16),
                      Attention(64, heads=4, head_dim=16, cross_dim=48, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(m(x, c), t(torch.from_numpy(x), torch.from_numpy(c)).detach(),
                               atol=1e-4)


def test_conversion_errors_name_every_bad_key():
    module = ResnetBlock2D(8, 16, temb_channels=None, groups=4, rngs=nnx.Rngs(0))
    good = numpy_state_dict(TorchResnet(in_channels=8, out_channels=16, temb_channels=None,
                                        groups=4))
    bad = dict(good)
    bad["conv1.bias"] = np.zeros(3, np.float32)          # wrong shape
    bad["extra.weight"] = np.zeros(2, np.float32)        # unused
    del bad["norm2.weight"]                              # missing
    with pytest.raises(ConversionError) as info:
        convert_state_dict(bad, module, source="bad.ckpt")
    message = str(info.value)
    for fragment in ("bad.ckpt", "conv1.bias (3,)", "extra.weight", "norm2.scale"):
        assert fragment in message
    # An explicit allow-list lets a missing parameter keep its initial value.
    del bad["conv1.bias"], bad["extra.weight"]
    bad["conv1.bias"] = good["conv1.bias"]
    before = np.asarray(module.norm2.scale[...]).copy()
    report = convert_state_dict(bad, module, allow_missing=[r"^norm2\.scale$"])
    assert report.allowed_missing == ["norm2.scale"]
    np.testing.assert_array_equal(module.norm2.scale[...], before)
    np.testing.assert_array_equal(module.conv1.bias[...], good["conv1.bias"])
