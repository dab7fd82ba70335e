"""Full-size dry run of the MV-VDM conversion (a script, not a test: ~6 GB and about a
minute of CPU):

    python -m tools.convert_weights.check_full_size

Builds synthetic checkpoints with the exact names and shapes of the released ones —
`animate3d_motion_modules.ckpt` (the 888 tensors of
`reference/animate3d_motion_modules_keys.json`, zeros, the sinusoid in the position
tables), the MVDream SD1.5 U-Net (the rest of `reference/animate3d_full_unet_keys.json`
without the IP-Adapter: SD1.5 + `camera_embedding`) and `ip-adapter_sd15.bin` (its
nested layout, shapes from the same reference) — converts them with
`animate3d.convert_animate3d` into `configs/unet.py:mvvdm` (built abstractly, no random
initialisation) and prints the parameter counts. Any missing, unused or misshapen key
fails the conversion with a `ConversionError` naming it.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from t4a_jax.config_files import get_config
from t4a_jax.models.transformer import sinusoidal_table
from t4a_jax.models.unet import trainable_filter
from t4a_jax.models.unet_config import UNetConfig
from tools.convert_weights.animate3d import convert_animate3d
from tools.convert_weights.ip_adapter import cross_attention_names

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference"
_IP_PROJ = "encoder_hid_proj.image_projection_layers.0."


def _zeros(shape) -> np.ndarray:
    """A read-only float32 zero tensor that takes no memory."""
    return np.broadcast_to(np.float32(0), tuple(shape))


def synthetic_checkpoints(config: UNetConfig) -> tuple[dict, dict, dict]:
    """(MVDream U-Net, Animate3D motion checkpoint, IP-Adapter) at the reference shapes."""
    motion_keys = json.loads((REFERENCE / "animate3d_motion_modules_keys.json").read_text())
    full_keys = json.loads((REFERENCE / "animate3d_full_unet_keys.json").read_text())
    motion = {k: (sinusoidal_table(shape[1], shape[2])[None].astype(np.float32)
                  if k.endswith(".pe") else _zeros(shape)) for k, shape in motion_keys.items()}
    ip_keys = {k for k in full_keys if k.startswith(_IP_PROJ) or "_ip." in k}
    base = {k: _zeros(shape) for k, shape in full_keys.items()
            if k not in motion_keys and k not in ip_keys}
    image_proj = {f"{'proj' if layer == 'image_embeds' else layer}.{leaf}":
                  _zeros(full_keys[f"{_IP_PROJ}{layer}.{leaf}"])
                  for layer in ("image_embeds", "norm") for leaf in ("weight", "bias")}
    attention = {f"{2 * m + 1}.{proj}.weight":
                 _zeros(full_keys[f"{name}.processor.{proj}.0.weight"])
                 for m, name in enumerate(cross_attention_names(config))
                 for proj in ("to_k_ip", "to_v_ip")}
    return base, motion, {"image_proj": image_proj, "ip_adapter": attention}


def main() -> None:
    config = UNetConfig.from_config_dict(get_config("unet", "mvvdm"))
    base, motion, ip = synthetic_checkpoints(config)
    print(f"synthetic checkpoints: MVDream U-Net {len(base)} tensors, Animate3D motion "
          f"{len(motion)}, IP-Adapter {len(ip['image_proj'])} + {len(ip['ip_adapter'])}")
    start = time.perf_counter()
    unet, report = convert_animate3d(base, motion, ip, config, source="full-size dry run")
    print(report.summary("full-size dry run"))
    count = lambda state: sum(x.size for x in jax.tree.leaves(state))
    total = count(nnx.state(unet, nnx.Param))
    trainable = count(nnx.state(unet, trainable_filter))
    print(f"mvvdm parameters: {total:,} ({4 * total / 2**30:.2f} GiB float32), trainable "
          f"(I2V + motion modules) {trainable:,}, frozen {total - trainable:,}; "
          f"converted in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
