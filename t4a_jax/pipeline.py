"""Stage One inference, a static asset -> a multi-view video (models + render + diffusion).

    images, cameras = render_condition_views(gaussians)           # [V, S, S, 3], [V, 16]
    video = sample_multiview_video(unet, vae, text_encoder, tokenizer, images[None],
                                   cameras[None], ["a dog is running"],
                                   image_encoder=image_encoder, seed=0)
                                                                   # [1, V, F, S, S, 3]

What happens (Animate3D's `AnimateDiffMVI2VPipeline`, FreeInit left out): the
condition renders are VAE-encoded (a sample of the latent Gaussian, scaled) into the
clean latent of frame 0 of every view; the other frames start as Gaussian noise; 25 DDIM
steps (eta 0) with classifier-free guidance 7.5 denoise them, the unconditional branch
taking the empty prompt's text tokens and zero IP-Adapter image embeddings, and frame 0
is reset to the condition latent after every step; every frame is then decoded. The
U-Net sees one timestep for all frames of an object-view, the condition frame included.

All of it (text and image encoders, VAE, the denoising loop, decoding) is one `jax.jit`
program over the `nnx.split` states of the models, compiled once per set of shapes and
settings; the loop is a `lax.fori_loop`, so the U-Net is traced once. `progress=True`
shows a bar over the denoising steps (a host callback per step).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

from t4a_jax.diffusion.ddim import ddim_timesteps, sample_ddim
from t4a_jax.diffusion.schedule import NoiseSchedule, add_noise, make_schedule
from t4a_jax.models.clip import CLIPTextModel, CLIPVisionModelWithProjection
from t4a_jax.models.encoders import frame_latents, image_embeddings, prompt_states
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.unet import UNet
from t4a_jax.models.vae import AutoencoderKL
from t4a_jax.render import camera_vector
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.views import (GREY_BACKGROUND, ORBIT_DISTANCE, ORBIT_FOVY, ViewRender,
                                  ViewRenderer, ViewSet, ring_views)

# Host-side listeners of the compiled sampling loop's step callback (see `_denoised`):
# the program always calls `_denoised`, so showing progress never recompiles it.
_STEP_LISTENERS: list[Callable[[int], None]] = []


def condition_views(gaussians: Gaussians, *, num_views: int = 4, elevation: float = 15.0,
                    azimuth_start: float = 0.0, size: int = 256,
                    distance: float = ORBIT_DISTANCE, fovy: float = ORBIT_FOVY,
                    background: float = GREY_BACKGROUND, tile_capacity: int = 1024,
                    overflow: str = "grow") -> tuple[ViewSet, ViewRender]:
    """The condition views of an asset and their static renders (colours, alphas,
    depths): V = `num_views` views at azimuths `azimuth_start + 360 k / V` (0, 90, 180,
    270 for four), on the Animate3D orbit (+z up, DESIGN: elevation 15, distance 3.0,
    fovy 40, grey background 0.498).

    `tile_capacity` is where the renderer starts; with `overflow="grow"` it renders again
    with more when a tile overflows, with "raise" that is a `render.views.TileOverflowError`
    naming the capacity that would suffice."""
    views = ring_views(num_views, elevation=elevation, size=size,
                       azimuth_start=azimuth_start, distance=distance, fovy=fovy)
    renderer = ViewRenderer(size, size, background=background, tile_capacity=tile_capacity,
                            overflow=overflow)
    return views, renderer(gaussians, views.viewmats, views.Ks)


def render_condition_views(gaussians: Gaussians, **kwargs) -> tuple[jax.Array, jax.Array]:
    """The condition renders of `condition_views` (same keyword arguments) as the
    sampler takes them: (images [V, size, size, 3] in [0, 1], U-Net cameras [V, 16])."""
    views, render = condition_views(gaussians, **kwargs)
    return jnp.asarray(render.colors), camera_vector(views.c2w)


def unet_features(unet: UNet, vae: AutoencoderKL, frames: jax.Array, text_states: jax.Array,
                  *, cameras: jax.Array | None = None, timestep: int = 50, seed: int = 0,
                  capture: Sequence[str]) -> dict[str, jax.Array]:
    """{name: features [V, F, h, w, C]} of one slightly noised U-Net pass over a
    multi-view video (the probe's and Stage Two's feature maps): frames [V, F, S, S, 3]
    in [-1, 1] are VAE-encoded (posterior mean x scaling), noised to `timestep` with
    `seed`'s noise, and denoised once with the prompt's text states [1, L, D] (zero
    IP-Adapter embeddings; `cameras` [V, 16] iff the U-Net takes them), capturing the
    U-Net modules `capture` (`UNet.feature_names`). One jitted program."""
    v, f = frames.shape[:2]
    config = unet.config
    image_embeds = jnp.zeros((v, config.image_embed_dim)) if config.use_ip_adapter else None
    graphdef, state = nnx.split(unet)
    vae_graphdef, vae_state = nnx.split(vae)

    @jax.jit
    def run(state, vae_state, frames, text_states, cameras):
        model, autoencoder = nnx.merge(graphdef, state), nnx.merge(vae_graphdef, vae_state)
        mean, _ = autoencoder.encode(frames.reshape((v * f,) + frames.shape[2:]))
        latents = autoencoder.scale(mean).reshape((v, f) + mean.shape[1:])
        noise = jax.random.normal(jax.random.key(seed), latents.shape)
        t = jnp.full((v,), timestep)
        noisy = add_noise(make_schedule(), latents, noise, t)
        return model(noisy, t, jnp.repeat(text_states, v, axis=0), cameras=cameras,
                     image_embeds=image_embeds, num_views=v, capture=tuple(capture))[1]

    return run(state, vae_state, jnp.asarray(frames), text_states, cameras)


def sample_multiview_video(unet: UNet, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                           tokenizer: CLIPTokenizer, condition_images: jax.Array,
                           cameras: jax.Array | None, prompts: Sequence[str], *,
                           image_encoder: CLIPVisionModelWithProjection | None = None,
                           schedule: NoiseSchedule | None = None,
                           negative_prompt: str = "", num_frames: int = 16,
                           num_steps: int = 25, guidance_scale: float = 7.5,
                           eta: float = 0.0, seed: int = 0, init_strength: float = 1.0,
                           decode_batch_size: int = 16, progress: bool = False) -> jax.Array:
    """Multi-view videos [B, V, F, H, W, 3] in [0, 1] of B objects (see the module
    docstring for the algorithm).

    Args:
      unet, vae, text_encoder, tokenizer: the Stage One models (`t4a_jax.models`).
      condition_images: [B, V, H, W, 3] static renders in [0, 1] (frame 0 of each view);
        H and W multiples of the VAE's times the U-Net's downsampling factor.
      cameras: [B, V, 16] U-Net camera vectors (`render.camera_vector`), or None for a
        U-Net without `use_camera_embedding`.
      prompts: B prompts, one per object.
      image_encoder: the IP-Adapter's CLIP image tower, required iff the U-Net has
        `use_ip_adapter`; it embeds each view's condition render.
      schedule: the noise schedule (default `make_schedule()`, Animate3D's).
      negative_prompt: the unconditional branch's prompt ('' as in Animate3D).
      num_frames: F, the condition frame included.
      num_steps, guidance_scale, eta: DDIM steps, classifier-free guidance scale (1: no
        unconditional branch), DDIM eta.
      seed: the PRNG seed; `jax.random.split(jax.random.key(seed), 3)` gives the keys of
        the initial noise, of the condition latents' VAE sample and of eta's noise.
      init_strength: 1 (Animate3D) starts every frame from Gaussian noise; s < 1 starts
        them from the condition latent noised to the timestep of DDIM step
        round((1 - s) num_steps) and runs the remaining steps (SDEdit): the frames keep
        the condition's layout, which a barely trained model (the tiny demo) cannot
        produce from noise.
      decode_batch_size: frames decoded at a time.
      progress: show a tqdm bar over the denoising steps (and wait for the result).
    """
    config = unet.config
    if isinstance(prompts, str):
        raise TypeError("sample_multiview_video: prompts must be a list of B strings, got a "
                        "single string")
    images = jnp.asarray(condition_images, jnp.float32)
    if images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"sample_multiview_video: condition_images must be [B, V, H, W, 3], "
                         f"got {images.shape}")
    b, v, h, w, _ = images.shape
    if len(prompts) != b:
        raise ValueError(f"sample_multiview_video: {len(prompts)} prompts for {b} objects")
    factor = vae.config.downsample_factor * config.downsample_factor
    if h % factor or w % factor:
        raise ValueError(f"sample_multiview_video: image size {h}x{w} must be a multiple of "
                         f"{factor} (VAE x U-Net downsampling)")
    if vae.config.latent_channels != config.in_channels:
        raise ValueError(f"sample_multiview_video: the VAE has {vae.config.latent_channels} "
                         f"latent channels, the U-Net takes {config.in_channels}")
    if config.use_camera_embedding != (cameras is not None):
        raise ValueError(f"sample_multiview_video: the U-Net has use_camera_embedding="
                         f"{config.use_camera_embedding}, so cameras must be "
                         f"{'[B, V, 16]' if config.use_camera_embedding else 'None'}")
    if cameras is not None and jnp.shape(cameras) != (b, v, 16):
        raise ValueError(f"sample_multiview_video: cameras must be [{b}, {v}, 16], got "
                         f"{jnp.shape(cameras)}")
    if config.use_ip_adapter != (image_encoder is not None):
        raise ValueError(f"sample_multiview_video: the U-Net has use_ip_adapter="
                         f"{config.use_ip_adapter}, so image_encoder is "
                         f"{'required' if config.use_ip_adapter else 'not used'}")
    if num_frames < 2:
        raise ValueError(f"sample_multiview_video: num_frames={num_frames} must be >= 2 "
                         f"(frame 0 is the condition)")
    start_step = num_steps - int(round(init_strength * num_steps))
    if not 0 < init_strength <= 1 or start_step >= num_steps:
        raise ValueError(f"sample_multiview_video: init_strength={init_strength} must be in "
                         f"(0, 1] and leave at least one of the {num_steps} steps")
    models = (unet, vae, text_encoder, image_encoder)
    graphdefs, states = zip(*(nnx.split(m) if m is not None else (None, None)
                              for m in models))
    ids = jnp.asarray(tokenizer(list(prompts) + [negative_prompt]))
    run = functools.partial(
        _generate, graphdefs, states, schedule if schedule is not None else make_schedule(),
        images, None if cameras is None else jnp.asarray(cameras, jnp.float32), ids,
        jnp.float32(guidance_scale), jax.random.key(seed), num_frames=num_frames,
        num_steps=num_steps, guided=guidance_scale != 1.0, eta=eta, start_step=start_step,
        decode_batch_size=decode_batch_size)
    if not progress:
        return run()
    with tqdm(total=num_steps, initial=start_step, desc="denoising", unit="step") as bar:
        def show(index: int) -> None:
            bar.n = index + 1       # absolute, so repeated calls for a step are harmless
            bar.refresh()

        _STEP_LISTENERS.append(show)
        try:
            return jax.block_until_ready(run())
        finally:
            _STEP_LISTENERS.remove(show)


def _denoised(step: jax.Array) -> None:
    """The sampling loop's host callback: tell the listeners that `step` is done."""
    for listener in list(_STEP_LISTENERS):
        listener(int(step))


@functools.partial(jax.jit, static_argnames=("graphdefs", "num_frames", "num_steps", "guided",
                                             "eta", "start_step", "decode_batch_size"))
def _generate(graphdefs: tuple, states: tuple, schedule: NoiseSchedule, images: jax.Array,
              cameras: jax.Array | None, ids: jax.Array, guidance_scale: jax.Array,
              key: jax.Array, *, num_frames: int, num_steps: int, guided: bool, eta: float,
              start_step: int, decode_batch_size: int) -> jax.Array:
    """The compiled body of `sample_multiview_video`: images [B, V, H, W, 3], cameras
    [B, V, 16] or None, ids [B + 1, L] (the prompts, then the negative prompt)."""
    unet, vae, text_encoder, image_encoder = (
        None if g is None else nnx.merge(g, s) for g, s in zip(graphdefs, states))
    b, v, h, w, _ = images.shape
    n = b * v
    noise_key, condition_key, eta_key = jax.random.split(key, 3)

    states = prompt_states(text_encoder, ids, v)                # [(B + 1) V, L, D]
    cond: dict[str, Any] = {"text": states[:n]}
    uncond: dict[str, Any] = {"text": jnp.broadcast_to(states[n:n + 1],
                                                       (n,) + states.shape[1:])}
    if cameras is not None:
        cond["cameras"] = uncond["cameras"] = cameras.reshape(n, 16)
    flat = images.reshape(n, h, w, 3)
    if image_encoder is not None:
        embeds = image_embeddings(image_encoder, flat)
        cond["image"], uncond["image"] = embeds, jnp.zeros_like(embeds)

    condition_latent = frame_latents(vae, 2.0 * flat - 1.0, condition_key)  # [N, h', w', C]
    latents = jax.random.normal(noise_key, (n, num_frames) + condition_latent.shape[1:])
    if start_step:
        t_start = ddim_timesteps(schedule, num_steps)[0][start_step]
        latents = add_noise(schedule, jnp.broadcast_to(condition_latent[:, None],
                                                       latents.shape), latents, t_start)

    def denoise(x: jax.Array, t: jax.Array, c: dict[str, Any]) -> jax.Array:
        return unet(x, t, c["text"], cameras=c.get("cameras"), image_embeds=c.get("image"),
                    num_views=v)

    latents = sample_ddim(denoise, schedule, latents, cond, uncond if guided else None,
                          num_steps=num_steps, guidance_scale=guidance_scale, eta=eta,
                          condition_latent=condition_latent, rng=eta_key,
                          on_step=_denoised, start_step=start_step)
    frames = jax.lax.map(lambda z: vae.decode(z[None])[0],
                         latents.reshape((n * num_frames,) + latents.shape[2:]),
                         batch_size=decode_batch_size)
    video = jnp.clip((frames + 1.0) / 2.0, 0.0, 1.0)
    return video.reshape(b, v, num_frames, h, w, 3)
