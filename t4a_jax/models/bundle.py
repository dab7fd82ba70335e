"""The Stage One models as one `ModelBundle`, read from and written to a directory.

    bundle = load_bundle("ckpt/mvvdm")                            # everything sampling needs
    bundle = load_bundle("ckpt/mvvdm", require=("unet", "vae"))   # the rest only if present
    save_bundle(bundle, "workdir/models")

The directory holds one component per subdirectory, the layout that
`python -m tools.convert_weights SRC OUT --kind pipeline` writes and the training program
exports to `WORKDIR/models/`:

    unet/           `t4a_jax.models.save` checkpoints (config.json + Orbax params/)
    vae/
    text_encoder/
    tokenizer/      vocab.json, merges.txt (+ special_tokens_map.json, tokenizer_config.json)
    image_encoder/  the IP-Adapter's CLIP image tower (for a U-Net with `use_ip_adapter`)
    sampling.json   optional `SamplingDefaults`: the image size, views, frames and sampler
                    settings the models were trained with (the training program writes
                    it; `python -m t4a_jax.sample` takes its defaults from it)

A `--kind mvvdm` conversion writes one U-Net checkpoint: place it as `unet/` beside the
pipeline's other components (and a `--kind clip-vision` conversion as `image_encoder/`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from t4a_jax.atomic import atomic_directory, atomic_write
from t4a_jax.models.clip import CLIPTextModel, CLIPVisionModelWithProjection
from t4a_jax.models.io import abstract_model, load, save
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.unet import UNet
from t4a_jax.models.vae import AutoencoderKL

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "image_encoder")
SAMPLING_FILE = "sampling.json"


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """How a bundle's models were trained, so sampling can default to it: square frames of
    `image_size` px, `num_views` views x `num_frames` frames (the condition included), and
    the sampler settings of the training's sample videos."""

    image_size: int
    num_views: int
    num_frames: int
    num_steps: int
    guidance_scale: float


@dataclasses.dataclass
class ModelBundle:
    """The Stage One models; a component that was neither required nor present is None.
    `sampling` holds the `SamplingDefaults` of a trained bundle (None for converted
    weights)."""

    unet: UNet | None = None
    vae: AutoencoderKL | None = None
    text_encoder: CLIPTextModel | None = None
    tokenizer: CLIPTokenizer | None = None
    image_encoder: CLIPVisionModelWithProjection | None = None
    sampling: SamplingDefaults | None = None

    def text_states(self, prompts: Sequence[str]) -> jax.Array:
        """The text encoder's last hidden states [len(prompts), L, D] of the prompts
        (zeros [len, 77, the U-Net's cross-attention width] without a text encoder)."""
        if self.text_encoder is None:
            return jnp.zeros((len(prompts), 77, self.unet.config.cross_attention_dim))
        return self.text_encoder(jnp.asarray(self.tokenizer(list(prompts))))

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens `prompt` has (no start/end tokens); 0 without a tokenizer."""
        return 0 if self.tokenizer is None else len(self.tokenizer.encode(prompt))


def with_compute(unet: UNet, *, dtype: Any = None, remat: bool | None = None) -> UNet:
    """`unet` rebuilt with another compute `dtype` and/or `remat` setting (None keeps the
    current one); the parameters (float32) are the same arrays, not copies."""
    changes = {k: v for k, v in (("dtype", dtype), ("remat", remat)) if v is not None}
    if not changes:
        return unet
    config = dataclasses.replace(unet.config, **changes)
    graphdef, _ = nnx.split(abstract_model(lambda rngs: UNet(config, rngs=rngs)))
    return nnx.merge(graphdef, nnx.state(unet))


def load_bundle(path: str | os.PathLike, *,
                require: Sequence[str] = COMPONENTS,
                mesh: Mesh | None = None, dtype: Any = None,
                remat: bool | None = None) -> ModelBundle:
    """The models of the directory `path` (layout in the module docstring).

    Args:
      path: the directory.
      require: the components that must be there (default: all, what sampling needs);
        the others are loaded when present. "image_encoder" is required only when the
        U-Net has `use_ip_adapter` (no other U-Net uses it). `text_encoder` and
        `tokenizer` are loaded together or not at all.
      mesh: read every model's parameters straight into their shards on this mesh
        (`t4a_jax.models.load`).
      dtype, remat: the U-Net's compute dtype and rematerialisation (`with_compute`;
        None keeps what the checkpoint says).

    The tokenizer's `max_length` is the text encoder's `max_position_embeddings` (77 for
    SD1.5).

    Raises:
      FileNotFoundError naming `path` and the component when a required one (or the
        partner of a present text encoder / tokenizer) is missing.
      ValueError for an unknown name in `require`, components that do not fit
        together (latent channels, text width, image embedding width, vocabulary size),
        or a malformed `sampling.json`.
    """
    path = os.path.abspath(os.fspath(path))
    unknown = sorted(set(require) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"load_bundle: unknown components {unknown} in require (known: "
                         f"{', '.join(COMPONENTS)})")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such model directory (expected the output of "
                                f"python -m tools.convert_weights or save_bundle)")
    present = {name for name in COMPONENTS if os.path.isdir(os.path.join(path, name))}

    def check(names: Sequence[str], why: str) -> None:
        missing = [name for name in names if name not in present]
        if missing:
            raise FileNotFoundError(
                f"{path}: no {', '.join(n + '/' for n in missing)} ({why}; found: "
                f"{', '.join(sorted(present)) or 'nothing'})")

    check([name for name in require if name != "image_encoder"], "required")
    if present & {"text_encoder", "tokenizer"}:
        check(["text_encoder", "tokenizer"], "the text encoder and tokenizer go together")
    bundle = ModelBundle(sampling=_load_sampling(os.path.join(path, SAMPLING_FILE)))
    if "unet" in present:
        unet = load(os.path.join(path, "unet"), mesh=mesh)
        if not isinstance(unet, UNet):
            raise ValueError(f"{path}/unet holds a {type(unet).__name__}, not a UNet")
        bundle.unet = with_compute(unet, dtype=dtype, remat=remat)
        if "image_encoder" in require and bundle.unet.config.use_ip_adapter:
            check(["image_encoder"], "required by the U-Net's use_ip_adapter")
    for name in ("vae", "text_encoder", "image_encoder"):
        if name in present:
            setattr(bundle, name, load(os.path.join(path, name), mesh=mesh))
    if "tokenizer" in present:
        bundle.tokenizer = CLIPTokenizer.from_folder(
            os.path.join(path, "tokenizer"),
            max_length=bundle.text_encoder.config.max_position_embeddings)
    _check_compatible(bundle, path)
    return bundle


def _check_compatible(bundle: ModelBundle, path: str) -> None:
    """Raise ValueError, naming `path` and the sizes, when loaded components disagree."""
    unet, vae, text_encoder = bundle.unet, bundle.vae, bundle.text_encoder
    image_encoder, tokenizer = bundle.image_encoder, bundle.tokenizer
    problems = []
    if unet is not None and vae is not None and (
            vae.config.latent_channels != unet.config.in_channels):
        problems.append(f"vae/ has {vae.config.latent_channels} latent channels, unet/ "
                        f"takes {unet.config.in_channels}")
    if unet is not None and text_encoder is not None and (
            text_encoder.config.hidden_size != unet.config.cross_attention_dim):
        problems.append(f"text_encoder/ makes tokens of {text_encoder.config.hidden_size}, "
                        f"unet/ has cross_attention_dim {unet.config.cross_attention_dim}")
    if unet is not None and image_encoder is not None and unet.config.use_ip_adapter and (
            image_encoder.config.projection_dim != unet.config.image_embed_dim):
        problems.append(f"image_encoder/ makes embeddings of "
                        f"{image_encoder.config.projection_dim}, unet/ has image_embed_dim "
                        f"{unet.config.image_embed_dim}")
    if tokenizer is not None and max(tokenizer.vocab.values()) >= (
            text_encoder.config.vocab_size):
        problems.append(f"tokenizer/ has ids up to {max(tokenizer.vocab.values())}, "
                        f"text_encoder/ a vocabulary of {text_encoder.config.vocab_size}")
    if problems:
        raise ValueError(f"{path}: the components do not fit together: "
                         f"{'; '.join(problems)}")


def _load_sampling(path: str) -> SamplingDefaults | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            values = json.load(f)
        return SamplingDefaults(**values)
    except (json.JSONDecodeError, TypeError) as e:
        names = [field.name for field in dataclasses.fields(SamplingDefaults)]
        raise ValueError(f"{path}: expected a JSON object with the keys {names} ({e})") from e


def save_bundle(bundle: ModelBundle, path: str | os.PathLike) -> None:
    """Write every component of `bundle` that is not None into the directory `path`
    (layout in the module docstring), atomically as a whole: the new directory is
    complete before it replaces whatever was at `path`."""
    with atomic_directory(path) as tmp:
        for name in COMPONENTS:
            component = getattr(bundle, name)
            if isinstance(component, CLIPTokenizer):
                component.save(os.path.join(tmp, name))
            elif component is not None:
                save(component, os.path.join(tmp, name))
        if bundle.sampling is not None:
            with atomic_write(os.path.join(tmp, SAMPLING_FILE)) as f:
                f.write(json.dumps(dataclasses.asdict(bundle.sampling), indent=1).encode())
