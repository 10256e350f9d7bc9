"""Li 4a sites of a trajectory's cell and nearest-site assignment of every Li in every frame.

The site lattice is the system's own: its unit cell tiled by the repeats implied by the cell lengths
(and, for ``li_order=interface_<axis>``, with the delithiated half stretched along the axis exactly as
the builder does), kept in fractional coordinates so it follows the trajectory's cell. Assignment is
exact nearest-site (in the metric of the mean cell): a Li within half the nearest-site spacing of
the site it last held cannot be nearer to any other site, so only the rare Li outside that sphere go
through a periodic KD-tree. Positions are unwrapped first, so a site is identified together with its periodic image and a
Li that runs once round a small cell makes hops, not a return.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from lfpo_al.structures import lithium
from lfpo_al.structures.olivine import supercell
from lfpo_al.structures.system import AXES, OlivineSystem


def cell_repeats(system: OlivineSystem, cell: np.ndarray, li_order: str | None = None) -> list[int]:
    """Unit cells along a, b, c implied by the cell lengths (an interface axis holds both lattices)."""
    lengths = np.linalg.norm(cell, axis=1)
    unit, de = np.array(system.lattice_abc()), np.array(system.lattice_abc(delithiated=True))
    per_cell = unit.copy()
    axis = _interface_axis(li_order)
    if axis is not None:
        per_cell[axis] = 0.5 * (unit[axis] + de[axis])
    reps = [max(1, int(round(n))) for n in lengths / per_cell]
    if axis is not None and reps[axis] % 2:
        reps[axis] += 1
    return reps


def _interface_axis(li_order: str | None) -> int | None:
    if li_order and str(li_order).startswith("interface_") and str(li_order)[-1] in AXES:
        return AXES.index(str(li_order)[-1])
    return None


def li_site_lattice(system: OlivineSystem, cell: np.ndarray, li_order: str | None = None) -> np.ndarray:
    """Fractional coordinates (S, 3) of every Li site of a cell like ``cell``."""
    reps = cell_repeats(system, cell, li_order)
    atoms = supercell(system, tuple(reps))
    axis = _interface_axis(li_order)
    if axis is not None:
        lithium.rescale_delithiated_slab(atoms, system, axis, lithium.interface_cells(atoms, axis))
    li = np.array(atoms.get_chemical_symbols()) == system.mobile_ion
    return atoms.get_scaled_positions(wrap=True)[li]


def unwrap_fractional(frac: np.ndarray) -> np.ndarray:
    """Continuous fractional trajectories (F, n, 3): remove whole-cell jumps between consecutive frames.

    Only the (atom, axis) columns that ever jump are accumulated, so an unwrapped input costs one pass.
    """
    frac = np.array(frac, copy=True)
    if len(frac) < 2:
        return frac
    jumps = np.rint(np.diff(frac, axis=0)).reshape(len(frac) - 1, -1)
    columns = np.flatnonzero(np.any(jumps != 0, axis=0))
    if len(columns):
        flat = frac.reshape(len(frac), -1)
        flat[1:, columns] -= np.cumsum(jumps[:, columns], axis=0)
    return frac


def fractional(positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Fractional coordinates (F, n, 3) in the positions' float type (float32 is ample for site
    assignment); one matrix product when the cell is constant."""
    cells = np.asarray(cells, dtype=np.float64)
    positions = np.asarray(positions)
    dtype = positions.dtype if np.issubdtype(positions.dtype, np.floating) else np.float64
    if np.all(cells == cells[0]):
        return positions.astype(dtype, copy=False) @ np.linalg.inv(cells[0]).astype(dtype)
    return np.einsum("fni,fij->fnj", positions, np.linalg.inv(cells)).astype(dtype)


def wrap01(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates in [0, 1), also for values a rounding error below a whole number."""
    out = np.asarray(frac, dtype=float) % 1.0
    out[out >= 1.0] = 0.0
    return out


class SiteLocator:
    """Exact nearest site for points in fractional coordinates, metric ``diag(lengths)`` (orthorhombic)."""

    def __init__(self, site_frac: np.ndarray, lengths: np.ndarray):
        self.sites = wrap01(site_frac)
        self.lengths = np.asarray(lengths, dtype=float)
        self.tree = cKDTree(self.sites * self.lengths, boxsize=self.lengths)

    def nearest(self, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(site index, image) for fractional points (..., 3): the site's image nearest to each point."""
        frac = np.asarray(frac, dtype=float)
        _, site = self.tree.query((wrap01(frac) * self.lengths).reshape(-1, 3) % self.lengths)
        site = site.reshape(frac.shape[:-1])
        image = np.rint(frac - self.sites[site]).astype(np.int64)
        return site, image


def site_keys(site: np.ndarray, image: np.ndarray, n_sites: int) -> np.ndarray:
    """One integer per (site, periodic image): equal keys mean the same site in the unwrapped crystal."""
    span = 1 << 16
    shifted = image + span // 2
    return site + n_sites * ((shifted[..., 0] * span + shifted[..., 1]) * span + shifted[..., 2])


def align_sites(site_frac: np.ndarray, li_frac0: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
    """Shift the site lattice by the mean offset of the first frame's Li from their nearest sites
    (a trajectory written with another origin); returns (shifted sites, mean residual distance in A)."""
    if len(li_frac0) == 0:
        return site_frac, 0.0
    locator = SiteLocator(site_frac, lengths)
    site, image = locator.nearest(li_frac0)
    offset = (li_frac0 - (locator.sites[site] + image)).mean(axis=0)
    shifted = wrap01(site_frac + offset)
    site, image = SiteLocator(shifted, lengths).nearest(li_frac0)
    residual = (li_frac0 - (shifted[site] + image)) * lengths
    return shifted, float(np.linalg.norm(residual, axis=1).mean())


def li_site_keys(positions: np.ndarray, cells: np.ndarray, site_frac: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, float]:
    """Unwrapped site key per Li and frame (nLi, F) and the first frame's mean Li-site distance (A).

    Frames are taken in blocks; a Li still within half the nearest-site spacing of the site it held at
    the end of the previous block keeps that site (exact: no other site can be nearer), and only the
    others go through the locator, so the cost is a few array passes per frame.
    """
    frac = unwrap_fractional(fractional(positions, cells))
    n_frames, n_li = frac.shape[:2]
    lengths = np.linalg.norm(np.asarray(cells, dtype=float), axis=2).mean(axis=0)
    sites, residual = align_sites(site_frac, frac[0].astype(np.float64), lengths)
    keys = np.empty((n_li, n_frames), dtype=np.int64)
    if n_li == 0 or n_frames == 0:
        return keys, residual
    locator = SiteLocator(sites, lengths)
    if len(sites) > 1:
        spacing, _ = locator.tree.query(sites * lengths, k=2)
        radius = 0.5 * spacing[:, 1] * (1 - 1e-9)
    else:
        radius = np.full(1, np.inf)
    site, image = locator.nearest(frac[0])
    scale = lengths.astype(frac.dtype)
    for start in range(0, n_frames, chunk):
        block = frac[start:start + chunk]
        d = (block - (sites[site] + image).astype(frac.dtype)) * scale
        outside = d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2 >= (radius[site] ** 2).astype(frac.dtype)
        key = np.repeat(site_keys(site, image, len(sites))[None], len(block), axis=0)
        if outside.any():
            key[outside] = site_keys(*locator.nearest(block[outside]), len(sites))
        keys[:, start:start + chunk] = key.T
        site, image = locator.nearest(block[-1])
    return keys, residual
