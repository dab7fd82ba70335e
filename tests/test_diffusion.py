"""t4a_jax.diffusion against diffusers' PyTorch DDIMScheduler / DDPMScheduler (float32):
schedule arrays, timesteps, forward noising, velocity, every DDIM step, and the jitted
sampling loop with guidance and the condition-frame reset; the condition-frame noise of
Eq. 2."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from configs.diffusion import get_config
from t4a_jax.diffusion import (ConditionNoiseConfig, ScheduleConfig, add_condition_noise,
                               add_noise, classifier_free_guidance, condition_noise_scale,
                               ddim_step, ddim_timesteps, make_schedule, predict_x0_and_noise,
                               sample_ddim, target, velocity)

ATOL = 2e-6
SHAPE = (3, 4, 8, 8, 4)          # [N, F, h, w, C] latents
RNG = np.random.default_rng(0)


def _diffusers(cls=DDIMScheduler, **settings):
    """A diffusers scheduler with ScheduleConfig's settings (Animate3D's by default)."""
    config = ScheduleConfig(**settings)
    kwargs = dict(num_train_timesteps=config.num_train_timesteps,
                  beta_start=config.beta_start, beta_end=config.beta_end,
                  beta_schedule=config.beta_schedule, clip_sample=config.clip_sample,
                  clip_sample_range=config.clip_sample_range,
                  prediction_type=config.prediction_type,
                  timestep_spacing=config.timestep_spacing, steps_offset=config.steps_offset)
    if cls is DDIMScheduler:
        kwargs["set_alpha_to_one"] = config.set_alpha_to_one
    return cls(**kwargs)


def _normal(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _close(ours, theirs, atol=ATOL, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=atol, rtol=rtol)


# --- schedule -----------------------------------------------------------------------------


def test_defaults_are_animate3d_ddim_settings():
    """Animate3D: DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085,
    beta_end=0.012, beta_schedule='linear', steps_offset=1, clip_sample=False)."""
    theirs = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="linear", steps_offset=1, clip_sample=False)
    ours = make_schedule()
    for name, value in dataclasses.asdict(ours.config).items():
        assert theirs.config[name] == value, name
    assert make_schedule(get_config()["schedule"]).config == ours.config


@pytest.mark.parametrize("beta_schedule,set_alpha_to_one", list(itertools.product(
    ("linear", "scaled_linear", "squaredcos_cap_v2"), (True, False))))
def test_schedule_arrays(beta_schedule, set_alpha_to_one):
    ours = make_schedule(beta_schedule=beta_schedule, set_alpha_to_one=set_alpha_to_one)
    theirs = _diffusers(beta_schedule=beta_schedule, set_alpha_to_one=set_alpha_to_one)
    _close(ours.betas, theirs.betas.numpy(), atol=1e-8)
    _close(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), atol=1e-6)
    _close(ours.final_alpha_cumprod, theirs.final_alpha_cumprod.numpy(), atol=1e-6)
    assert ours.betas.dtype == ours.alphas_cumprod.dtype == jnp.float32


@pytest.mark.parametrize("spacing,steps_offset,num_steps",
                         [(s, o, n) for s in ("leading", "trailing", "linspace")
                          for o in (0, 1) for n in (25, 50, 7, 1)])
def test_timesteps(spacing, steps_offset, num_steps):
    schedule = make_schedule(timestep_spacing=spacing, steps_offset=steps_offset)
    theirs = _diffusers(timestep_spacing=spacing, steps_offset=steps_offset)
    theirs.set_timesteps(num_steps)
    timesteps, prev = ddim_timesteps(schedule, num_steps)
    np.testing.assert_array_equal(timesteps, theirs.timesteps.numpy())
    np.testing.assert_array_equal(prev, timesteps - 1000 // num_steps)
    assert timesteps.dtype == np.int32


def test_leading_25_steps_of_animate3d():
    timesteps, prev = ddim_timesteps(make_schedule(), 25)
    assert timesteps[0] == 961 and timesteps[-1] == 1 and prev[-1] == -39


@pytest.mark.parametrize("cls", (DDPMScheduler, DDIMScheduler))
@pytest.mark.parametrize("beta_schedule", ("linear", "scaled_linear"))
def test_add_noise_and_velocity(cls, beta_schedule):
    schedule = make_schedule(beta_schedule=beta_schedule)
    theirs = _diffusers(cls, beta_schedule=beta_schedule)
    x0, noise = _normal(*SHAPE), _normal(*SHAPE)
    t = np.array([0, 517, 999])
    expected = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                torch.from_numpy(t)).numpy()
    _close(add_noise(schedule, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t)), expected)
    expected = theirs.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise),
                                   torch.from_numpy(t)).numpy()
    _close(velocity(schedule, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t)), expected)
    # A scalar t is shared by all samples.
    _close(add_noise(schedule, x0, noise, 517), add_noise(schedule, x0, noise, jnp.full(3, 517)))


def test_training_targets():
    x0, noise, t = _normal(*SHAPE), _normal(*SHAPE), jnp.array([3, 400, 990])
    _close(target(make_schedule(), x0, noise, t), noise, atol=0)
    v_schedule = make_schedule(prediction_type="v_prediction")
    _close(target(v_schedule, x0, noise, t), velocity(v_schedule, x0, noise, t), atol=0)
    _close(target(make_schedule(prediction_type="sample"), x0, noise, t), x0, atol=0)
    # The targets are what predict_x0_and_noise inverts.
    for kind in ("epsilon", "v_prediction", "sample"):
        schedule = make_schedule(prediction_type=kind)
        x_t = add_noise(schedule, x0, noise, t)
        x0_hat, eps_hat = predict_x0_and_noise(schedule, target(schedule, x0, noise, t), x_t, t)
        _close(x0_hat, x0, atol=2e-4)
        _close(eps_hat, noise, atol=2e-4)


# --- DDIM steps ---------------------------------------------------------------------------

STEP_CASES = [dict(prediction_type=p) for p in ("epsilon", "v_prediction", "sample")] + [
    dict(set_alpha_to_one=False), dict(timestep_spacing="trailing", steps_offset=0),
    dict(beta_schedule="scaled_linear", timestep_spacing="linspace"),
    dict(prediction_type="sample", clip_sample=True, clip_sample_range=0.5)]


@pytest.mark.parametrize("settings", STEP_CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v
                                                                        in s.items()))
@pytest.mark.parametrize("eta", (0.0, 0.7))
def test_every_ddim_step_matches_diffusers(settings, eta):
    """25 steps on a fixed sequence of random model outputs; each of our steps starts
    from diffusers' sample, so every step is compared on its own, then the trajectory."""
    num_steps = 25
    schedule = make_schedule(**settings)
    theirs = _diffusers(**settings)
    theirs.set_timesteps(num_steps)
    timesteps, prev = ddim_timesteps(schedule, num_steps)
    outputs = _normal(num_steps, *SHAPE)
    noises = _normal(num_steps, *SHAPE)
    sample = ours = _normal(*SHAPE)
    step = jax.jit(lambda out, t, tp, x, z: ddim_step(schedule, out, t, tp, x, eta=eta,
                                                      noise=z if eta else None))
    for i, t in enumerate(theirs.timesteps):
        result = theirs.step(torch.from_numpy(outputs[i]), t, torch.from_numpy(sample),
                             eta=eta, variance_noise=torch.from_numpy(noises[i]) if eta else None)
        prev_sample, pred_x0 = step(outputs[i], timesteps[i], prev[i], sample, noises[i])
        # float32 rounding grows with the largest of x0 and eps implied by the output
        # (1/sqrt(abar) at large t, 1/sqrt(1 - abar) at small t): compare relative to it.
        implied = predict_x0_and_noise(schedule, outputs[i], sample, timesteps[i])
        scale = max(1.0, *(float(jnp.abs(a).max()) for a in implied))
        _close(pred_x0, result.pred_original_sample.numpy(), atol=ATOL * scale, rtol=1e-5)
        _close(prev_sample, result.prev_sample.numpy(), atol=ATOL * scale, rtol=1e-5)
        ours, _ = step(outputs[i], timesteps[i], prev[i], ours, noises[i])
        sample = result.prev_sample.numpy()
    _close(ours, sample, atol=1e-4, rtol=1e-4)


def test_ddim_step_per_sample_timesteps():
    """t [N]: each sample steps with its own timestep, as N scalar steps would."""
    schedule = make_schedule()
    out, x = _normal(*SHAPE), _normal(*SHAPE)
    t, t_prev = jnp.array([961, 441, 1]), jnp.array([921, 401, -39])
    batched, x0 = ddim_step(schedule, out, t, t_prev, x)
    for i in range(3):
        single, single_x0 = ddim_step(schedule, out[i:i + 1], t[i], t_prev[i], x[i:i + 1])
        _close(batched[i:i + 1], single, atol=0)
        _close(x0[i:i + 1], single_x0, atol=0)


def test_ddim_step_errors():
    schedule, x = make_schedule(), jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="eta=0.5 > 0 needs `noise`"):
        ddim_step(schedule, x, 10, 0, x, eta=0.5)
    with pytest.raises(ValueError, match="eta=-1"):
        ddim_step(schedule, x, 10, 0, x, eta=-1.0)
    with pytest.raises(ValueError, match="num_steps=1001"):
        ddim_timesteps(schedule, 1001)
    with pytest.raises(ValueError, match="reach timestep 1000"):
        ddim_timesteps(schedule, 1000)
    with pytest.raises(ValueError, match="beta_schedule='cosine'"):
        make_schedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match="unknown fields \\['beta_max'\\]"):
        make_schedule({"beta_max": 0.02})


# --- the sampling loop --------------------------------------------------------------------


def _fake_denoiser(x, t, c, xp):
    """A model output depending on the sample (frame 0 included), t and the condition,
    written for numpy-like `xp` (jnp or torch) on [M, F, h, w, C]."""
    frame0 = x[:, :1].mean(axis=(2, 3, 4), keepdims=True) if xp is jnp else \
        x[:, :1].mean(dim=(2, 3, 4), keepdim=True)
    tt = t.reshape(-1, 1, 1, 1, 1).astype(jnp.float32) if xp is jnp else \
        t.reshape(-1, 1, 1, 1, 1).float()
    return 0.3 * x + c["a"][:, None, None, None, :] * xp.sin(tt / 150.0) + frame0


@pytest.mark.parametrize("guidance_scale", (7.5, 1.0))
def test_sample_ddim_matches_a_diffusers_loop(guidance_scale):
    """Animate3D's sampling loop in PyTorch (diffusers' DDIM, guidance over [uncond;
    cond], frame 0 reset after each step) equals sample_ddim under jit."""
    n = SHAPE[0]
    schedule = make_schedule()
    latents, condition = _normal(*SHAPE), _normal(n, *SHAPE[2:])
    cond, uncond = {"a": _normal(n, SHAPE[-1])}, {"a": _normal(n, SHAPE[-1])}
    guided = guidance_scale != 1.0

    theirs = _diffusers()
    theirs.set_timesteps(25)
    x = torch.from_numpy(latents).clone()
    x[:, 0] = torch.from_numpy(condition)
    c_both = {"a": torch.from_numpy(np.concatenate([uncond["a"], cond["a"]]))}
    for t in theirs.timesteps:
        if guided:
            out = _fake_denoiser(torch.cat([x, x]), t.repeat(2 * n), c_both, torch)
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + guidance_scale * (out_cond - out_uncond)
        else:
            out = _fake_denoiser(x, t.repeat(n), {"a": torch.from_numpy(cond["a"])}, torch)
        x = theirs.step(out, t, x).prev_sample
        x[:, 0] = torch.from_numpy(condition)

    run = jax.jit(lambda latents, condition, cond, uncond: sample_ddim(
        lambda x, t, c: _fake_denoiser(x, t, c, jnp), schedule, latents, cond,
        uncond if guided else None, guidance_scale=guidance_scale,
        condition_latent=condition))
    ours = run(latents, condition, cond, uncond)
    _close(ours, x.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(ours[:, 0]), condition)


def test_guidance_combines_known_branch_outputs():
    """A denoiser that returns its condition: guided output = u + g (c - u), and the
    sampler feeds [uncond; cond] in that order, with t broadcast to the 2N batch."""
    seen = {}

    def denoise(x, t, c):
        seen["batch"], seen["t_shape"] = x.shape[0], t.shape
        return jnp.broadcast_to(c["value"][:, None, None, None, None], x.shape)

    schedule, n = make_schedule(), SHAPE[0]
    u, c, x = jnp.array([0.1, -0.2, 0.3]), jnp.array([0.5, 0.4, -0.1]), _normal(*SHAPE)
    ours = sample_ddim(denoise, schedule, x, {"value": c}, {"value": u}, num_steps=1,
                       guidance_scale=3.0)
    guided = classifier_free_guidance(u, c, 3.0)
    _close(guided, u + 3.0 * (c - u), atol=0)
    t, t_prev = (a[0] for a in ddim_timesteps(schedule, 1))
    expected, _ = ddim_step(schedule, jnp.broadcast_to(guided[:, None, None, None, None],
                                                       SHAPE), t, t_prev, x)
    _close(ours, expected, atol=1e-6)
    assert seen == {"batch": 2 * n, "t_shape": (2 * n,)}


def test_sampler_is_one_loop_and_traces_the_denoiser_once():
    traces = []

    def denoise(x, t, c):
        traces.append(x.shape)
        return 0.1 * x + c["a"][:, None, None, None, :]

    schedule = make_schedule()
    cond, uncond = {"a": jnp.ones((3, 4))}, {"a": jnp.zeros((3, 4))}
    run = jax.jit(lambda x: sample_ddim(denoise, schedule, x, cond, uncond, num_steps=25))
    run(_normal(*SHAPE))
    run(_normal(*SHAPE))
    assert traces == [(6,) + SHAPE[1:]]
    jaxpr = jax.make_jaxpr(lambda x: sample_ddim(denoise, schedule, x, cond, uncond))(
        jnp.zeros(SHAPE))
    loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("while", "scan")]
    assert len(loops) == 1


def test_sampler_eta_noise_is_seeded_per_step():
    """eta > 0: step i adds noise from fold_in(rng, i), as a manual loop of ddim_step."""
    schedule, rng = make_schedule(), jax.random.key(3)
    denoise = lambda x, t, c: 0.5 * x
    x0 = jnp.asarray(_normal(*SHAPE))
    ours = sample_ddim(denoise, schedule, x0, {}, num_steps=5, eta=1.0, rng=rng)
    x = x0
    for i, (t, t_prev) in enumerate(zip(*ddim_timesteps(schedule, 5))):
        noise = jax.random.normal(jax.random.fold_in(rng, i), SHAPE)
        x, _ = ddim_step(schedule, 0.5 * x, t, t_prev, x, eta=1.0, noise=noise)
    _close(ours, x, atol=1e-5)
    with pytest.raises(ValueError, match="needs `rng`"):
        sample_ddim(denoise, schedule, x0, {}, eta=1.0)
    with pytest.raises(ValueError, match="condition_latent must be"):
        sample_ddim(denoise, schedule, x0, {}, condition_latent=jnp.zeros((3, 8, 8)))


# --- condition-frame noise (Eq. 2) --------------------------------------------------------


def test_condition_noise_off_returns_the_clean_latent():
    schedule, z1, eps = make_schedule(), _normal(3, 8, 8, 4), _normal(3, 8, 8, 4)
    off = ConditionNoiseConfig(mode="off")
    assert add_condition_noise(off, schedule, z1, eps, jnp.array([10, 500, 999])) is z1
    _close(condition_noise_scale(off, schedule, jnp.arange(1000)), np.zeros(1000), atol=0)
    assert ConditionNoiseConfig.from_config_dict(get_config("animate3d")["condition_noise"]
                                                 ).mode == "off"


@pytest.mark.parametrize("mode", ("time_noise", "linear", "sigma", "beta"))
def test_condition_noise_grows_with_t(mode):
    schedule = make_schedule()
    config = ConditionNoiseConfig.from_config_dict(get_config()["condition_noise"], mode=mode)
    t = np.arange(0, 1000, 37)
    key = jax.random.key(0)
    # One draw shared by every t (a scalar t per call, the same key): monotone in t.
    scales = np.array([float(condition_noise_scale(config, schedule, ti, key)) for ti in t])
    assert np.all(np.diff(scales) > 0) and scales[0] >= 0
    z1, eps = _normal(2, 8, 8, 4), _normal(2, 8, 8, 4)
    noisy = add_condition_noise(config, schedule, z1, eps, jnp.array([100, 900]), key)
    expected = condition_noise_scale(config, schedule, jnp.array([100, 900]), key)
    _close(noisy, z1 + np.asarray(expected)[:, None, None, None] * eps, atol=1e-6)


def test_time_noise_levels():
    """TimeNoise: median level scale * sigmoid(mu(t)) (0.18 at t = 0, 0.82 at T), every
    level in (0, scale), and a key is required."""
    schedule, config = make_schedule(), ConditionNoiseConfig()
    for t, median in ((0, 0.9977 * jax.nn.sigmoid(-1.5)), (999, 0.9977 * jax.nn.sigmoid(
            2 * 1.5 * 0.999 - 1.5))):
        levels = condition_noise_scale(config, schedule, jnp.full(4000, t), jax.random.key(1))
        assert abs(float(jnp.median(levels)) - float(median)) < 0.02
        assert float(levels.min()) > 0 and float(levels.max()) < config.scale
    with pytest.raises(ValueError, match="needs a PRNG key"):
        condition_noise_scale(config, schedule, jnp.array([5]))
    with pytest.raises(ValueError, match="mode='gaussian'"):
        ConditionNoiseConfig(mode="gaussian")
    with pytest.raises(ValueError, match="unknown variant 'x'"):
        get_config("x")
