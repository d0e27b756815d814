"""Rotation conversions, weak-perspective projection and Procrustes alignment.

Every function here is a pure `jnp` function: it accepts any leading batch shape, can be jitted
and differentiated, and computes in the floating dtype of its input (float32 is what the project
uses; the small-angle thresholds are chosen for it).

Conventions used throughout the project (DESIGN.md section 3):

* Axis-angle vectors are `[..., 3]`, the direction is the axis and the norm the angle in radians.
* Rotation matrices act on column vectors: `x_rotated = R @ x`.
* Quaternions are `[..., 4]` in (w, x, y, z) order, scalar first. scipy uses (x, y, z, w).
* 6D rotations use SPIN/VIBE's layout, see `rot6d_to_matrix`.
* The weak-perspective camera is VIBE's `cam = [s, tx, ty]`, see `weak_perspective_project`.

This is the one place where rotation conversions live; other modules import from here.
"""

import jax.numpy as jnp

# Below these squared magnitudes the closed forms lose precision in float32 (and their autodiff
# gradients turn to 0/0), so truncated Taylor series are used instead. The truncation error at the
# threshold is far below float32 resolution.
_SMALL_ANGLE_SQ = 1e-2
_SMALL_SIN_SQ = 1e-4
_NORM_EPS = 1e-8
_PROCRUSTES_EPS = 1e-12


def _sinc_of_sqrt(x_sq: jnp.ndarray) -> jnp.ndarray:
    """sin(x) / x as a function of x**2, exact and with finite gradients at x = 0."""
    small = x_sq < _SMALL_ANGLE_SQ
    # The double-where keeps the discarded branch finite, otherwise its NaN gradient leaks through.
    safe_x = jnp.sqrt(jnp.where(small, 1.0, x_sq))
    taylor = 1.0 - x_sq / 6.0 * (1.0 - x_sq / 20.0 * (1.0 - x_sq / 42.0))
    return jnp.where(small, taylor, jnp.sin(safe_x) / safe_x)


def _cos_of_sqrt(x_sq: jnp.ndarray) -> jnp.ndarray:
    """cos(x) as a function of x**2, with finite gradients at x = 0."""
    small = x_sq < _SMALL_ANGLE_SQ
    safe_x = jnp.sqrt(jnp.where(small, 1.0, x_sq))
    taylor = 1.0 - x_sq / 2.0 * (1.0 - x_sq / 12.0 * (1.0 - x_sq / 30.0))
    return jnp.where(small, taylor, jnp.cos(safe_x))


def _skew(v: jnp.ndarray) -> jnp.ndarray:
    """Cross-product matrix [v]_x of `v` [..., 3] -> [..., 3, 3]."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    rows = [
        jnp.stack([zero, -z, y], axis=-1),
        jnp.stack([z, zero, -x], axis=-1),
        jnp.stack([-y, x, zero], axis=-1),
    ]
    return jnp.stack(rows, axis=-2)


def _normalize(v: jnp.ndarray, eps: float = _NORM_EPS) -> jnp.ndarray:
    """v / |v| over the last axis; eps inside the root keeps value and gradient finite at v = 0."""
    return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + eps * eps)


def axis_angle_to_matrix(aa: jnp.ndarray) -> jnp.ndarray:
    """Rodrigues' formula: axis-angle to rotation matrix.

    Uses R = I + A [aa]_x + B [aa]_x^2 with A = sin(t)/t and B = (1 - cos t)/t^2, t = |aa|.
    B is evaluated as sinc(t/2)^2 / 2, which has no cancellation, and both factors switch to
    Taylor series for small t, so the result and its gradient are exact and finite at t = 0.

    Args:
        aa: axis-angle vectors, `[..., 3]`.

    Returns:
        Rotation matrices, `[..., 3, 3]`.
    """
    angle_sq = jnp.sum(aa * aa, axis=-1)
    a = _sinc_of_sqrt(angle_sq)[..., None, None]
    b = 0.5 * jnp.square(_sinc_of_sqrt(angle_sq / 4.0))[..., None, None]
    k = _skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return eye + a * k + b * (k @ k)


def axis_angle_to_quaternion(aa: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle to unit quaternion (w, x, y, z) with w >= 0 for angles up to pi.

    Args:
        aa: axis-angle vectors, `[..., 3]`.

    Returns:
        Unit quaternions, `[..., 4]`, scalar first.
    """
    half_angle_sq = jnp.sum(aa * aa, axis=-1) / 4.0
    w = _cos_of_sqrt(half_angle_sq)
    xyz = 0.5 * _sinc_of_sqrt(half_angle_sq)[..., None] * aa
    return jnp.concatenate([w[..., None], xyz], axis=-1)


def quaternion_to_axis_angle(q: jnp.ndarray) -> jnp.ndarray:
    """Quaternion (w, x, y, z) to axis-angle with angle in [0, pi].

    q and -q give the same result (the sign is fixed so that w >= 0). The input need not be unit
    norm. Stable at the identity (Taylor series of atan) and at pi (w -> 0).

    Args:
        q: quaternions, `[..., 4]`, scalar first.

    Returns:
        Axis-angle vectors, `[..., 3]`.
    """
    q = jnp.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    sin_sq = jnp.sum(xyz * xyz, axis=-1)
    small = sin_sq < _SMALL_SIN_SQ * jnp.square(w)
    # angle / sin(angle/2) = 2 atan(s / w) / s with s = |xyz|; for small s/w its series is
    # (2 / w) (1 - r^2/3 + r^4/5), r = s / w, which avoids 0/0 at the identity.
    safe_sin = jnp.sqrt(jnp.where(small, 1.0, sin_sq))
    safe_w = jnp.where(small, w, 1.0)
    ratio_sq = sin_sq / jnp.square(safe_w)
    taylor = 2.0 / safe_w * (1.0 - ratio_sq / 3.0 + jnp.square(ratio_sq) / 5.0)
    exact = 2.0 * jnp.arctan2(safe_sin, w) / safe_sin
    return jnp.where(small, taylor, exact)[..., None] * xyz


def quaternion_to_matrix(q: jnp.ndarray) -> jnp.ndarray:
    """Quaternion (w, x, y, z) to rotation matrix; the input is normalised implicitly.

    Args:
        q: quaternions, `[..., 4]`, scalar first, any non-zero norm.

    Returns:
        Rotation matrices, `[..., 3, 3]`.
    """
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    # Dividing by |q|^2 here normalises without a square root.
    s = 2.0 / (jnp.sum(q * q, axis=-1) + _NORM_EPS * _NORM_EPS)
    rows = [
        jnp.stack([1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)], axis=-1),
        jnp.stack([s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)], axis=-1),
        jnp.stack([s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)], axis=-1),
    ]
    return jnp.stack(rows, axis=-2)


def matrix_to_quaternion(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix to unit quaternion (w, x, y, z), Shepperd's method, w >= 0.

    Each of the four components can be recovered from the diagonal, the others then follow from
    the off-diagonal terms divided by it. Shepperd's rule picks the largest one, whose square is
    at least 1/4, so no division by a small number happens for any rotation.

    Args:
        rotmat: rotation matrices, `[..., 3, 3]`.

    Returns:
        Unit quaternions, `[..., 4]`, scalar first, sign chosen so that w >= 0.
    """
    r = rotmat
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # 4w^2, 4x^2, 4y^2, 4z^2 computed from the diagonal.
    four_sq = jnp.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22],
        axis=-1,
    )
    # The chosen component has 4q^2 >= 1; the clamp only keeps the branches that are thrown away
    # (and their gradients) finite.
    two_q = jnp.sqrt(jnp.maximum(four_sq, 0.1))
    d_zy, d_xz, d_yx = (
        r[..., 2, 1] - r[..., 1, 2],
        r[..., 0, 2] - r[..., 2, 0],
        r[..., 1, 0] - r[..., 0, 1],
    )
    s_xy, s_xz, s_yz = (
        r[..., 1, 0] + r[..., 0, 1],
        r[..., 0, 2] + r[..., 2, 0],
        r[..., 2, 1] + r[..., 1, 2],
    )
    candidates = jnp.stack(
        [
            jnp.stack([four_sq[..., 0], d_zy, d_xz, d_yx], axis=-1),
            jnp.stack([d_zy, four_sq[..., 1], s_xy, s_xz], axis=-1),
            jnp.stack([d_xz, s_xy, four_sq[..., 2], s_yz], axis=-1),
            jnp.stack([d_yx, s_xz, s_yz, four_sq[..., 3]], axis=-1),
        ],
        axis=-2,
    ) / (2.0 * two_q[..., :, None])
    best = jnp.argmax(four_sq, axis=-1)
    q = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = jnp.where(q[..., :1] < 0, -q, q)
    return _normalize(q)


def matrix_to_axis_angle(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix to axis-angle with angle in [0, pi], stable near 0 and near pi.

    Goes through `matrix_to_quaternion`: near pi the axis then comes from the diagonal of R (the
    symmetric part) and the sign from the skew part, instead of from the vanishing skew part alone.

    Args:
        rotmat: rotation matrices, `[..., 3, 3]`.

    Returns:
        Axis-angle vectors, `[..., 3]`.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(rotmat))


def rot6d_to_matrix(x: jnp.ndarray) -> jnp.ndarray:
    """6D rotation representation (Zhou et al. 2019) to rotation matrix, SPIN/VIBE layout.

    Layout: the 6 numbers are a row-major `(3, 2)` matrix, `x.reshape(..., 3, 2)`, whose two columns
    `a1 = x[..., 0::2]` and `a2 = x[..., 1::2]` are the first two columns of R before Gram-Schmidt:

        b1 = normalize(a1)
        b2 = normalize(a2 - (b1 . a2) b1)
        b3 = b1 x b2
        R  = [b1 | b2 | b3]   (columns)

    Reading the numbers as two consecutive 3-vectors (`x[..., :3]`, `x[..., 3:]`, the other common
    layout) gives a valid but different rotation for every input, and silently breaks the
    initialisation from VIBE's `smpl_mean_params.npz`, which stores its mean pose in this layout.

    Args:
        x: 6D rotations, `[..., 6]`.

    Returns:
        Rotation matrices, `[..., 3, 3]`; gradients stay finite for degenerate inputs.
    """
    a1, a2 = x[..., 0::2], x[..., 1::2]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix to 6D in SPIN/VIBE's layout (first two columns, flattened row-major).

    Args:
        rotmat: rotation matrices, `[..., 3, 3]`.

    Returns:
        6D rotations, `[..., 6]`, the inverse of `rot6d_to_matrix` on rotation matrices.
    """
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def pose72_to_rotmats(pose: jnp.ndarray) -> jnp.ndarray:
    """SMPL pose as 24 stacked axis-angles to rotation matrices.

    Args:
        pose: `[..., 72]`, joint j in `pose[..., 3j:3j+3]`.

    Returns:
        `[..., 24, 3, 3]`.
    """
    return axis_angle_to_matrix(pose.reshape(*pose.shape[:-1], 24, 3))


def rotmats_to_pose72(rotmats: jnp.ndarray) -> jnp.ndarray:
    """SMPL rotation matrices to the 72-number axis-angle pose.

    Args:
        rotmats: `[..., 24, 3, 3]`.

    Returns:
        `[..., 72]`.
    """
    aa = matrix_to_axis_angle(rotmats)
    return aa.reshape(*aa.shape[:-2], 72)


def weak_perspective_project(points: jnp.ndarray, cam: jnp.ndarray) -> jnp.ndarray:
    """Weak-perspective projection in VIBE's convention, `x = s * (X[..., :2] + t)`.

    The LMR paper's eq. (1) writes `x = s * Pi(X) + t'`; that is the same camera with `t' = s * t`.
    Outputs are in the normalised crop frame, [-1, 1] across the (224-pixel) crop.

    Args:
        points: 3D points, `[..., J, 3]`.
        cam: cameras `[s, tx, ty]`, `[..., 3]`, with the same leading shape as `points`.

    Returns:
        2D points, `[..., J, 2]`.
    """
    scale = cam[..., None, 0:1]
    trans = cam[..., None, 1:3]
    return scale * (points[..., :2] + trans)


def procrustes_align(
    pred: jnp.ndarray, gt: jnp.ndarray, weights: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Aligns `pred` onto `gt` with the best similarity transform, separately for each sample.

    Solves min over (s, R, t) of sum_j w_j |s R p_j + t - g_j|^2 with R a proper rotation (det +1):
    with M = sum_j w_j g_j p_j^T (centred points) = U S V^T, R = U D V^T where
    D = diag(1, 1, det(U V^T)) excludes reflections, and s = tr(D S) / sum_j w_j |p_j|^2.
    Meant for evaluation (PA-MPJPE); the SVD gradient is undefined at repeated singular values.

    Args:
        pred: points to align, `[..., J, 3]`.
        gt: target points, `[..., J, 3]`.
        weights: optional non-negative joint weights, `[..., J]` (0 masks a joint out). None means
            all joints count equally.

    Returns:
        `pred` after the similarity transform, `[..., J, 3]`.
    """
    if weights is None:
        weights = jnp.ones(pred.shape[:-1], dtype=pred.dtype)
    w = jnp.broadcast_to(weights, pred.shape[:-1])[..., None].astype(pred.dtype)
    w_sum = jnp.maximum(jnp.sum(w, axis=-2, keepdims=True), _PROCRUSTES_EPS)
    mu_pred = jnp.sum(w * pred, axis=-2, keepdims=True) / w_sum
    mu_gt = jnp.sum(w * gt, axis=-2, keepdims=True) / w_sum
    p, g = pred - mu_pred, gt - mu_gt

    cross_cov = jnp.swapaxes(w * g, -1, -2) @ p
    u, sing, vt = jnp.linalg.svd(cross_cov)
    det_sign = jnp.sign(jnp.linalg.det(u @ vt))
    # sign(0) would zero a column; det(U V^T) is +-1 so 0 only arises from a degenerate input.
    det_sign = jnp.where(det_sign == 0, 1.0, det_sign)
    d = jnp.concatenate([jnp.ones_like(sing[..., :2]), det_sign[..., None]], axis=-1)
    rot = (u * d[..., None, :]) @ vt
    var_pred = jnp.sum(w * p * p, axis=(-2, -1))
    scale = jnp.sum(d * sing, axis=-1) / jnp.maximum(var_pred, _PROCRUSTES_EPS)
    return scale[..., None, None] * (p @ jnp.swapaxes(rot, -1, -2)) + mu_gt
