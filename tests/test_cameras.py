"""Camera conventions: intrinsics, orbit poses, viewmats and the U-Net camera vector.

Expected values are derived by hand / with plain numpy from the conventions written in
DESIGN.md ("Cameras fed to the network", "The rasterizer"), not from the library code.
"""

import numpy as np
import pytest

from t4a_jax.render.cameras import (
    c2w_to_viewmat,
    camera_vector,
    intrinsics_from_fov,
    look_at,
    orbit_c2w,
    orbit_cameras,
    orbit_position,
    rigid_inverse,
    viewmat_to_c2w,
)

ATOL = 1e-5


def _project(K, p_cam):
    """Pinhole projection of an OpenCV camera-space point with numpy."""
    K = np.asarray(K, np.float64)
    p = np.asarray(p_cam, np.float64)
    return np.array([K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]])


def _apply(m, p):
    m = np.asarray(m, np.float64)
    return m[:3, :3] @ np.asarray(p, np.float64) + m[:3, 3]


# ---------------------------------------------------------------- intrinsics_from_fov


@pytest.mark.parametrize("fovy,width,height", [(40.0, 256, 256), (60.0, 320, 240),
                                               (90.0, 64, 128)])
def test_intrinsics_top_edge_and_principal_point(fovy, width, height):
    K = np.asarray(intrinsics_from_fov(fovy, width, height))
    assert K.shape == (3, 3)
    np.testing.assert_allclose(K[2], [0.0, 0.0, 1.0])
    assert K[0, 1] == 0.0 and K[1, 0] == 0.0
    # Principal point at the image centre.
    np.testing.assert_allclose(K[:2, 2], [width / 2, height / 2], atol=ATOL)
    # Square pixels by default.
    np.testing.assert_allclose(K[0, 0], K[1, 1], rtol=1e-6)
    # A direction fovy/2 above the optical axis (OpenCV: -y is up) hits the top edge
    # y = 0; fovy/2 below hits the bottom edge y = H.
    t = np.tan(np.radians(fovy / 2))
    np.testing.assert_allclose(_project(K, [0.0, -t, 1.0]), [width / 2, 0.0], atol=1e-3)
    np.testing.assert_allclose(_project(K, [0.0, t, 1.0]), [width / 2, height], atol=1e-3)


def test_intrinsics_with_fovx():
    fovy, fovx, width, height = 40.0, 70.0, 300, 200
    K = np.asarray(intrinsics_from_fov(fovy, width, height, fovx_degrees=fovx))
    np.testing.assert_allclose(K[:2, 2], [width / 2, height / 2], atol=ATOL)
    tx = np.tan(np.radians(fovx / 2))
    ty = np.tan(np.radians(fovy / 2))
    np.testing.assert_allclose(_project(K, [tx, 0.0, 1.0]), [width, height / 2], atol=1e-3)
    np.testing.assert_allclose(_project(K, [-tx, 0.0, 1.0]), [0.0, height / 2], atol=1e-3)
    np.testing.assert_allclose(_project(K, [0.0, -ty, 1.0]), [width / 2, 0.0], atol=1e-3)
    # fx = (W/2) / tan(fovx/2), fy = (H/2) / tan(fovy/2), independently.
    np.testing.assert_allclose(K[0, 0], 150.0 / np.tan(np.radians(35.0)), rtol=1e-6)
    np.testing.assert_allclose(K[1, 1], 100.0 / np.tan(np.radians(20.0)), rtol=1e-6)


def test_intrinsics_default_square_pixels_cover_horizontal_fov():
    # Square pixels: horizontal half-angle is atan((W/2) / fy).
    K = np.asarray(intrinsics_from_fov(40.0, 400, 200))
    np.testing.assert_allclose(K[0, 0], K[1, 1], rtol=1e-6)
    tx = 200.0 / K[1, 1]
    np.testing.assert_allclose(_project(K, [tx, 0.0, 1.0]), [400.0, 100.0], atol=1e-3)


# ---------------------------------------------------------------- orbit_c2w


ORBIT_CASES = [(0.0, 0.0), (15.0, 0.0), (15.0, 90.0), (-30.0, 200.0), (60.0, -45.0),
               (89.0, 10.0), (-89.0, 123.0), (15.0, 315.0)]


@pytest.mark.parametrize("elev,azim", ORBIT_CASES)
@pytest.mark.parametrize("distance", [1.0, 3.0])
def test_orbit_c2w_position_and_frame(elev, azim, distance):
    c2w = np.asarray(orbit_c2w(elev, azim, distance), np.float64)
    assert c2w.shape == (4, 4)
    np.testing.assert_allclose(c2w[3], [0.0, 0.0, 0.0, 1.0])
    e, a = np.radians(elev), np.radians(azim)
    expected_pos = distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a),
                                        np.sin(e)])
    np.testing.assert_allclose(c2w[:3, 3], expected_pos, atol=ATOL)
    np.testing.assert_allclose(np.asarray(orbit_position(elev, azim, distance)),
                               expected_pos, atol=ATOL)

    rot = c2w[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=ATOL)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=ATOL)
    # Column 2 (= -forward) points from the origin (the look-at target) to the camera.
    np.testing.assert_allclose(rot[:, 2], expected_pos / distance, atol=ATOL)
    # Column 1 (up) has positive world z; column 0 (right) is horizontal.
    assert rot[2, 1] > 0.0
    np.testing.assert_allclose(rot[2, 0], 0.0, atol=ATOL)
    # Up is the world z axis projected orthogonally to the viewing direction.
    z = np.array([0.0, 0.0, 1.0])
    view = rot[:, 2]
    up_expected = z - view * view[2]
    up_expected /= np.linalg.norm(up_expected)
    np.testing.assert_allclose(rot[:, 1], up_expected, atol=1e-4)


def test_orbit_c2w_hand_derived_cases():
    # e=0, a=0: eye (d,0,0); forward = (-1,0,0); right = forward x z = (0,1,0);
    # up = right x forward = (0,0,1); column 2 = -forward = (1,0,0).
    expected = np.array([[0.0, 0.0, 1.0, 2.0],
                         [1.0, 0.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(orbit_c2w(0.0, 0.0, 2.0)), expected, atol=ATOL)

    # e=0, a=90: eye (0,d,0); forward = (0,-1,0); right = (0,-1,0) x z = (-1,0,0).
    expected = np.array([[-1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 3.0],
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(orbit_c2w(0.0, 90.0, 3.0)), expected, atol=ATOL)

    # e=30, a=0: eye d(c,0,s) with c=cos30, s=sin30; forward = -(c,0,s);
    # right = (0,1,0); up = right x forward = (-s,0,c); column 2 = (c,0,s).
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    expected = np.array([[0.0, -s, c, c],
                         [1.0, 0.0, 0.0, 0.0],
                         [0.0, c, s, s],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(orbit_c2w(30.0, 0.0, 1.0)), expected, atol=ATOL)

    # e=0, a=180: eye (-d,0,0); forward (1,0,0); right = (1,0,0) x z = (0,-1,0).
    expected = np.array([[0.0, 0.0, -1.0, -1.5],
                         [-1.0, 0.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(orbit_c2w(0.0, 180.0, 1.5)), expected, atol=ATOL)


def test_orbit_c2w_batched_matches_single():
    elev = np.array([0.0, 15.0, -20.0, 45.0])
    azim = np.array([10.0, 100.0, 190.0, 280.0])
    batched = np.asarray(orbit_c2w(elev, azim, 2.5))
    assert batched.shape == (4, 4, 4)
    for i in range(4):
        np.testing.assert_allclose(batched[i], np.asarray(orbit_c2w(elev[i], azim[i], 2.5)),
                                   atol=1e-6)
    # Scalar elevation broadcasts against azimuths.
    bcast = np.asarray(orbit_c2w(15.0, azim, 2.0))
    assert bcast.shape == (4, 4, 4)
    for i in range(4):
        np.testing.assert_allclose(bcast[i], np.asarray(orbit_c2w(15.0, azim[i], 2.0)),
                                   atol=1e-6)


# ---------------------------------------------------------------- c2w_to_viewmat


@pytest.mark.parametrize("elev,azim", ORBIT_CASES)
def test_viewmat_to_c2w_inverts_c2w_to_viewmat(elev, azim):
    c2w = orbit_c2w(elev, azim, 3.0)
    np.testing.assert_allclose(viewmat_to_c2w(c2w_to_viewmat(c2w)), c2w, atol=1e-5)


@pytest.mark.parametrize("elev,azim", ORBIT_CASES)
def test_viewmat_maps_points_as_opencv(elev, azim):
    distance = 3.0
    c2w = np.asarray(orbit_c2w(elev, azim, distance), np.float64)
    viewmat = np.asarray(c2w_to_viewmat(orbit_c2w(elev, azim, distance)), np.float64)
    assert viewmat.shape == (4, 4)
    np.testing.assert_allclose(viewmat[3], [0.0, 0.0, 0.0, 1.0])
    eye = c2w[:3, 3]
    right, up = c2w[:3, 0], c2w[:3, 1]
    # Camera centre -> camera-space origin.
    np.testing.assert_allclose(_apply(viewmat, eye), np.zeros(3), atol=1e-5)
    # Look-at target (world origin) -> straight ahead, +z forward at the orbit distance.
    np.testing.assert_allclose(_apply(viewmat, np.zeros(3)), [0.0, 0.0, distance],
                               atol=1e-5)
    # A point above the target (world +z) has negative camera y (image y points down)
    # for every elevation in (-90, 90).
    above = _apply(viewmat, [0.0, 0.0, 0.1])
    assert above[1] < -1e-4
    # A point offset along the camera's right has positive camera x, no y offset.
    right_pt = _apply(viewmat, 0.2 * right)
    np.testing.assert_allclose(right_pt, [0.2, 0.0, distance], atol=1e-5)
    up_pt = _apply(viewmat, 0.2 * up)
    np.testing.assert_allclose(up_pt, [0.0, -0.2, distance], atol=1e-5)
    # A point between the camera and the target is in front, closer.
    mid = _apply(viewmat, 0.5 * eye)
    np.testing.assert_allclose(mid, [0.0, 0.0, 0.5 * distance], atol=1e-5)


def test_viewmat_hand_derived_front_view():
    # Camera on +x axis at distance 2 looking at the origin, +z up.
    viewmat = np.asarray(c2w_to_viewmat(orbit_c2w(0.0, 0.0, 2.0)), np.float64)
    # World +y is the camera's right (derived above), world +z is image-up = -y_cv,
    # world -x is forward = +z_cv.
    expected = np.array([[0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, -1.0, 0.0],
                         [-1.0, 0.0, 0.0, 2.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(viewmat, expected, atol=ATOL)


@pytest.mark.parametrize("elev,azim", [(15.0, 0.0), (-10.0, 75.0), (40.0, 250.0)])
def test_world_origin_projects_to_image_centre(elev, azim):
    width, height = 256, 192
    K = np.asarray(intrinsics_from_fov(40.0, width, height))
    viewmat = np.asarray(c2w_to_viewmat(orbit_c2w(elev, azim, 3.0)))
    uv = _project(K, _apply(viewmat, np.zeros(3)))
    np.testing.assert_allclose(uv, [width / 2, height / 2], atol=1e-3)
    # A point above the origin lands in the upper half of the image (smaller row).
    uv_above = _project(K, _apply(viewmat, [0.0, 0.0, 0.3]))
    assert uv_above[1] < height / 2 - 1.0
    np.testing.assert_allclose(uv_above[0], width / 2, atol=1e-3)


def _random_rigid(rng, n):
    mats = []
    for _ in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        m = np.eye(4)
        m[:3, :3] = q
        m[:3, 3] = rng.normal(size=3) * 3.0
        mats.append(m)
    return np.stack(mats)


def test_rigid_inverse_matches_numpy_inverse():
    rng = np.random.default_rng(0)
    mats = _random_rigid(rng, 6).astype(np.float32)
    inv = np.asarray(rigid_inverse(mats))
    assert inv.shape == (6, 4, 4)
    np.testing.assert_allclose(inv, np.linalg.inv(mats.astype(np.float64)), atol=1e-5)
    # Batched [2, 3, 4, 4] and single [4, 4] inputs.
    inv2 = np.asarray(rigid_inverse(mats.reshape(2, 3, 4, 4)))
    np.testing.assert_allclose(inv2.reshape(6, 4, 4), inv, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rigid_inverse(mats[0])), inv[0], atol=1e-6)


def test_viewmat_is_inverse_of_opencv_c2w():
    elev = np.array([15.0, 15.0, -30.0, 60.0])
    azim = np.array([0.0, 90.0, 200.0, 333.0])
    c2w = np.asarray(orbit_c2w(elev, azim, 3.0), np.float64)
    viewmat = np.asarray(c2w_to_viewmat(orbit_c2w(elev, azim, 3.0)), np.float64)
    assert viewmat.shape == (4, 4, 4)
    # OpenGL -> OpenCV: flip the camera's y and z axes.
    c2w_cv = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
    for i in range(4):
        np.testing.assert_allclose(viewmat[i] @ c2w_cv[i], np.eye(4), atol=1e-5)
        np.testing.assert_allclose(viewmat[i], np.linalg.inv(c2w_cv[i]), atol=1e-5)


# ---------------------------------------------------------------- camera_vector


def test_camera_vector_matches_numpy_flattening():
    for elev, azim, dist in [(15.0, 0.0, 3.0), (-20.0, 135.0, 1.7), (50.0, 290.0, 0.4)]:
        c2w = np.asarray(orbit_c2w(elev, azim, dist), np.float64)
        expected = c2w.copy()
        expected[:3, 3] /= np.linalg.norm(expected[:3, 3])
        expected = expected.reshape(16)
        vec = np.asarray(camera_vector(orbit_c2w(elev, azim, dist)))
        assert vec.shape == (16,)
        np.testing.assert_allclose(vec, expected, atol=1e-6)
        # Row-major: entries 3, 7, 11 are the (unit) position; 12..15 the bottom row.
        e, a = np.radians(elev), np.radians(azim)
        np.testing.assert_allclose(
            vec[[3, 7, 11]], [np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)],
            atol=1e-6)
        np.testing.assert_allclose(vec[12:], [0.0, 0.0, 0.0, 1.0])


def test_camera_vector_on_arbitrary_matrix():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(4, 4))
    expected = m.copy()
    expected[:3, 3] /= np.linalg.norm(expected[:3, 3])
    np.testing.assert_allclose(np.asarray(camera_vector(m.astype(np.float32))),
                               expected.reshape(16), rtol=1e-5, atol=1e-6)


def test_camera_vector_invariant_to_distance():
    a = np.asarray(camera_vector(orbit_c2w(15.0, 37.0, 1.0)))
    b = np.asarray(camera_vector(orbit_c2w(15.0, 37.0, 3.0)))
    c = np.asarray(camera_vector(orbit_c2w(15.0, 37.0, 11.5)))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_camera_vector_batched():
    elev = np.full((2, 3), 15.0)
    azim = np.arange(6, dtype=np.float64).reshape(2, 3) * 47.0
    c2w = orbit_c2w(elev, azim, 3.0)
    assert c2w.shape == (2, 3, 4, 4)
    vec = np.asarray(camera_vector(c2w))
    assert vec.shape == (2, 3, 16)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(vec[i, j],
                                       np.asarray(camera_vector(c2w[i, j])), atol=1e-6)


# ---------------------------------------------------------------- orbit_cameras


def test_orbit_cameras_shapes_and_consistency():
    a0 = 23.0
    azim = a0 + np.array([0.0, 90.0, 180.0, 270.0])
    viewmats, ks, c2w = orbit_cameras(15.0, azim, distance=3.0, fovy_degrees=40.0,
                                      width=64, height=48)
    assert viewmats.shape == (4, 4, 4)
    assert ks.shape == (4, 3, 3)
    assert c2w.shape == (4, 4, 4)
    k_ref = np.asarray(intrinsics_from_fov(40.0, 64, 48))
    for i in range(4):
        np.testing.assert_allclose(np.asarray(ks[i]), k_ref)
        np.testing.assert_allclose(np.asarray(c2w[i]), np.asarray(orbit_c2w(15.0, azim[i], 3.0)),
                                   atol=1e-6)
        np.testing.assert_allclose(np.asarray(viewmats[i]) @ np.asarray(c2w[i])
                                   @ np.diag([1.0, -1.0, -1.0, 1.0]), np.eye(4), atol=1e-5)

    centres = np.asarray(c2w)[:, :3, 3].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 3.0, atol=1e-5)
    # All at the same height 3 sin(15 deg).
    np.testing.assert_allclose(centres[:, 2], 3.0 * np.sin(np.radians(15.0)), atol=1e-5)
    # Horizontal projections of consecutive views are 90 degrees apart (counter-clockwise
    # seen from +z), opposite views 180 degrees apart.
    horiz = centres[:, :2] / np.linalg.norm(centres[:, :2], axis=-1, keepdims=True)
    for i in range(4):
        j = (i + 1) % 4
        np.testing.assert_allclose(np.dot(horiz[i], horiz[j]), 0.0, atol=1e-5)
        cross_z = horiz[i, 0] * horiz[j, 1] - horiz[i, 1] * horiz[j, 0]
        np.testing.assert_allclose(cross_z, 1.0, atol=1e-5)
        np.testing.assert_allclose(np.dot(horiz[i], horiz[(i + 2) % 4]), -1.0, atol=1e-5)
    # At elevation 0 the camera centres themselves are 90 degrees apart.
    _, _, c2w0 = orbit_cameras(0.0, azim, distance=2.0, fovy_degrees=40.0, width=8,
                               height=8)
    p = np.asarray(c2w0)[:, :3, 3].astype(np.float64)
    for i in range(4):
        np.testing.assert_allclose(np.dot(p[i], p[(i + 1) % 4]), 0.0, atol=1e-5)


def test_orbit_cameras_scalar_broadcast():
    viewmats, ks, c2w = orbit_cameras(15.0, 30.0, distance=3.0, fovy_degrees=40.0,
                                      width=32, height=32)
    assert viewmats.shape == (1, 4, 4) and ks.shape == (1, 3, 3) and c2w.shape == (1, 4, 4)


# ---------------------------------------------------------------- look_at


def test_look_at_batched_matches_per_eye():
    rng = np.random.default_rng(2)
    eyes = rng.normal(size=(5, 3)) * 2.0
    eyes[:, 2] = np.clip(eyes[:, 2], -1.0, 1.0)  # keep away from the vertical
    target = np.array([0.1, -0.2, 0.3])
    batched = np.asarray(look_at(eyes, target))
    assert batched.shape == (5, 4, 4)
    for i in range(5):
        single = np.asarray(look_at(eyes[i], target))
        np.testing.assert_allclose(batched[i], single, atol=1e-6)
        # Column 2 = -forward = normalise(eye - target); position = eye.
        back = eyes[i] - target
        np.testing.assert_allclose(single[:3, 2], back / np.linalg.norm(back), atol=1e-5)
        np.testing.assert_allclose(single[:3, 3], eyes[i], atol=1e-6)
        rot = single[:3, :3].astype(np.float64)
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    # Nested batch [5, 1, 3] -> [5, 1, 4, 4].
    nested = np.asarray(look_at(eyes[:, None, :], target))
    assert nested.shape == (5, 1, 4, 4)
    np.testing.assert_allclose(nested[:, 0], batched, atol=1e-6)


def test_look_at_custom_up():
    # Eye on +z looking down at the origin with up = +y: forward (0,0,-1),
    # right = forward x up = (0,0,-1) x (0,1,0) = (1,0,0), up' = right x forward = (0,1,0).
    m = np.asarray(look_at([0.0, 0.0, 4.0], up=(0.0, 1.0, 0.0)))
    expected = np.array([[1.0, 0.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 4.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(m, expected, atol=ATOL)
