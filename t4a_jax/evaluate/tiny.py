"""The tiny evaluation (`configs/evaluate.py:tiny`): everything `run` needs, made in
WORKDIR/tiny without downloads, then scored like real outputs.

    WORKDIR/tiny/weights/   random-weight networks at test sizes, in the layout of
                            `evaluation.networks` (DINO and CLIP at 32 px, a byte-level
                            tokenizer, a 24-wide aesthetic head); no RAFT / AMT-S
    WORKDIR/tiny/data/      a synthetic multi-view set (`data.synthetic`): method `synthetic`
    WORKDIR/tiny/assets/    per object an unmoved 4D asset (its field at initialisation,
                            `fourd.init_motion_field`): method `unmoved`
    WORKDIR/tiny/stage_one/ (stage2 ablation) a Stage One bundle at random initialisation

Random networks make the numbers meaningless as quality; what the tiny run shows is
that every path runs, caches and tabulates. (An unmoved asset does pin two values:
CLIP-O(img) and CLIP-C are 1 for any network.) Items that exist are kept.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from flax import nnx

from t4a_jax.data import synthetic
from t4a_jax.fourd import HexPlaneConfig, MotionConfig, init_motion_field
from t4a_jax.models import save, save_bundle
from t4a_jax.models.aesthetic import AestheticHead, AestheticHeadConfig
from t4a_jax.models.clip import (CLIPTextConfig, CLIPTextModelWithProjection,
                                 CLIPVisionConfig, CLIPVisionModelWithProjection)
from t4a_jax.models.dino import DINOConfig, DINOViT
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.reconstruction.asset import Asset4D, INFO_FILE, save_asset4d
from t4a_jax.reconstruction.clips import load_clip
from t4a_jax.sharding import make_mesh
from t4a_jax.training.state import random_models

TEXT_LENGTH = 16
EMBED = 24


def write_tiny_weights(folder: str, seed: int = 0) -> str:
    """Random-weight evaluation networks in `folder` (each part kept if present)."""
    tokenizer = CLIPTokenizer.byte_level(max_length=TEXT_LENGTH)
    parts = {
        "dino": lambda rngs: DINOViT(DINOConfig(hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, image_size=32,
                                                patch_size=8), rngs=rngs),
        "clip/vision": lambda rngs: CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, projection_dim=EMBED, hidden_act="quick_gelu"),
            rngs=rngs),
        "clip/text": lambda rngs: CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer.vocab), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TEXT_LENGTH,
            projection_dim=EMBED, eos_token_id=tokenizer.eos_id), rngs=rngs),
        "aesthetic": lambda rngs: AestheticHead(AestheticHeadConfig(EMBED), rngs=rngs),
    }
    for index, (name, build) in enumerate(parts.items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(os.path.join(path, "config.json")):
            save(build(nnx.Rngs(seed + index)), path)
    if not os.path.isfile(os.path.join(folder, "clip", "tokenizer", "vocab.json")):
        tokenizer.save(os.path.join(folder, "clip", "tokenizer"))
    return folder


def write_unmoved_assets(folder: str, clips: list[str], seed: int = 0) -> str:
    """One unmoved 4D asset per clip (its static object, name and prompt) in
    folder/<uid>."""
    motion = MotionConfig(hexplane=HexPlaneConfig(resolutions=((8, 8, 8, 4),), channels=4),
                          width=16, sh_terms=2)
    for index, clip_folder in enumerate(clips):
        clip = load_clip(clip_folder)
        target = os.path.join(folder, clip.name.split("/")[0])
        if os.path.isfile(os.path.join(target, INFO_FILE)):
            continue
        field = init_motion_field(jax.random.key(seed + index), clip.canonical, motion)
        save_asset4d(target, Asset4D(field, clip.canonical, motion, clip.num_frames,
                                     clip.fps, name=clip.name, prompt=clip.prompt))
    return folder


def prepare_tiny(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """`config` with `weights` and `methods` set to the tiny set in WORKDIR/tiny."""
    root = os.path.join(workdir, "tiny")
    s = config.tiny_set
    spec = synthetic.DatasetSpec(views=s.views, frames=s.frames, size=s.size, seed=s.seed,
                                 num_gaussians=s.num_gaussians)
    data = os.path.join(root, "data")
    synthetic.generate_dataset(data, s.objects, spec)
    clips = [os.path.join(data, "videos", item.uid, item.anim)
             for item in synthetic.plan(spec, s.objects, 1)]
    config = ml_collections.ConfigDict(config.to_dict())
    config.weights = write_tiny_weights(os.path.join(root, "weights"), s.seed)
    assets = write_unmoved_assets(os.path.join(root, "assets"), clips, s.seed)
    config.methods = f"synthetic={os.path.join(data, 'videos')},unmoved={assets}"
    if config.ablations:
        config.ablation.clips = config.ablation.clips or ",".join(clips)
    if config.ablations == "stage2" and not config.ablation.models:
        config.ablation.models = write_random_stage_one(os.path.join(root, "stage_one"),
                                                        config.ablation.stage1)
    config.tiny = False
    return config


def write_random_stage_one(folder: str, stage1: ml_collections.ConfigDict) -> str:
    """A Stage One bundle at `stage1`'s random initialisation (its tiny sizes), for the
    stage2 ablation's diffusion features; kept if present."""
    if not os.path.isfile(os.path.join(folder, "unet", "config.json")):
        save_bundle(random_models(stage1, make_mesh(devices=jax.devices()[:1])), folder)
    return folder
