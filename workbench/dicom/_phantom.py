"""Pixel content of the synthetic CT phantom: anatomy, lesion, reader masks, scanner.

Pure numpy/scipy on ``(z, y, x)`` arrays; no DICOM here. All random draws come
from the generator passed in, so one seed gives one phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Nominal attenuation in HU of the phantom's tissues.
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 50.0
VISCERA_HU = 35.0
CSF_HU = 15.0
CANCELLOUS_HU = 230.0
CORTICAL_HU = 800.0
RIB_HU = 550.0
DISC_HU = 85.0
AORTA_HU = 160.0
GAS_HU = -900.0


@dataclass(frozen=True, slots=True)
class Grid:
    """Voxel grid of one phantom."""

    n_slices: int
    matrix: int
    pixel_spacing: float
    slice_spacing: float

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates in mm relative to the grid centre, broadcastable."""
        half = (self.matrix - 1) / 2.0
        xy = (np.arange(self.matrix, dtype=np.float32) - half) * np.float32(self.pixel_spacing)
        z = np.arange(self.n_slices, dtype=np.float32) * np.float32(self.slice_spacing)
        return z[:, None, None], xy[None, :, None], xy[None, None, :]


@dataclass(frozen=True, slots=True)
class LesionShape:
    """An ellipsoid with low-frequency lobulation, in mm (grid coordinates)."""

    center_zyx: tuple[float, float, float]
    radii_zyx: tuple[float, float, float]
    lobulation: float
    lobe_directions: tuple[tuple[float, float, float], ...]
    lobe_frequencies: tuple[float, ...]
    lobe_phases: tuple[float, ...]


def ellipse(
    y: np.ndarray,
    x: np.ndarray,
    cy: float,
    cx: float,
    ry: float | np.ndarray,
    rx: float | np.ndarray,
) -> np.ndarray:
    """Boolean inside-mask of an axis-aligned ellipse (broadcasts over z)."""
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def anatomy(
    grid: Grid, rng: np.random.Generator, *, habitus: float, liver_hu: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Build the noise-free HU volume of an abdomen-like phantom.

    Returns the volume ``(z, y, x)`` float32 and the liver ellipse
    ``(cy, cx, ry, rx)`` in mm, where lesions are placed.
    """
    z, y, x = grid.coordinates()
    fov = grid.matrix * grid.pixel_spacing
    length = grid.n_slices * grid.slice_spacing
    phase = float(rng.uniform(0, 2 * np.pi))
    breathe = 1.0 + 0.04 * np.sin(2 * np.pi * z / max(length, 1.0) + phase)
    rx_body = 0.44 * fov * habitus * breathe
    ry_body = 0.31 * fov * habitus * breathe
    cy, cx = 0.03 * fov, 0.0
    fat = np.float32(float(rng.uniform(0.035, 0.09)) * fov * habitus)

    vol = np.full((grid.n_slices, grid.matrix, grid.matrix), AIR_HU, dtype=np.float32)
    body = ellipse(y, x, cy, cx, ry_body, rx_body)
    vol[body] = FAT_HU
    wall = ellipse(y, x, cy, cx, ry_body - fat, rx_body - fat)
    vol[wall] = MUSCLE_HU
    inner_ry, inner_rx = ry_body - fat - 0.02 * fov, rx_body - fat - 0.02 * fov
    viscera = ellipse(y, x, cy, cx, inner_ry, inner_rx)
    vol[viscera] = VISCERA_HU

    # Liver on the patient's right (image left, -x in LPS), anterior-lateral.
    ry_body0, rx_body0 = 0.31 * fov * habitus, 0.44 * fov * habitus
    liver = (cy - 0.12 * ry_body0, cx - 0.38 * rx_body0, 0.5 * ry_body0, 0.42 * rx_body0)
    vol[ellipse(y, x, *liver) & viscera] = liver_hu

    # Bowel gas pockets.
    for _ in range(int(rng.integers(1, 4))):
        gy = cy - float(rng.uniform(0.1, 0.5)) * ry_body0
        gx = cx + float(rng.uniform(0.05, 0.5)) * rx_body0
        gz = float(rng.uniform(0.1, 0.9)) * length
        r = float(rng.uniform(0.02, 0.05)) * fov
        gas = ((z - gz) / (2 * r)) ** 2 + ((y - gy) / r) ** 2 + ((x - gx) / (1.3 * r)) ** 2 <= 1
        vol[gas & viscera] = GAS_HU

    # Aorta, anterior-left of the spine.
    spine_cy = cy + 0.62 * ry_body0
    r_vert = 0.17 * ry_body0
    aorta = ellipse(y, x, spine_cy - 1.45 * r_vert, cx + 0.7 * r_vert, 0.5 * r_vert, 0.5 * r_vert)
    vol[np.broadcast_to(aorta, vol.shape)] = AORTA_HU

    # Paraspinal muscles.
    for side in (-1.0, 1.0):
        muscle = ellipse(y, x, spine_cy + 0.9 * r_vert, cx + side * 1.9 * r_vert, r_vert, r_vert)
        vol[np.broadcast_to(muscle, vol.shape)] = MUSCLE_HU

    # Vertebrae with intervertebral discs every ~30 mm, canal and posterior ring.
    period, disc = 30.0, 6.0
    z_phase = float(rng.uniform(0, period))
    in_disc = ((z + z_phase) % period) < disc
    vert_outer = ellipse(y, x, spine_cy, cx, r_vert, 1.1 * r_vert)
    vert_inner = ellipse(y, x, spine_cy, cx, r_vert - 1.5, 1.1 * r_vert - 1.5)
    vol[np.broadcast_to(vert_outer, vol.shape) & ~in_disc] = CORTICAL_HU
    vol[np.broadcast_to(vert_inner, vol.shape) & ~in_disc] = CANCELLOUS_HU
    vol[np.broadcast_to(vert_outer, vol.shape) & in_disc] = DISC_HU
    canal_cy = spine_cy + 1.55 * r_vert
    ring = ellipse(y, x, canal_cy, cx, 0.85 * r_vert, 0.85 * r_vert)
    canal = ellipse(y, x, canal_cy, cx, 0.48 * r_vert, 0.48 * r_vert)
    vol[np.broadcast_to(ring & ~canal, vol.shape) & ~in_disc] = CORTICAL_HU
    vol[np.broadcast_to(canal, vol.shape)] = CSF_HU

    # Ribs: short arcs near the body wall that appear every ~25 mm along z.
    rib_period, rib_height = 25.0, 9.0
    rib_phase = float(rng.uniform(0, rib_period))
    rib_z = (((z + rib_phase) % rib_period) < rib_height).astype(bool)
    r_rib = max(2.5, 0.012 * fov)
    ribs = np.zeros(vol.shape[1:], dtype=bool)
    for angle in np.deg2rad([20, 45, 70, 110, 135, 160, 200, 340]):
        ry_r, rx_r = ry_body0 - fat - 0.01 * fov, rx_body0 - fat - 0.01 * fov
        cyr, cxr = cy + ry_r * np.sin(angle), cx + rx_r * np.cos(angle)
        ribs |= ellipse(y[0], x[0], cyr, cxr, r_rib, 1.4 * r_rib)
    vol[rib_z & ribs[None]] = RIB_HU
    return vol, liver


def lesion_field(shape: LesionShape, grid: Grid) -> tuple[tuple[slice, ...], np.ndarray]:
    """Normalised radius ``f`` of the lesion in its bounding box (``f <= 1`` inside).

    Returns the box as slices into the volume and ``f`` over the box.
    """
    z, y, x = grid.coordinates()
    spacing = (grid.slice_spacing, grid.pixel_spacing, grid.pixel_spacing)
    limits = (grid.n_slices, grid.matrix, grid.matrix)
    reach = 1.0 + shape.lobulation + 0.25  # room for the readers' wider outlines
    box = []
    for c, r, s, n, axis0 in zip(
        shape.center_zyx, shape.radii_zyx, spacing, limits, (0.0, None, None), strict=True
    ):
        offset = 0.0 if axis0 is not None else (n - 1) / 2.0 * s
        centre_index = (c + offset) / s
        lo = max(0, int(np.floor(centre_index - reach * r / s)) - 1)
        hi = min(n, int(np.ceil(centre_index + reach * r / s)) + 2)
        box.append(slice(lo, hi))
    zz, yy, xx = z[box[0]], y[:, box[1]], x[:, :, box[2]]
    dz = (zz - shape.center_zyx[0]) / shape.radii_zyx[0]
    dy = (yy - shape.center_zyx[1]) / shape.radii_zyx[1]
    dx = (xx - shape.center_zyx[2]) / shape.radii_zyx[2]
    radius = np.sqrt(dz**2 + dy**2 + dx**2) + np.float32(1e-6)
    modulation = np.zeros(np.broadcast_shapes(dz.shape, dy.shape, dx.shape), dtype=np.float32)
    for direction, freq, ph in zip(
        shape.lobe_directions, shape.lobe_frequencies, shape.lobe_phases, strict=True
    ):
        cosine = (dz * direction[0] + dy * direction[1] + dx * direction[2]) / radius
        modulation += np.cos(freq * np.pi * cosine + ph).astype(np.float32)
    modulation /= max(len(shape.lobe_directions), 1)
    field = radius / (1.0 + shape.lobulation * modulation)
    return tuple(box), field.astype(np.float32)


def reader_mask(
    field: np.ndarray, rng: np.random.Generator, *, bias: float, wobble: float
) -> np.ndarray:
    """A reader's outline: the lesion level set shifted by a bias and smooth noise."""
    noise = ndimage.gaussian_filter(rng.standard_normal(field.shape).astype(np.float32), 2.0)
    sd = float(noise.std()) or 1.0
    mask = field <= 1.0 + bias + wobble * noise / sd
    if not mask.any():
        mask = field <= field.min()
    return mask


def image(
    truth_hu: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_px: float,
    noise_hu: float,
    hu_scale: float,
    hu_offset: float,
) -> np.ndarray:
    """Apply a scanner: in-plane blur, HU calibration, correlated noise."""
    out = ndimage.gaussian_filter(truth_hu, sigma=(0.0, blur_px, blur_px), mode="nearest")
    out = out * np.float32(hu_scale) + np.float32(hu_offset)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.0, 0.7, 0.7))
    noise *= np.float32(noise_hu / max(float(noise[:, ::4, ::4].std()), 1e-6))
    out += noise
    return out
