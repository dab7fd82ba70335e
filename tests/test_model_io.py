"""`t4a_jax.models.save` / `load`: round trip of config and every parameter."""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t4a_jax.models.io import load, save


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    widths: tuple[int, ...] = (3, 5, 2)
    dtype: type = jnp.float32
    note: str = "toy"


class Toy(nnx.Module):
    def __init__(self, config: ToyConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.layers = nnx.List([nnx.Linear(a, b, dtype=config.dtype, rngs=rngs)
                                for a, b in zip(config.widths[:-1], config.widths[1:])])
        self.table = nnx.Variable(jnp.arange(4.0))   # a non-trainable buffer

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_round_trip(tmp_path):
    model = Toy(ToyConfig(widths=(4, 6, 3)), rngs=nnx.Rngs(1))
    model.table[...] = jnp.array([9.0, 8.0, 7.0, 6.0])
    save(model, tmp_path / "ckpt")
    restored = load(tmp_path / "ckpt")
    assert isinstance(restored, Toy)
    assert restored.config == model.config
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_array_equal(restored(x), model(x))
    np.testing.assert_array_equal(restored.table[...], model.table[...])
    # Saving again over an existing checkpoint replaces it and leaves no temp dirs.
    save(Toy(ToyConfig(widths=(4, 2)), rngs=nnx.Rngs(2)), tmp_path / "ckpt")
    assert load(tmp_path / "ckpt").config.widths == (4, 2)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_bad_checkpoints_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(tmp_path)
    save(Toy(ToyConfig(), rngs=nnx.Rngs(0)), tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["config"]["bogus"] = 1
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bogus"):
        load(tmp_path / "c")
    meta["config"].pop("bogus")
    meta["model"] = "t4a_jax.models.nothing:Nope"
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot import"):
        load(tmp_path / "c")
