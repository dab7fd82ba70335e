"""Procedural animated creatures made of 3D Gaussians, with exactly known motion.

A `Creature` is a kinematic tree of P parts: part 0 is the body (the root), then a head,
2, 4 or 6 legs, maybe a tail and wings. Each part is a set of N_p isotropic Gaussians
sampled evenly on primitive surfaces (ellipsoids and tubes of `render.primitives`),
with a texture that makes every region trackable: stripes or spots on the body, bands on
legs and tail, eyes, ears and a nose on the head, and a little per-Gaussian colour
noise. An `Animation` moves the parts: a periodic rotation of each joint, a bend along
limbs and tail, a scale pulse, and a bob, sway and yaw of the whole body. Integer seeds
decide everything.

Conventions:
- World +z is up and the creature faces +x (the Animate3D camera convention of
  `t4a_jax.render.cameras`); lengths are in world units.
- Time is normalised: tau in [0, 1) over the clip, frame f of F at tau = f / F. Every
  motion signal is `A (sin(2 pi k tau + phi) - sin(phi))` with a whole number of
  cycles k, so the clip loops and every signal is zero at tau = 0: **frame 0 is the
  rest pose**, which `Creature.gaussians` holds.
- Every Gaussian (mean plus 3 standard deviations) stays inside a sphere of radius
  `FIT_RADIUS` about the origin at every tau, so the creature stays in the frame of a
  camera at distance 3.0 with a 40 degree field of view.

Motion model. Gaussian i of part p with bend weight w_i in [0, 1] (0 at the joint, 1 at
the tip of a limb) moves with the similarity transform `x -> s R x + b`
(`Similarity`, fields [..., N]):

    L_p(w)  = T(c_p) Rot(a_p, swing_p + w * bend_p) Scale(1 + pulse_p) T(-c_p)
    W_i     = W_parent(p) L_p(w_i),   W_parent(body) = T(shift),
    W_parent(p) = W_parent(parent(p)) L_parent(p)(1)

with c_p the joint's pivot and a_p its axis. A bend is therefore a rotation that grows
along the limb. A surface point attached to Gaussian i moves with W_i, the same
function that moves the Gaussian: tracks of attached points are exact by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from t4a_jax.render import primitives
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.primitives import Surface

FIT_RADIUS = 0.95        # mean + 3 sigma of every Gaussian, at every tau
REST_RADIUS = 0.78       # the same at rest, leaving room for the motion
OPACITY = 0.95
SIGMA_PER_SPACING = 0.6  # Gaussian standard deviation / sqrt(surface area per Gaussian)
COLOUR_NOISE = 0.03      # standard deviation of the per-Gaussian colour jitter

COLOURS = {  # named colours for textures and prompts; none is close to the grey 0.498
    "red": (0.85, 0.13, 0.12), "orange": (0.96, 0.55, 0.1), "yellow": (0.96, 0.86, 0.2),
    "green": (0.2, 0.7, 0.25), "teal": (0.08, 0.6, 0.62), "blue": (0.15, 0.3, 0.92),
    "purple": (0.55, 0.2, 0.78), "pink": (0.97, 0.47, 0.72), "brown": (0.42, 0.22, 0.08),
    "white": (0.96, 0.95, 0.92), "black": (0.07, 0.07, 0.09),
}
_NUMBER_WORDS = {2: "two", 4: "four", 6: "six"}
SeedLike = int | Sequence[int]


@dataclasses.dataclass(frozen=True)
class Creature:
    """A rigged creature at rest (frame 0). Arrays are numpy; shapes as noted.

    gaussians: the N Gaussians at rest (isotropic, SH degree 0).
    normals [N, 3]: unit outward surface normals at the Gaussians.
    part [N] int32: the part each Gaussian belongs to.
    bend_weight [N] float32: 0 at the part's joint, 1 at its tip (see module docstring).
    part_names (P,): 'body', 'head', 'leg_0', ..., 'tail', 'wing_0', ...
    parent [P] int32: parent part, -1 for the body; parents come before children.
    pivot [P, 3] float64: joint positions at rest.
    colour, pattern, leg_colour, num_legs, has_tail, has_wings: what the prompt says.
    """

    gaussians: Gaussians
    normals: np.ndarray
    part: np.ndarray
    bend_weight: np.ndarray
    part_names: tuple[str, ...]
    parent: np.ndarray
    pivot: np.ndarray
    colour: str
    pattern: str
    leg_colour: str
    num_legs: int
    has_tail: bool
    has_wings: bool

    @property
    def num_parts(self) -> int:
        return len(self.part_names)


@dataclasses.dataclass(frozen=True)
class Animation:
    """One periodic motion of a creature with P parts.

    Signals are [.., 3] rows (amplitude A, cycles, phase), see `periodic` (the value
    strays up to 2A from rest, its peak-to-peak range is 2A); angles in radians. axis [P, 3]: unit joint axes; swing, bend, pulse [P, 3]: joint angle, bend
    angle at the tip, relative scale change; shift [3, 3]: the body's translation along
    world x, y, z. actions: the phrases the prompt uses, e.g. 'wagging its tail'.
    """

    axis: np.ndarray
    swing: np.ndarray
    bend: np.ndarray
    pulse: np.ndarray
    shift: np.ndarray
    actions: tuple[str, ...]


class Similarity(NamedTuple):
    """Transforms x -> scale * rotation @ x + translation, batched over leading dims."""

    scale: np.ndarray        # [...]
    rotation: np.ndarray     # [..., 3, 3]
    translation: np.ndarray  # [..., 3]

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [..., 3] (leading dims broadcast against the transform's)."""
        rotated = np.einsum("...ij,...j->...i", self.rotation, points)
        return self.scale[..., None] * rotated + self.translation

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate direction vectors [..., 3] (normals): no scale, no translation."""
        return np.einsum("...ij,...j->...i", self.rotation, vectors)

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        """The inverse transform of points [..., 3]."""
        local = (points - self.translation) / self.scale[..., None]
        return np.einsum("...ji,...j->...i", self.rotation, local)

    def compose(self, inner: "Similarity") -> "Similarity":
        """self after inner: x -> self(inner(x))."""
        return Similarity(self.scale * inner.scale, self.rotation @ inner.rotation,
                          self.apply(inner.translation))


def periodic(signal: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """`A (sin(2 pi k tau + phi) - sin(phi))` for rows (A, k, phi) of `signal` [S, 3] at
    times `tau` [T]: [T, S]. Zero at tau = 0, periodic with period 1."""
    amplitude, cycles, phase = (signal[:, i] for i in range(3))
    angle = 2.0 * np.pi * cycles * np.asarray(tau, np.float64)[:, None] + phase
    return amplitude * (np.sin(angle) - np.sin(phase))


def rotation_matrix(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations [..., 3, 3] by `angle` [...] (radians, right-handed) about
    unit `axis` [..., 3]."""
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    cross = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                      np.stack([-y, x, zero], -1)], -2)
    outer = axis[..., :, None] * axis[..., None, :]
    c, s = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    return c * np.eye(3) + s * cross + (1.0 - c) * outer


def gaussian_transforms(creature: Creature, animation: Animation,
                        tau: np.ndarray) -> Similarity:
    """Per-Gaussian transforms from rest to times `tau` [T]: fields [T, N] (float64).

    The identity at tau = 0. See the module docstring for the model.
    """
    tau = np.atleast_1d(np.asarray(tau, np.float64))
    swing, bend = periodic(animation.swing, tau), periodic(animation.bend, tau)
    scale = 1.0 + periodic(animation.pulse, tau)                         # [T, P]
    shift = periodic(animation.shift, tau)                               # [T, 3]

    def joint(parts: np.ndarray, weight: np.ndarray) -> Similarity:
        """L_p(w) for parts [M] and weights [M]: fields [T, M]."""
        angle = swing[:, parts] + weight * bend[:, parts]
        rotation = rotation_matrix(animation.axis[parts], angle)
        s = scale[:, parts]
        centre = creature.pivot[parts]
        translation = centre - s[..., None] * np.einsum("tmij,mj->tmi", rotation, centre)
        return Similarity(s, rotation, translation)

    num_parts, t = creature.num_parts, len(tau)
    # mount[p]: W_parent(p), the transform that carries part p's joint.
    mount = [None] * num_parts
    for p in range(num_parts):
        q = creature.parent[p]
        if q < 0:
            mount[p] = Similarity(np.ones(t), np.broadcast_to(np.eye(3), (t, 3, 3)), shift)
        else:
            tip = joint(np.array([q]), np.ones(1))
            mount[p] = mount[q].compose(Similarity(tip.scale[:, 0], tip.rotation[:, 0],
                                                   tip.translation[:, 0]))
    mounts = Similarity(*(np.stack([m[i] for m in mount], axis=1) for i in range(3)))
    part = creature.part
    carried = Similarity(mounts.scale[:, part], mounts.rotation[:, part],
                         mounts.translation[:, part])
    return carried.compose(joint(part, creature.bend_weight.astype(np.float64)))


def pose_gaussians(gaussians: Gaussians, transform: Similarity) -> Gaussians:
    """The Gaussians moved by one time's per-Gaussian `transform` (fields [N]):
    means transformed, rotations composed, log-scales shifted by log(scale)."""
    means = transform.apply(np.asarray(gaussians.means, np.float64))
    quats = quat_multiply(quat_from_rotation(transform.rotation),
                          np.asarray(gaussians.quats, np.float64))
    log_scales = np.asarray(gaussians.log_scales) + np.log(transform.scale)[:, None]
    return gaussians.replace(means=jnp.asarray(means, jnp.float32),
                             quats=jnp.asarray(quats, jnp.float32),
                             log_scales=jnp.asarray(log_scales, jnp.float32))


def quat_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (w, x, y, z), w >= 0, of rotation matrices [..., 3, 3]."""
    m = rotation
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate (unnormalised) quaternions; use the best-conditioned one per matrix.
    candidates = np.stack([
        np.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                  m[..., 1, 0] - m[..., 0, 1]], -1),
        np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - trace,
                  m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                  1 + 2 * m[..., 1, 1] - trace, m[..., 1, 2] + m[..., 2, 1]], -1),
        np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                  m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - trace], -1),
    ], -2)
    diagonal = np.stack([1 + trace, 1 + 2 * m[..., 0, 0] - trace,
                         1 + 2 * m[..., 1, 1] - trace, 1 + 2 * m[..., 2, 2] - trace], -1)
    best = np.argmax(diagonal, axis=-1)[..., None, None]
    q = np.take_along_axis(candidates, best, axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions [..., 4] (w, x, y, z)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], -1)


# ----------------------------------------------------------------------------- shapes


def _ellipsoid(n: int, centre, radii) -> tuple[Surface, np.ndarray]:
    """n Gaussians on an axis-aligned ellipsoid (Fibonacci directions): the surface and
    sigma [n], sized by the local sample density."""
    surface = primitives.ellipsoid(primitives.fibonacci_sphere(n), centre, radii)
    return surface, SIGMA_PER_SPACING * np.sqrt(surface.area)


def _tube(n: int, curve: np.ndarray, radius: float) -> tuple[Surface, np.ndarray]:
    """About n Gaussians in staggered rings on a tube of `radius` around the polyline
    `curve` [K, 3]: the surface and sigma [n'], sized by the spacing around a ring."""
    s, angle, around = primitives.tube_rings(n, curve, radius)
    surface = primitives.tube(curve, radius, s, angle)
    return surface, np.full(len(s), SIGMA_PER_SPACING * 2.0 * np.pi * radius / around)


def _bands(coordinate: np.ndarray, count: int, a, b) -> np.ndarray:
    """Colours [n, 3]: `count` alternating bands a/b along a tube's arc length."""
    odd = (np.floor(coordinate[:, 0] * count) % 2 == 1)[:, None]
    return np.where(odd, np.asarray(b), np.asarray(a))


def _plain(rgb) -> Callable[[Surface], np.ndarray]:
    """One colour everywhere."""
    def colour(s: Surface) -> np.ndarray:
        return np.broadcast_to(np.asarray(rgb), s.points.shape)
    return colour


def _two_tone(where: Callable[[np.ndarray], np.ndarray], yes, no) -> Callable[[Surface],
                                                                              np.ndarray]:
    """`yes` where `where(coordinate)` [n] holds, `no` elsewhere."""
    def colour(s: Surface) -> np.ndarray:
        return np.where(where(s.coordinate)[:, None], np.asarray(yes), np.asarray(no))
    return colour


class _Spec(NamedTuple):
    """One primitive of a part, before sampling.

    kind 'ellipsoid' with geometry (centre, radii), or 'tube' with (curve [K, 3],
    radius); colour maps the sampled surface to RGB [n, 3]; bend is a constant weight,
    'arc' (a tube's arc-length fraction) or 'span' (distance from the part's pivot over
    the largest such distance).
    """

    part: int
    kind: str
    geometry: tuple
    colour: Callable[[Surface], np.ndarray]
    bend: float | str


class _Palette(NamedTuple):
    """RGB of the body, its pattern, the legs and the accents (feet, ears, nose)."""

    main: np.ndarray
    second: np.ndarray
    leg: np.ndarray
    accent: np.ndarray


class _Rig:
    """Part names, parents and pivots, in the order parts are added (parents first)."""

    def __init__(self):
        self.names: list[str] = []
        self.parents: list[int] = []
        self.pivots: list[np.ndarray] = []

    def add(self, name: str, parent: int, pivot) -> int:
        self.names.append(name)
        self.parents.append(parent)
        self.pivots.append(np.asarray(pivot, np.float64))
        return len(self.names) - 1


def make_creature(seed: SeedLike, num_gaussians: int = 4096) -> Creature:
    """A random creature with exactly `num_gaussians` Gaussians; the same seed (an int or
    a sequence of ints, as `np.random.default_rng` takes) gives the same creature.

    The body is an ellipsoid; the head (with eyes, ears and a nose) sits in front of it,
    2, 4 or 6 banded legs with feet hang below, a banded tail (70 %) leaves its back and
    two flat wings (35 %) its top. Gaussians are spread over the surfaces in proportion
    to their area. Raises ValueError when `num_gaussians` < 1024.
    """
    if num_gaussians < 1024:
        raise ValueError(f"num_gaussians must be >= 1024, got {num_gaussians}")
    rng = np.random.default_rng(seed)
    colour, second, leg_colour, accent = rng.choice(list(COLOURS), size=4, replace=False)
    palette = _Palette(*(np.asarray(COLOURS[c]) for c in (colour, second, leg_colour, accent)))
    pattern = str(rng.choice(["striped", "spotted"]))
    num_legs = int(rng.choice([2, 4, 6], p=[0.2, 0.6, 0.2]))
    has_tail, has_wings = bool(rng.random() < 0.7), bool(rng.random() < 0.35)
    radii = rng.uniform([0.32, 0.17, 0.15], [0.45, 0.26, 0.24])

    rig = _Rig()
    body = rig.add("body", -1, (0.0, 0.0, 0.0))
    specs = _head(rig, rng, palette, radii)
    specs += _legs(rig, rng, palette, radii, num_legs)
    if has_tail:
        specs += _tail(rig, rng, palette, radii)
    if has_wings:
        specs += _wings(rig, rng, palette, radii)
    specs.append(_Spec(body, "ellipsoid", ((0.0, 0.0, 0.0), radii),
                       _body_texture(rng, palette, pattern), 0.0))
    pieces = _sample(specs, rig, num_gaussians)
    return _assemble(pieces, rig, rng, colour=colour, pattern=pattern, leg_colour=leg_colour,
                     num_legs=num_legs, has_tail=has_tail, has_wings=has_wings)


def _head(rig: _Rig, rng: np.random.Generator, palette: _Palette,
          body: np.ndarray) -> list[_Spec]:
    """The head at the front top of the body, two-tone, with eyes, ears and a nose."""
    a, _, c = body
    size = rng.uniform(0.13, 0.19)
    centre = np.array([0.85 * a + 0.55 * size, 0.0, 0.55 * c + 0.35 * size])
    radii = size * np.array([1.1, 1.0, 0.95])
    head = rig.add("head", 0, (0.7 * a, 0.0, 0.45 * c))
    chin = _two_tone(lambda u: u[:, 2] < -0.35, palette.second, palette.main)
    pupil = _two_tone(lambda u: u[:, 0] > 0.55, COLOURS["black"], COLOURS["white"])
    nose = (centre + radii * [1.0, 0.0, -0.05], 0.2 * size * np.ones(3))
    specs = [_Spec(head, "ellipsoid", (centre, radii), chin, 1.0),
             _Spec(head, "ellipsoid", nose, _plain(palette.accent), 1.0)]
    for side in (1.0, -1.0):
        specs.append(_Spec(head, "ellipsoid", (centre + radii * [0.78, 0.42 * side, 0.3],
                                               0.22 * size * np.ones(3)), pupil, 1.0))
        specs.append(_Spec(head, "ellipsoid", (centre + radii * [-0.25, 0.5 * side, 0.85],
                                               size * np.array([0.2, 0.3, 0.5])),
                           _plain(palette.accent), 1.0))
    return specs


def _legs(rig: _Rig, rng: np.random.Generator, palette: _Palette, body: np.ndarray,
          num_legs: int) -> list[_Spec]:
    """Pairs of banded vertical tubes under the body, each with a foot; the joint is the
    hip, inside the body."""
    a, b, c = body
    length, radius = rng.uniform(0.28, 0.42), rng.uniform(0.04, 0.06)
    bands = int(rng.integers(3, 6))
    specs = []
    for row in {2: [0.0], 4: [0.55, -0.55], 6: [0.6, 0.0, -0.6]}[num_legs]:
        for side in (1.0, -1.0):
            hip = np.array([row * a, 0.55 * side * b, -0.35 * c])
            leg = rig.add(f"leg_{len(rig.names) - 2}", 0, hip)
            curve = np.stack([hip, hip - [0.0, 0.0, length + 0.3 * c]])
            specs.append(_Spec(leg, "tube", (curve, radius),
                               lambda s: _bands(s.coordinate, bands, palette.leg,
                                                palette.second), "arc"))
            specs.append(_Spec(leg, "ellipsoid", (curve[-1] + [0.5 * radius, 0.0, 0.0],
                                                  radius * np.array([1.7, 1.25, 0.8])),
                               _plain(palette.accent), 1.0))
    return specs


def _tail(rig: _Rig, rng: np.random.Generator, palette: _Palette,
          body: np.ndarray) -> list[_Spec]:
    """A banded tube curving back and up from the rear of the body, with a tuft."""
    a, _, c = body
    length, radius = rng.uniform(0.4, 0.6), rng.uniform(0.03, 0.045)
    bands = int(rng.integers(5, 8))
    root = np.array([-0.85 * a, 0.0, 0.2 * c])
    tail = rig.add("tail", 0, root)
    t = np.linspace(0.0, 1.0, 10)[:, None]
    curve = root + length * np.concatenate([-0.75 * t, 0.0 * t, 0.25 * t + 0.55 * t ** 2],
                                           axis=1)
    return [_Spec(tail, "tube", (curve, radius),
                  lambda s: _bands(s.coordinate, bands, palette.main, palette.second), "arc"),
            _Spec(tail, "ellipsoid", (curve[-1], 1.6 * radius * np.ones(3)),
                  _plain(palette.accent), 1.0)]


def _wings(rig: _Rig, rng: np.random.Generator, palette: _Palette,
           body: np.ndarray) -> list[_Spec]:
    """Two flat ellipsoids sticking out sideways from the top of the body, edged."""
    _, b, c = body
    span = rng.uniform(0.26, 0.34)
    edged = _two_tone(lambda u: np.abs(u[:, 1]) > 0.75, palette.accent, palette.second)
    specs = []
    for index, side in enumerate((1.0, -1.0)):
        pivot = np.array([0.0, 0.6 * side * b, 0.75 * c])
        wing = rig.add(f"wing_{index}", 0, pivot)
        centre = pivot + [0.0, side * (0.6 * span + 0.2 * b), 0.05]
        specs.append(_Spec(wing, "ellipsoid", (centre, [0.55 * span, 0.7 * span, 0.02]),
                           edged, "span"))
    return specs


def _body_texture(rng: np.random.Generator, palette: _Palette,
                  pattern: str) -> Callable[[Surface], np.ndarray]:
    """Stripes across the body (period 0.13-0.2, slightly slanted) or 14 round spots, on
    the main colour, with a belly in the accent colour."""
    if pattern == "striped":
        direction = np.array([1.0, 0.0, rng.uniform(-0.4, 0.4)])
        period, phase = rng.uniform(0.13, 0.2), rng.uniform(0, 2 * np.pi)

        def marked(s: Surface) -> np.ndarray:
            along = s.points @ (direction / np.linalg.norm(direction))
            return np.sin(2.0 * np.pi * along / period + phase) > 0.2
    else:
        spots, radius = rng.random(14), rng.uniform(0.05, 0.08)

        def marked(s: Surface) -> np.ndarray:
            centres = s.points[(spots * len(s.points)).astype(int)]
            return np.linalg.norm(s.points[:, None] - centres[None], axis=-1).min(1) < radius

    def texture(s: Surface) -> np.ndarray:
        belly = (s.coordinate[:, 2] < -0.6)[:, None]
        return np.where(marked(s)[:, None], palette.second,
                        np.where(belly, palette.accent, palette.main))
    return texture


class _Piece(NamedTuple):
    part: int
    surface: Surface
    sigma: np.ndarray   # [n]
    rgb: np.ndarray     # [n, 3]
    bend: np.ndarray    # [n]


def _sample(specs: list[_Spec], rig: _Rig, num_gaussians: int) -> list[_Piece]:
    """Sample every spec with a count proportional to its area; the last spec (the body)
    takes what is left so that the total is exactly `num_gaussians`."""
    areas = np.array([primitives.ellipsoid_area(s.geometry[1]) if s.kind == "ellipsoid"
                      else primitives.tube_area(*s.geometry) for s in specs])
    counts = np.maximum(24, np.floor(num_gaussians * areas / areas.sum())).astype(int)
    pieces = []
    for i, spec in enumerate(specs):
        count = num_gaussians - sum(len(p.bend) for p in pieces) if i == len(specs) - 1 \
            else int(counts[i])
        surface, sigma = (_ellipsoid if spec.kind == "ellipsoid" else _tube)(
            count, *spec.geometry)
        if spec.bend == "arc":
            bend = surface.coordinate[:, 0]
        elif spec.bend == "span":
            reach = np.linalg.norm(surface.points - rig.pivots[spec.part], axis=-1)
            bend = reach / reach.max()
        else:
            bend = np.full(len(surface.points), float(spec.bend))
        pieces.append(_Piece(spec.part, surface, sigma, spec.colour(surface), bend))
    return pieces


def _assemble(pieces: list[_Piece], rig: _Rig, rng: np.random.Generator,
              **attributes) -> Creature:
    """Concatenate the pieces, add colour noise, centre the creature on the origin and
    scale it so that every mean + 3 sigma lies within REST_RADIUS."""
    def cat(get) -> np.ndarray:
        return np.concatenate([get(p) for p in pieces])

    part = cat(lambda p: np.full(len(p.bend), p.part, np.int32))
    points, normals = cat(lambda p: p.surface.points), cat(lambda p: p.surface.normals)
    sigma, bend = cat(lambda p: p.sigma), cat(lambda p: p.bend)
    rgb = cat(lambda p: p.rgb)
    rgb = np.clip(rgb + rng.normal(0.0, COLOUR_NOISE, rgb.shape), 0.0, 1.0)

    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    points, pivot = points - centre, np.stack(rig.pivots) - centre
    shrink = REST_RADIUS / np.max(np.linalg.norm(points, axis=1) + 3.0 * sigma)
    points, pivot, sigma = points * shrink, pivot * shrink, sigma * shrink
    gaussians = primitives.isotropic_gaussians(points, sigma, rgb, OPACITY)
    return Creature(gaussians=gaussians, normals=normals.astype(np.float32), part=part,
                    bend_weight=bend.astype(np.float32), part_names=tuple(rig.names),
                    parent=np.asarray(rig.parents, np.int32), pivot=pivot, **attributes)


# ----------------------------------------------------------------------------- motion


def make_animation(creature: Creature, seed: SeedLike) -> Animation:
    """A random periodic animation of `creature` that keeps it inside FIT_RADIUS.

    The legs walk in place (alternating gait, knees bending), the tail wags or swishes
    while curling, the head nods or shakes (sometimes pulsing in size), wings flap, and
    the body bobs, sways and turns a little. Amplitudes are drawn, then shrunk by 0.85
    until every Gaussian stays inside FIT_RADIUS over the whole clip.
    """
    rng = np.random.default_rng(seed)
    num_parts = creature.num_parts
    axis = np.tile([0.0, 0.0, 1.0], (num_parts, 1))
    swing, bend, pulse = (np.zeros((num_parts, 3)) for _ in range(3))
    deg = np.pi / 180.0

    def signal(low: float, high: float, cycles: Sequence[int], phase: float | None = None):
        return [rng.uniform(low, high), rng.choice(cycles),
                rng.uniform(0, 2 * np.pi) if phase is None else phase]

    swing[0] = signal(0.0, 8 * deg, [1])                                  # body yaw
    pulse[0] = signal(0.0, 0.05, [1, 2])                                   # breathing
    shift = np.array([signal(0.0, 0.05, [1]), [0.0, 1.0, 0.0],
                      signal(0.02, 0.04, [1, 2])])                         # sway, bob
    actions = ["walking in place", "bobbing up and down"]
    leg_swing, leg_bend = signal(12 * deg, 22 * deg, [1, 2]), rng.uniform(0.0, 15 * deg)
    wing_swing = signal(15 * deg, 30 * deg, [2, 3])
    for p, name in enumerate(creature.part_names):
        if name == "head":
            nod = rng.random() < 0.6
            axis[p] = [0.0, 1.0, 0.0] if nod else [0.0, 0.0, 1.0]
            swing[p] = signal(8 * deg, 18 * deg, [1, 2])
            actions.append("nodding its head" if nod else "shaking its head")
            if rng.random() < 0.3:
                pulse[p] = signal(0.06, 0.12, [1, 2])
                actions.append("puffing its head up")
        elif name.startswith("leg_"):
            index = int(name.split("_")[1])
            axis[p] = [0.0, 1.0, 0.0]
            alternate = np.pi * ((index // 2 + index % 2) % 2)             # diagonal gait
            swing[p] = [leg_swing[0], leg_swing[1], leg_swing[2] + alternate]
            bend[p] = [leg_bend, leg_swing[1], leg_swing[2] + alternate + np.pi / 2]
        elif name == "tail":
            wag = rng.random() < 0.7
            axis[p] = [0.0, 0.0, 1.0] if wag else [0.0, 1.0, 0.0]
            swing[p] = signal(12 * deg, 25 * deg, [1, 2, 3])
            bend[p] = [rng.uniform(10, 25) * deg, swing[p, 1], swing[p, 2] + np.pi / 3]
            actions.append("wagging its tail" if wag else "swishing its tail up and down")
        elif name.startswith("wing_"):
            side = 1.0 if name == "wing_0" else -1.0
            axis[p] = [side, 0.0, 0.0]
            if name == "wing_0":
                actions.append("flapping its wings")
            swing[p] = wing_swing
            bend[p] = [rng.uniform(0, 12) * deg, wing_swing[1], wing_swing[2] + np.pi / 4]

    animation = Animation(axis, swing, bend, pulse, shift, tuple(actions))
    while max_radius(creature, animation) > FIT_RADIUS:
        animation = dataclasses.replace(
            animation, swing=_scaled(animation.swing, 0.85), bend=_scaled(animation.bend, 0.85),
            pulse=_scaled(animation.pulse, 0.85), shift=_scaled(animation.shift, 0.85))
    return animation


def _scaled(signal: np.ndarray, factor: float) -> np.ndarray:
    return signal * np.array([factor, 1.0, 1.0])


def max_radius(creature: Creature, animation: Animation, samples: int = 96) -> float:
    """The largest |mean| + 3 sigma of any Gaussian over `samples` times in [0, 1)."""
    transforms = gaussian_transforms(creature, animation, np.arange(samples) / samples)
    means = transforms.apply(np.asarray(creature.gaussians.means, np.float64))
    sigma = np.exp(np.asarray(creature.gaussians.log_scales[:, 0], np.float64))
    return float(np.max(np.linalg.norm(means, axis=-1) + 3.0 * sigma * transforms.scale))


def prompt(creature: Creature, animation: Animation) -> str:
    """A short text prompt, e.g. 'a striped orange creature with four blue legs and a
    tail, walking in place, wagging its tail and nodding its head'."""
    extras = (["a tail"] if creature.has_tail else []) + (["wings"] if creature.has_wings else [])
    body = f"{_NUMBER_WORDS[creature.num_legs]} {creature.leg_colour} legs"
    return (f"a {creature.pattern} {creature.colour} creature with "
            f"{_join([body] + extras)}, {_join(list(animation.actions))}")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
