"""`chunked_attention` (query blocks, recomputing custom VJP) against a float64 NumPy
softmax-attention and against JAX autodiff of the plain formula; and `attend`'s choice
of kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t4a_jax.models import attention
from t4a_jax.models.attention import attend, chunked_attention


def _numpy_attention(q, k, v):
    """float64 softmax(q k^T / sqrt(D)) v on [N, L, H, D] arrays."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("nhqk,nkhd->nqhd", weights, v)


def _plain(q, k, v):
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(q.shape[-1])
    return jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("lq, lk, dv, chunk", [(64, 64, 8, 16), (37, 21, 8, 16),
                                               (10, 50, 5, 64)])
def test_forward_matches_numpy(lq, lk, dv, chunk):
    rng = np.random.default_rng(lq + lk)
    q = rng.normal(size=(3, lq, 2, 8)).astype(np.float32) * 2
    k = rng.normal(size=(3, lk, 2, 8)).astype(np.float32) * 2
    v = rng.normal(size=(3, lk, 2, dv)).astype(np.float32)
    out = jax.jit(chunked_attention, static_argnums=3)(q, k, v, chunk)
    assert out.shape == (3, lq, 2, dv)
    np.testing.assert_allclose(np.asarray(out), _numpy_attention(q, k, v), atol=1e-5)


def test_gradients_match_autodiff_in_float64():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, n, 2, 4)) for n in (37, 29, 29))
    cotangent = rng.normal(size=(2, 37, 2, 4))
    with jax.enable_x64(True):
        q, k, v, cotangent = (jnp.asarray(x, jnp.float64) for x in (q, k, v, cotangent))
        loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * cotangent)
        ours = jax.grad(loss(lambda q, k, v: chunked_attention(q, k, v, 8)),
                        argnums=(0, 1, 2))(q, k, v)
        reference = jax.grad(loss(_plain), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", ours, reference):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12,
                                   err_msg=f"d{name}")


def test_bfloat16_inputs_keep_dtype_and_accuracy():
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 40, 2, 8)).astype(np.float32) for _ in range(3))
    out = chunked_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), chunk=16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), _numpy_attention(q, k, v),
                               atol=3e-2)


def test_attend_picks_chunked_for_long_sequences_on_cpu(monkeypatch):
    calls = []
    original = attention.chunked_attention
    monkeypatch.setattr(attention, "chunked_attention",
                        lambda *a, **kw: calls.append(a[0].shape) or original(*a, **kw))
    rng = np.random.default_rng(2)
    short = rng.normal(size=(2, 16, 8)).astype(np.float32)
    long = rng.normal(size=(1, 512, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(attend(short, short, short, 2)),
                               _numpy_attention(*(short.reshape(2, 16, 2, 4),) * 3)
                               .reshape(2, 16, 8), atol=1e-5)
    assert calls == []
    out = attend(long, long, long, 2)
    assert calls == [(1, 512, 2, 4)]
    np.testing.assert_allclose(np.asarray(out), _numpy_attention(
        *(long.reshape(1, 512, 2, 4),) * 3).reshape(1, 512, 8), atol=1e-5)
    attend(long, long, long, 2, implementation="xla")
    assert len(calls) == 1
