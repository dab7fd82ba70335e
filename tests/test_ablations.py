"""Table 4's ablations (`t4a_jax.evaluate.ablations`): each variant is its base config
with exactly its one switch, and the stage2 ablation runs end to end on the tiny set
(three real Stage Two fits, their renders scored, the table written)."""

from __future__ import annotations

import json
import os

import pytest

from configs.evaluate import get_config
from t4a_jax.evaluate import ablations, job
from t4a_jax.reconstruction.asset import FEATURES_FILE, INFO_FILE


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_each_variant_is_its_base_with_one_switch(stage):
    config = get_config()
    base = _flat(config.ablation[stage].to_dict())
    for variant, switches in ablations.VARIANTS[stage].items():
        changed = _flat(ablations.variant_config(config.ablation[stage], switches).to_dict())
        differences = {k for k in base if base[k] != changed[k]}
        assert differences == set(switches), variant
        for key, value in switches.items():
            assert changed[key] == value
    assert ablations.slug("w/o Corrs. Loss") == "wo_corrs_loss"
    with pytest.raises(ValueError, match="switch 'loss.no_such_weight': no config key"):
        ablations.variant_config(config.ablation.stage1, {"loss.no_such_weight": 0.0})
    with pytest.raises(ValueError, match="config key 'features'"):
        ablations.variant_config(config.ablation.stage2, {"features": 3})


def test_bad_ablation_settings_are_named(tmp_path):
    config = get_config("tiny")
    config.ablations = "stage3"
    with pytest.raises(ValueError, match="config.ablations='stage3'"):
        job.run(config, str(tmp_path))
    config = get_config()
    config.update(ablations="stage2", weights=str(tmp_path))
    with pytest.raises(ValueError, match="config.ablation.clips is required"):
        ablations.run_ablation("stage2", config, str(tmp_path))


@pytest.mark.slow
def test_stage2_ablation_fits_each_variant_and_tabulates_it(tmp_path):
    config = get_config("tiny")
    config.update(ablations="stage2")
    workdir = str(tmp_path)
    prepared = job.prepare_tiny(config, workdir)
    prepared.ablation.clips = prepared.ablation.clips.split(",")[0]     # one object
    metrics = job.run(prepared, workdir)
    rows = metrics["ablations"]["stage2"]
    assert list(rows) == list(ablations.VARIANTS["stage2"])
    for row in rows.values():
        assert 0 < row["i2v"] <= 1 and 0 < row["temporal_flickering"] <= 1
    # Each variant's fit is the one its switch asks for.
    fits = {v: os.path.join(workdir, "ablations", "stage2", ablations.slug(v), "fit", "asset")
            for v in rows}
    info = {v: json.load(open(os.path.join(f, INFO_FILE))) for v, f in fits.items()}
    assert info["Ours full"]["motion"]["sh_terms"] == 2
    assert info["w/o 4D SH"]["motion"]["sh_terms"] == 1
    assert os.path.isfile(os.path.join(fits["Ours full"], FEATURES_FILE))
    assert not os.path.isfile(os.path.join(fits["w/o Di. Feat"], FEATURES_FILE))
    text = open(os.path.join(workdir, "tables.md")).read()
    section = text.split("## Table 4: ablations, stage2", 1)[1]
    assert f"| w/o 4D SH | {rows['w/o 4D SH']['i2v']:.4f} |" in section
    assert "| Ours full (paper) | 0.9400 |" in section
