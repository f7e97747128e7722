"""Synthetic head-CT phantoms: test data and training data for the reference model.

A phantom is a float32 volume in Hounsfield units indexed [i, j, k] = [column, row, slice] like
every volume in this project: axis 0 runs patient right -> left, axis 1 anterior -> posterior and
axis 2 inferior -> superior (DICOM LPS with an axial identity orientation). Anatomy is defined in
millimetres, so the head has the same physical size whatever the voxel grid; a small grid with a
fine spacing shows only the middle of the head.

These phantoms are crude on purpose. They are not a model of real anatomy or of real
haemorrhage, and a model trained on them is a demonstration, never a clinical device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
CSF_HU = 5.0
HU_MIN = -1024.0
HU_MAX = 3071.0

# Default head semi-axes in mm (left-right, anterior-posterior, inferior-superior): 150 x 190 x 140.
HEAD_SEMI_AXES_MM = (75.0, 95.0, 70.0)


@dataclass(frozen=True)
class Lesion:
    """Where the synthetic haemorrhage is: centre in voxel coordinates (i, j, k) of the volume.

    ``box`` and ``box_mask`` say which voxels were painted (before blur and noise): the
    segmentation ground truth, see `Phantom.lesion_mask`.
    """

    centre_voxel: tuple[float, float, float]
    radius_mm: float
    density_hu: float
    box: tuple[slice, slice, slice] | None = field(default=None, repr=False, compare=False)
    box_mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Phantom:
    """A synthetic head CT: the HU volume, its voxel spacing in mm and the lesion, if any."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    lesion: Lesion | None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.hu.shape[0]), int(self.hu.shape[1]), int(self.hu.shape[2]))

    @property
    def lesion_mask(self) -> np.ndarray:
        """The painted lesion voxels as a boolean volume (all False without a lesion)."""
        mask = np.zeros(self.shape, dtype=bool)
        if self.lesion is not None and self.lesion.box is not None:
            assert self.lesion.box_mask is not None
            mask[self.lesion.box] = self.lesion.box_mask
        return mask

    @property
    def affine_lps(self) -> np.ndarray:
        """The 4x4 voxel -> LPS affine of an axial acquisition centred on the origin."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = (
            -(np.asarray(self.shape, dtype=float) - 1.0) / 2.0 * np.asarray(self.spacing)
        )
        return affine


def random_grid(
    rng: np.random.Generator,
    in_plane: tuple[int, int] = (128, 256),
    slices: tuple[int, int] = (20, 60),
    pixel_spacing_mm: tuple[float, float] = (0.5, 1.2),
    slice_spacing_mm: tuple[float, float] = (2.5, 6.0),
    min_fov_mm: float = 200.0,
    max_fov_mm: float = 250.0,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A plausible (shape, spacing) for an axial head CT.

    The in-plane spacing is drawn from ``pixel_spacing_mm`` but widened where needed so the field
    of view is between ``min_fov_mm`` and ``max_fov_mm``: a scanner fits the field of view to the
    head, so a 128-pixel matrix means coarse pixels, not a cropped head.
    """
    n = int(rng.integers(in_plane[0], in_plane[1] + 1))
    lo = max(pixel_spacing_mm[0], min_fov_mm / n)
    hi = max(lo, min(pixel_spacing_mm[1], max_fov_mm / n), min_fov_mm / n)
    if hi <= lo:
        hi = max_fov_mm / n
    pixel = float(rng.uniform(lo, max(lo, hi)))
    nz = int(rng.integers(slices[0], slices[1] + 1))
    dz = float(rng.uniform(*slice_spacing_mm))
    return (n, n, nz), (pixel, pixel, dz)


def head_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    lesion: bool,
    *,
    lesion_radius_mm: float | None = None,
    lesion_hu: float | None = None,
    noise_sigma_hu: float | None = None,
    max_rotation_deg: float = 6.0,
) -> Phantom:
    """A synthetic head CT on the given grid, with or without a hyperdense intraparenchymal lesion.

    Everything not given is drawn from ``rng``: head size (about 150 x 190 x 140 mm), position,
    small rotations, skull thickness and density, grey/white matter texture, the ventricles,
    the lesion (radius 3-20 mm, 50-90 HU, irregular) and gaussian noise (sigma 2-8 HU).
    The same generator state gives the same phantom.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing!r}")
    if lesion_radius_mm is not None and not 1.0 <= lesion_radius_mm <= 40.0:
        raise ValueError(f"lesion_radius_mm must be within 1-40 mm, got {lesion_radius_mm}")
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    sp = np.asarray(spacing, dtype=np.float64)

    semi = np.asarray(HEAD_SEMI_AXES_MM) * rng.uniform(0.92, 1.08, size=3)
    scalp = rng.uniform(3.0, 6.0)
    skull = rng.uniform(4.0, 8.0)
    sub_csf = rng.uniform(1.0, 2.5)
    cortex = rng.uniform(2.5, 4.0)
    bone_hu = rng.uniform(900.0, 1500.0)
    diploe_hu = rng.uniform(500.0, 750.0)
    grey_hu = rng.uniform(34.0, 40.0)
    white_hu = rng.uniform(24.0, 30.0)
    extent = (np.asarray(shape) - 1.0) * sp
    # Centre in grid mm: jitter in-plane; along z keep the brain in the slab.
    half_z = extent[2] / 2.0
    z_room = max(0.0, half_z - semi[2]) + min(half_z, semi[2]) * 0.25
    centre = np.array(
        [rng.uniform(-6.0, 6.0), rng.uniform(-8.0, 8.0), rng.uniform(-1.0, 1.0) * min(z_room, 12.0)]
    )
    rot = _rotation(rng, np.deg2rad(max_rotation_deg))

    axes = [
        (np.arange(n) - (n - 1) / 2.0) * s - c for n, s, c in zip(shape, sp, centre, strict=True)
    ]
    gx = axes[0].astype(np.float32)[:, None, None]
    gy = axes[1].astype(np.float32)[None, :, None]
    gz = axes[2].astype(np.float32)[None, None, :]
    # Head-local coordinates u = R^T p (rows of R^T are the columns of R).
    r = rot.astype(np.float32)
    u = r[0, 0] * gx + r[1, 0] * gy + r[2, 0] * gz
    v = r[0, 1] * gx + r[1, 1] * gy + r[2, 1] * gz
    w = r[0, 2] * gx + r[1, 2] * gy + r[2, 2] * gz

    depth = _ellipsoid_depth(u, v, w, semi)
    brain_depth0 = scalp + skull + sub_csf

    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[depth >= 0] = SOFT_TISSUE_HU
    bone = (depth >= scalp) & (depth < scalp + skull)
    # Diploe: a softer middle layer of the skull.
    rel = (depth - scalp) / skull
    hu[bone] = np.where(np.abs(rel[bone] - 0.5) < 0.2, diploe_hu, bone_hu)
    hu[(depth >= scalp + skull) & (depth < brain_depth0)] = CSF_HU
    brain = depth >= brain_depth0
    hu[brain] = white_hu
    hu[brain & (depth < brain_depth0 + cortex)] = grey_hu
    # Low-frequency grey/white texture, separable so it costs one broadcast product.
    hu += np.where(brain, _texture(rng, axes, amplitude=2.5), np.float32(0.0))

    _paint_deep_structures(rng, hu, axes, u, v, w, semi, grey_hu)

    lesion_info = None
    if lesion:
        lesion_info = _paint_lesion(
            rng, hu, axes, sp, centre, rot, semi, brain_depth0, shape, lesion_radius_mm, lesion_hu
        )

    sigma_mm = (rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9), 0.0)
    sigma_vox = [sigma_mm[0] / sp[0], sigma_mm[1] / sp[1], 0.35]
    hu = _gaussian_smooth(hu, sigma_vox)
    sigma = noise_sigma_hu if noise_sigma_hu is not None else rng.uniform(2.0, 8.0)
    hu += rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return Phantom(hu=hu, spacing=(float(sp[0]), float(sp[1]), float(sp[2])), lesion=lesion_info)


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A small random rotation matrix (columns: head-local axes in grid coordinates)."""
    ax, ay, az = rng.uniform(-max_angle, max_angle, size=3)
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid_depth(u: np.ndarray, v: np.ndarray, w: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Approximate distance in mm inside an ellipsoid surface (negative outside)."""
    a, b, c = (np.float32(x) for x in semi)
    qu, qv, qw = u / a, v / b, w / c
    q = np.sqrt(qu * qu + qv * qv + qw * qw)
    grad = np.sqrt((qu / a) ** 2 + (qv / b) ** 2 + (qw / c) ** 2)
    # First-order distance (1 - q) / |grad q| with |grad q| = grad / q.
    return (1.0 - q) * q / np.maximum(grad, np.float32(1e-6))


def _texture(rng: np.random.Generator, axes: list[np.ndarray], amplitude: float) -> np.ndarray:
    out = np.zeros((axes[0].size, axes[1].size, axes[2].size), dtype=np.float32)
    for _ in range(3):
        waves = []
        for ax in axes:
            wavelength = rng.uniform(25.0, 70.0)
            waves.append(np.cos(2 * np.pi * ax / wavelength + rng.uniform(0, 2 * np.pi)))
        amp = np.float32(amplitude * rng.uniform(0.3, 1.0))
        out += amp * (
            waves[0].astype(np.float32)[:, None, None]
            * waves[1].astype(np.float32)[None, :, None]
            * waves[2].astype(np.float32)[None, None, :]
        )
    return out


def _box(
    axes: list[np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> tuple[slice, slice, slice] | None:
    """Index ranges of the grid whose mm coordinates fall within [lo, hi] on every axis."""
    out = []
    for ax, a, b in zip(axes, lo, hi, strict=True):
        idx = np.nonzero((ax >= a) & (ax <= b))[0]
        if idx.size == 0:
            return None
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return out[0], out[1], out[2]


def _paint_deep_structures(
    rng: np.random.Generator,
    hu: np.ndarray,
    axes: list[np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    semi: np.ndarray,
    grey_hu: float,
) -> None:
    """Basal ganglia (grey) and CSF ventricles: butterfly-shaped lateral horns, a slit third."""
    half = np.array([45.0, 50.0, 40.0])
    box = _box(axes, -half - 10.0, half + 10.0)
    if box is None:
        return
    bu, bv, bw = np.broadcast_arrays(u, v, w)
    bu, bv, bw = bu[box], bv[box], bw[box]
    sub = hu[box]
    scale = semi / np.asarray(HEAD_SEMI_AXES_MM)
    nuclei_hu = grey_hu - rng.uniform(0.0, 3.0)
    for side in (-1.0, 1.0):
        ctr = np.array([side * 18.0, 2.0, 2.0]) * scale
        sub[_in_ellipsoid(bu, bv, bw, ctr, np.array([8.0, 16.0, 10.0]), side * 0.2)] = nuclei_hu
    width = rng.uniform(0.7, 1.4)
    for side in (-1.0, 1.0):
        # Body of the lateral ventricle, angled outwards towards the front: the "butterfly".
        ctr = np.array([side * 8.0, -2.0, 14.0]) * scale
        axes_mm = np.array([4.5 * width, 26.0, 8.0])
        sub[_in_ellipsoid(bu, bv, bw, ctr, axes_mm, -side * 0.3)] = CSF_HU
        horn = np.array([side * 13.0, -18.0, 12.0]) * scale
        sub[_in_ellipsoid(bu, bv, bw, horn, np.array([5.0 * width, 9.0, 7.0]), -side * 0.6)] = (
            CSF_HU
        )
    third = np.array([0.0, 2.0, 0.0]) * scale
    sub[_in_ellipsoid(bu, bv, bw, third, np.array([1.5 * width, 12.0, 8.0]), 0.0)] = CSF_HU


def _in_ellipsoid(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, ctr: np.ndarray, semi: np.ndarray, yaw: float
) -> np.ndarray:
    cu, cv = u - np.float32(ctr[0]), v - np.float32(ctr[1])
    cy, sy = np.float32(np.cos(yaw)), np.float32(np.sin(yaw))
    ru = cy * cu + sy * cv
    rv = -sy * cu + cy * cv
    rw = w - np.float32(ctr[2])
    return (ru / semi[0]) ** 2 + (rv / semi[1]) ** 2 + (rw / semi[2]) ** 2 <= 1.0


def _paint_lesion(
    rng: np.random.Generator,
    hu: np.ndarray,
    axes: list[np.ndarray],
    sp: np.ndarray,
    centre: np.ndarray,
    rot: np.ndarray,
    semi: np.ndarray,
    brain_depth0: float,
    shape: tuple[int, int, int],
    radius_mm: float | None,
    density_hu: float | None,
) -> Lesion:
    """Paint an irregular hyperdense blob wholly inside the brain and within the grid."""
    radius = float(radius_mm) if radius_mm is not None else float(rng.uniform(3.0, 20.0))
    density = float(density_hu) if density_hu is not None else float(rng.uniform(50.0, 90.0))
    lo = np.array([ax[0] for ax in axes])
    hi = np.array([ax[-1] for ax in axes])
    brain_semi = semi - brain_depth0
    for attempt in range(400):
        if attempt and attempt % 100 == 0:
            radius = max(3.0, radius * 0.7)
        # Uniform point in the brain ellipsoid, in head-local mm.
        d = rng.standard_normal(3)
        local = d / np.linalg.norm(d) * rng.uniform(0.0, 1.0) ** (1 / 3) * brain_semi
        q = np.sqrt(np.sum((local / brain_semi) ** 2))
        depth_inside = (1.0 - q) * float(np.min(brain_semi))
        if depth_inside < radius + 1.0:
            continue
        grid_mm = rot @ local  # grid mm relative to the head centre
        margin = np.minimum(radius, np.asarray(sp) * 1.5)
        if np.all(grid_mm >= lo + margin) and np.all(grid_mm <= hi - margin):
            break
    else:
        # The grid holds too little brain for the requested lesion: put a small one at the
        # brain point nearest the grid centre.
        radius = 3.0
        grid_mm = np.clip(np.zeros(3), lo, hi)
    box = _box(axes, grid_mm - radius - 1.0, grid_mm + radius + 1.0)
    assert box is not None
    bx = (axes[0][box[0]] - grid_mm[0]).astype(np.float32)[:, None, None]
    by = (axes[1][box[1]] - grid_mm[1]).astype(np.float32)[None, :, None]
    bz = (axes[2][box[2]] - grid_mm[2]).astype(np.float32)[None, None, :]
    mask = np.zeros((bx.shape[0], by.shape[1], bz.shape[2]), dtype=bool)
    core = radius * rng.uniform(0.6, 0.85)
    mask |= bx * bx + by * by + bz * bz <= core * core
    for _ in range(int(rng.integers(2, 6))):
        d = rng.standard_normal(3)
        off = d / np.linalg.norm(d) * radius * rng.uniform(0.2, 0.5)
        rad = max(0.5, min(radius - float(np.linalg.norm(off)), radius * rng.uniform(0.35, 0.6)))
        mask |= (bx - off[0]) ** 2 + (by - off[1]) ** 2 + (bz - off[2]) ** 2 <= rad * rad
    sub = hu[box]
    inside = mask & (sub > 0.0) & (sub < 60.0)  # brain or CSF, never bone or scalp air
    sub[inside] = density + rng.normal(0.0, 2.0, size=int(inside.sum())).astype(np.float32)
    voxel = (grid_mm + centre) / sp + (np.asarray(shape) - 1.0) / 2.0
    return Lesion(
        centre_voxel=(float(voxel[0]), float(voxel[1]), float(voxel[2])),
        radius_mm=radius,
        density_hu=density,
        box=box,
        box_mask=inside.copy(),
    )


def _gaussian_smooth(volume: np.ndarray, sigma_vox: list[float]) -> np.ndarray:
    """Separable gaussian blur (partial volume), edges replicated."""
    out = volume
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.2:
            continue
        radius = min(3, int(np.ceil(2.5 * sigma)))
        taps = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (taps / sigma) ** 2)
        kernel = (kernel / kernel.sum()).astype(np.float32)
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for t, weight in enumerate(kernel):
            acc += weight * np.take(padded, np.arange(t, t + n), axis=axis)
        out = acc
    return out
