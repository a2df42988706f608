"""A seeded, deterministic phantom of serial-section TEM neuropil with ground-truth neuron ids.

This is the harness's embedded default dataset: it needs no download and can be made at any
size.  The geometry is a set of *tubes* (neurites) that run mostly along z.  In every section a
tube has a centre, a calibre (many thin axons of 50-200 nm, fewer boutons/spines/dendrites of
0.2-1 um), an elongated, irregular oval cross-section, and drifts by a few nm per section (an
Ornstein-Uhlenbeck walk of its slope).  The tubes are kept apart by a soft repulsion so that they
stay densely packed; a tube that ends is replaced by one that starts in its place, and a few new
tubes branch off existing ones with the same id.  A section is rendered as a multiplicatively
weighted Voronoi diagram of the ovals (each pixel goes to the tube whose scaled oval reaches it
first: boundaries are arcs that bulge into the larger cell), bent by a smooth multi-scale warp
that evolves slowly with z.  The ids tile the plane like CREMI's: the membrane pixels belong to
one of the two cells.

The EM image is a transmission model ``I = I_beam * exp(-t_z * D)`` of an optical density ``D``
that sums: cytoplasm (a per-cell value plus grainy texture), membranes (a Gaussian profile of
the distance to the nearest label boundary, sd 3.4-9 nm; darker where three cells meet),
microtubules and small vesicles (rings), synaptic vesicle clouds in boutons with a dark
post-synaptic density, and mitochondria (dark ovals with a double membrane and cristae) that
persist over tens of sections.  Each section gets its own thickness/stain contrast ``t_z``, beam
brightness and illumination gradient; the image is blurred by the PSF and gets shot noise.  All
physical sizes are in nm and scale with ``resolution``.

Determinism: the tube state evolves from z = 0 with one random stream, and everything drawn for
the rendering of section z comes from streams keyed by (seed, z), so any z range generated on its
own is bit-identical to the same sections of the whole volume, and :func:`write` can produce
volumes of any depth section by section in bounded memory.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

from .errors import EmsrError
from .labels import boundary_pixels

DEFAULT_SHAPE = (16, 256, 256)
DEFAULT_RESOLUTION = (40.0, 4.0, 4.0)

# --- geometry (nm) --------------------------------------------------------------------------
# calibre classes: (probability, median diameter, log-sd, min, max)
_CALIBRES = (
    (0.66, 100.0, 0.30, 50.0, 220.0),  # thin axons
    (0.29, 250.0, 0.30, 150.0, 550.0),  # thick axons, boutons, spines, thin dendrites
    (0.05, 540.0, 0.25, 400.0, 1000.0),  # dendrite shafts
)
_R_MAX = 500.0  # largest radius (nm)
_R_BIRTH_MIN = 24.0  # smallest radius a branch is born with (nm)
_FILL = 0.72  # packing fraction of the initial disks
_CORE_INSET = 8.0  # used for the size of organelles: room inside a tube (nm)
_RHO_MAX = 1.5  # how far (in shape radii) a tube can claim space
_RHO_ADD = 50.0  # added to the radii that weight the Voronoi diagram (nm): less sprawl of thick tubes
_SLOPE_MEDIAN = 0.18  # lateral drift per nm of z (0.18 -> 7 nm per 40 nm section)
_LIFE = 9000.0  # mean length (nm of z) of a tube before it ends
_BRANCH_RATE = 1.0 / 40000.0  # branches per nm of z per tube
_MITO_RATE = 1.0 / 6000.0  # new mitochondria per nm of z per tube (scaled by calibre)
_TAPER_NM = 120.0  # length over which a tube/mitochondrion grows in or shrinks out

# --- appearance -----------------------------------------------------------------------------
_BEAM = 218.0  # bright-field intensity without specimen
_D_CYTO = 0.34  # optical density of cytoplasm  (218 * exp(-0.34) ~ 155)
_D_MEM = 1.3  # peak optical density of a membrane
_MEM_SIGMA = (3.4, 9.0)  # range of the membrane's Gaussian sd (nm), varies smoothly in the plane
_PSF_SIGMA = 3.4  # nm
_WARP_AMP, _WARP_SCALE = 30.0, 160.0  # nm
_Z_KEY = 6  # sections between key frames of the smooth fields (warp, width, illumination)


def _check(shape, seed, resolution) -> tuple[tuple[int, int, int], int, tuple[float, float, float]]:
    try:
        shape_t = tuple(int(s) for s in shape)
        if len(shape_t) != 3 or any(int(s) != s for s in shape):
            raise ValueError
    except (TypeError, ValueError):
        raise EmsrError(f"phantom: shape must be 3 integers (z, y, x), got {shape!r}") from None
    if any(s <= 0 for s in shape_t):
        raise EmsrError(f"phantom: shape must be positive, got {shape_t}")
    try:
        seed_i = int(seed)
        if seed_i != seed:
            raise ValueError
    except (TypeError, ValueError):
        raise EmsrError(f"phantom: seed must be an integer, got {seed!r}") from None
    if seed_i < 0:
        raise EmsrError(f"phantom: seed must be >= 0, got {seed_i}")
    from .io import as_resolution  # here, not at the top: io imports h5py, which making a phantom does not need

    return shape_t, seed_i, as_resolution(resolution, "phantom: resolution")


def _check_zrange(z_range, depth: int) -> tuple[int, int]:
    if z_range is None:
        return 0, depth
    try:
        z0, z1 = (int(v) for v in z_range)
    except (TypeError, ValueError):
        raise EmsrError(f"phantom: z_range must be two integers (start, stop), got {z_range!r}") from None
    if not 0 <= z0 < z1 <= depth:
        raise EmsrError(f"phantom: z_range {z_range!r} does not fit a volume of {depth} sections")
    return z0, z1


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _noise(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    """Unit-variance white noise blurred by a Gaussian of ``sigma_px`` (float32)."""
    out = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_px, truncate=3.0)
    rad = int(3.0 * sigma_px + 0.5)
    k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / max(sigma_px, 1e-6)) ** 2)
    k /= k.sum()
    out /= np.float32(np.sum(k**2) ** (len(shape) / 2))
    return out


def _draw_radii(rng: np.random.Generator, n: int) -> np.ndarray:
    probs = np.array([c[0] for c in _CALIBRES])
    cls = rng.choice(len(_CALIBRES), size=n, p=probs / probs.sum())
    z = rng.standard_normal(n)
    d = np.empty(n)
    for k, (_, med, sd, lo, hi) in enumerate(_CALIBRES):
        sel = cls == k
        d[sel] = np.clip(med * np.exp(sd * z[sel]), lo, hi)
    return d / 2.0


class _Tubes:
    """Struct of arrays holding the neurites alive in the current section."""

    FIELDS = {
        "uid": np.int64,
        "label": np.uint64,
        "pos": np.float64,
        "vel": np.float64,
        "speed": np.float64,
        "r0": np.float64,
        "age": np.float64,
        "dying": np.float64,
        "life": np.float64,
        "aspect": np.float64,
        "theta": np.float64,
        "harm": np.float64,
        "dens": np.float64,
        "mt": np.float64,
        "grain": np.float64,
        "bouton": bool,
        "bang": np.float64,
    }

    def __init__(self):
        for name, dt in self.FIELDS.items():
            shape = {"pos": (0, 2), "vel": (0, 2), "harm": (0, 6)}.get(name, (0,))
            setattr(self, name, np.zeros(shape, dtype=dt))

    def __len__(self):
        return len(self.uid)

    def append(self, **cols):
        for name in self.FIELDS:
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(cols[name], dtype=self.FIELDS[name])]))

    def keep(self, mask: np.ndarray):
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[mask])


class _Mitos:
    FIELDS = {
        "parent": np.int64,
        "off": np.float64,
        "a": np.float64,
        "b": np.float64,
        "theta": np.float64,
        "age": np.float64,
        "length": np.float64,
        "period": np.float64,
        "phase": np.float64,
    }

    def __init__(self):
        for name, dt in self.FIELDS.items():
            setattr(self, name, np.zeros((0, 2) if name == "off" else (0,), dtype=dt))

    def __len__(self):
        return len(self.parent)

    def append(self, **cols):
        for name in self.FIELDS:
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(cols[name], dtype=self.FIELDS[name])]))

    def keep(self, mask):
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[mask])


class _Phantom:
    """The evolving tube state of one (shape, seed, resolution) phantom and its renderer."""

    def __init__(self, shape, seed, resolution):
        self.shape, self.seed, self.res = _check(shape, seed, resolution)
        self.rz, self.ry, self.rx = self.res
        _, h, w = self.shape
        self.H, self.W = h, w
        # simulation domain (nm): the window plus a margin wide enough for the largest tube
        self.margin_nm = _R_MAX + 150.0
        self.lo = np.array([-self.margin_nm, -self.margin_nm])
        self.hi = np.array([h * self.ry + self.margin_nm, w * self.rx + self.margin_nm])
        self.rng = _rng(self.seed, h, w, 1)
        self.tubes = _Tubes()
        self.mitos = _Mitos()
        self.next_uid = 1
        self.z = 0
        self._fields_cache: dict = {}
        self._key_cache: dict = {}
        self._init_packing()
        for _ in range(3):  # settle
            self._step()
        self.z = 0

    # ------------------------------------------------------------------ state
    def _new_tubes(self, pos, r0, *, age, label=None, vel=None):
        rng = self.rng
        n = len(r0)
        if n == 0:
            return
        uid = np.arange(self.next_uid, self.next_uid + n)
        self.next_uid += n
        speed = _SLOPE_MEDIAN * np.exp(0.45 * rng.standard_normal(n))
        ang = rng.uniform(0, 2 * np.pi, n)
        if vel is None:
            vel = speed[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.3, 1.0, (n, 1))
        big = np.clip((r0 - 50.0) / 250.0, 0.0, 1.0)
        life = np.full(n, _LIFE)
        aspect = 1.0 + rng.gamma(1.0, 0.35, n) * (0.5 + big)
        harm = rng.standard_normal((n, 6)) * (0.04 + 0.07 * big)[:, None]
        bouton = (r0 > 60.0) & (r0 < 350.0) & (rng.random(n) < 0.22)
        dens = _D_CYTO + rng.normal(0.0, 0.07, n) - 0.06 * big + 0.04 * bouton
        mt = np.where(r0 > 120.0, rng.uniform(30, 150, n), rng.uniform(0, 80, n)) * (~bouton)
        self.tubes.append(
            uid=uid,
            label=uid if label is None else label,
            pos=pos,
            vel=vel,
            speed=speed,
            r0=r0,
            age=np.broadcast_to(np.asarray(age, float), (n,)),
            dying=np.full(n, -1.0),
            life=life,
            aspect=aspect,
            theta=rng.uniform(0, np.pi, n),
            harm=harm,
            dens=dens,
            mt=mt,
            bouton=bouton,
            grain=rng.uniform(0.5, 1.6, n),
            bang=rng.uniform(0, 2 * np.pi, n),
        )

    def _init_packing(self):
        """Random sequential addition of disks, largest first, on a coarse clearance grid."""
        rng = self.rng
        area = float(np.prod(self.hi - self.lo))
        mean_a = np.mean(np.pi * _draw_radii(rng, 4000) ** 2)
        radii = np.sort(_draw_radii(rng, int(_FILL * area / mean_a) + 1))[::-1]
        cell = 16.0
        gy = np.arange(self.lo[0], self.hi[0], cell)
        gx = np.arange(self.lo[1], self.hi[1], cell)
        clear = np.full((len(gy), len(gx)), np.inf)
        pos, rad = [], []
        for r in radii:
            ok = np.flatnonzero(clear.ravel() >= r)
            if len(ok) == 0:
                continue
            k = ok[rng.integers(len(ok))]
            iy, ix = divmod(int(k), len(gx))
            p = np.array([gy[iy], gx[ix]]) + rng.uniform(0, cell, 2) - cell / 2
            pos.append(p)
            rad.append(r)
            reach = 2 * r + cell
            y0, y1 = np.searchsorted(gy, [p[0] - reach, p[0] + reach])
            x0, x1 = np.searchsorted(gx, [p[1] - reach, p[1] + reach])
            dist = np.hypot(gy[y0:y1, None] - p[0], gx[None, x0:x1] - p[1]) - r
            np.minimum(clear[y0:y1, x0:x1], dist, out=clear[y0:y1, x0:x1])
        pos = np.array(pos).reshape(-1, 2)
        self._new_tubes(pos, np.array(rad), age=1e9)
        self.fill = float(np.sum(np.pi * np.array(rad) ** 2)) / area
        # mitochondria already present at the start
        self._spawn_mitos(scale=1200.0, initial=True)

    def _r_eff(self) -> np.ndarray:
        t = self.tubes
        grow = np.clip(0.3 + 0.7 * t.age * self.rz / _TAPER_NM, 0.3, 1.0)
        shrink = np.where(t.dying >= 0, np.clip(t.dying / math.ceil(_TAPER_NM / self.rz), 0.0, 1.0), 1.0)
        return t.r0 * grow * shrink

    def _clearance(self, pts: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Distance from each point to the nearest tube surface (over its 16 nearest centres)."""
        if len(self.tubes) == 0:
            return np.full(len(pts), np.inf)
        k = min(16, len(self.tubes))
        d, idx = cKDTree(self.tubes.pos).query(pts, k=k)
        d, idx = d.reshape(len(pts), k), idx.reshape(len(pts), k)
        return np.min(d - r[idx], axis=1)

    def _step(self):
        """Advance the state by one section."""
        rng, t, rz = self.rng, self.tubes, self.rz
        n = len(t)
        # ageing, ends
        t.age += 1
        t.dying[t.dying >= 0] -= 1
        start_dying = (t.dying < 0) & (rng.random(n) < rz / t.life)
        t.dying[start_dying] = math.ceil(_TAPER_NM / rz)
        # drift: an Ornstein-Uhlenbeck process on the slope (nm lateral per nm of z)
        rho = math.exp(-rz / 600.0)
        noise = rng.standard_normal((n, 2))
        t.vel = rho * t.vel + math.sqrt(1 - rho**2) * t.speed[:, None] * noise
        t.pos = t.pos + t.vel * rz
        # shape changes
        rs = math.exp(-rz / 500.0)
        t.theta = t.theta + rng.normal(0.0, 0.04, n) * math.sqrt(rz / 40.0)
        amp = np.sqrt(np.maximum(0.0, np.mean(t.harm**2, 1)))
        t.harm = rs * t.harm + math.sqrt(1 - rs**2) * rng.standard_normal((n, 6)) * (amp + 0.01)[:, None]
        t.bang = t.bang + rng.normal(0.0, 0.05, n)
        # keep tubes apart
        r = self._r_eff()
        if n > 1:
            tree = cKDTree(t.pos)
            pairs = tree.query_pairs(2 * float(r.max()), output_type="ndarray")
            if len(pairs):
                i, j = pairs[:, 0], pairs[:, 1]
                for _ in range(3):
                    d = t.pos[j] - t.pos[i]
                    dist = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
                    over = (r[i] + r[j]) - dist
                    sel = over > 0
                    if not sel.any():
                        break
                    ii, jj, o = i[sel], j[sel], 0.5 * over[sel]
                    u = d[sel] / dist[sel, None]
                    wi = r[jj] ** 2 / (r[ii] ** 2 + r[jj] ** 2)
                    push = np.zeros((n, 2))
                    np.add.at(push, ii, -(o * wi)[:, None] * u)
                    np.add.at(push, jj, (o * (1 - wi))[:, None] * u)
                    t.pos = t.pos + push
        # remove the ended and those that left the domain
        inside = np.all((t.pos > self.lo - 0.5 * t.r0[:, None]) & (t.pos < self.hi + 0.5 * t.r0[:, None]), 1)
        ended = t.dying == 0
        # a tube that ends is replaced by one that starts in its place; one that left the
        # domain by one that starts in the widest opening (see _births)
        replace, old_r = t.pos[ended & inside], t.r0[ended & inside]
        n_left = int(np.sum(~inside))
        t.keep(inside & ~ended)
        self._births(replace, old_r, n_left)
        # mitochondria
        m = self.mitos
        m.age += 1
        alive = np.isin(m.parent, t.uid) & (m.age * rz < m.length)
        m.keep(alive)
        m.theta += rng.normal(0.0, 0.03, len(m))
        m.off += rng.normal(0.0, 0.01, m.off.shape)
        self._spawn_mitos(scale=rz)
        self.z += 1

    def _births(self, replace: np.ndarray, old_r: np.ndarray, n_left: int):
        rng, t = self.rng, self.tubes
        area = float(np.prod(self.hi - self.lo))
        best = np.zeros(0, int)
        pts = np.zeros((0, 2))
        clear = np.zeros(0)
        if n_left:
            pts = rng.uniform(self.lo, self.hi, (max(8, int(area / 150.0**2)), 2))
            clear = self._clearance(pts, self._r_eff())
            best = np.argsort(-clear, kind="stable")[:n_left]
        r = self._r_eff()
        pos = np.concatenate([replace + rng.normal(0.0, 20.0, replace.shape), pts[best]])
        cap = np.concatenate([1.2 * old_r + 20.0, 1.2 * np.maximum(clear[best], 0.0) + 20.0])
        want = _draw_radii(rng, len(pos))
        if float(np.sum(np.pi * r**2)) > self.fill * area:  # too crowded: no bigger than the opening
            want = np.minimum(want, cap)
        if len(pos):
            self._new_tubes(pos, want, age=0)
            r = self._r_eff()
        # branches: a small tube leaving an existing one with the same id
        n = len(t)
        nb = rng.poisson(n * _BRANCH_RATE * self.rz)
        if nb and n:
            par = rng.choice(n, nb)
            par = par[(t.r0[par] > 40.0) & (t.dying[par] < 0)]
            if len(par):
                ang = rng.uniform(0, 2 * np.pi, len(par))
                dirn = np.stack([np.cos(ang), np.sin(ang)], 1)
                rc = np.minimum(_draw_radii(rng, len(par)), 0.6 * t.r0[par])
                rc = np.maximum(rc, _R_BIRTH_MIN)
                pos = t.pos[par] + dirn * (0.7 * r[par])[:, None]
                vel = t.vel[par] + dirn * (0.5 * _SLOPE_MEDIAN)
                self._new_tubes(pos, rc, age=0, label=t.label[par], vel=vel)

    def _spawn_mitos(self, scale: float, initial: bool = False):
        rng, t = self.rng, self.tubes
        n = len(t)
        if n == 0:
            return
        p = np.clip(t.r0 / 100.0, 0.2, 3.0) * _MITO_RATE * scale * (t.dying < 0) * (t.age > 2)
        new = np.flatnonzero(rng.random(n) < p)
        if not len(new):
            return
        r0 = t.r0[new]
        b = np.minimum(rng.uniform(35.0, 110.0, len(new)), 0.55 * (r0 - _CORE_INSET))
        ok = b > 12.0
        new, b, r0 = new[ok], b[ok], r0[ok]
        k = len(new)
        if not k:
            return
        aspect = 1.0 + rng.gamma(1.5, 0.5, k)
        a = np.minimum(b * aspect, 0.85 * (r0 - _CORE_INSET))
        room = np.maximum(0.0, 1.0 - a / np.maximum(r0 - _CORE_INSET, 1.0))
        ang = rng.uniform(0, 2 * np.pi, k)
        off = np.stack([np.cos(ang), np.sin(ang)], 1) * (rng.uniform(0, 0.8, k) * room)[:, None]
        length = rng.uniform(400.0, 2000.0, k)
        self.mitos.append(
            parent=t.uid[new],
            off=off,
            a=a,
            b=b,
            theta=rng.uniform(0, np.pi, k),
            age=rng.uniform(0, length / self.rz) if initial else np.zeros(k),
            length=length,
            period=rng.uniform(20.0, 32.0, k),
            phase=rng.uniform(0, 2 * np.pi, k),
        )

    # ------------------------------------------------------------------ smooth fields
    def _basis(self, n: int, res: float, pad: int, spacing: float):
        """Sparse (pixels x nodes) Gaussian interpolation weights, rows of unit norm."""
        key = (n, res, pad, spacing)
        if key not in self._fields_cache:
            x = (np.arange(-pad, n + pad) + 0.5) * res
            nodes = np.arange(x[0] - 2.5 * spacing, x[-1] + 2.5 * spacing + spacing, spacing)
            d = (x[:, None] - nodes[None]) / spacing
            a = np.where(np.abs(d) < 3.5, np.exp(-0.5 * d**2), 0.0)
            a /= np.sqrt((a**2).sum(1, keepdims=True))
            self._fields_cache[key] = sparse.csr_matrix(a.astype(np.float32))
        return self._fields_cache[key]

    def _smooth(self, z: int, stream: int, spacing: float, pad: int) -> np.ndarray:
        """A unit-variance Gaussian random field over the window (+pad), correlated over
        ``spacing`` nm laterally and ``_Z_KEY`` sections in z (key frames k = z // _Z_KEY,
        blended with cos/sin weights, which keeps the variance).  Sparse products rather than
        BLAS: a multi-threaded GEMM costs more than it saves on a busy machine."""
        ay = self._basis(self.H, self.ry, pad, spacing)
        ax = self._basis(self.W, self.rx, pad, spacing)
        k, f = divmod(z, _Z_KEY)
        s = f / _Z_KEY * (np.pi / 2)
        half = []
        for kk in (k, k + 1):
            key = (stream, spacing, pad, kk)
            if key not in self._key_cache:
                g = _rng(self.seed, 100 + stream, kk).standard_normal((ay.shape[1], ax.shape[1]))
                self._key_cache[key] = np.ascontiguousarray((ay @ g.astype(np.float32)).T)  # (nodes_x, y)
            half.append(self._key_cache[key])
        for key in [key for key in self._key_cache if key[3] < k]:
            del self._key_cache[key]
        blend = math.cos(s) * half[0] + math.sin(s) * half[1]
        return np.ascontiguousarray((ax @ blend).T)

    # ------------------------------------------------------------------ rendering
    def _paint(self, m: int) -> np.ndarray:
        """Canvas (window + m px each side) of tube index + 1.

        Each pixel goes to the tube whose shape, scaled about its centre, reaches it first (a
        multiplicatively weighted Voronoi diagram of irregular ovals): boundaries are arcs that
        bulge into the larger cell, so thin axons stay round between thick dendrites.  Pixels
        farther than ``_RHO_MAX`` shape radii from every tube are 0 (filled by the caller).
        """
        t = self.tubes
        r = self._r_eff()
        e = np.sqrt(t.aspect)
        reach = (r + _RHO_ADD) * (1 + np.abs(t.harm).sum(1)) * _RHO_MAX
        # half sizes of the bounding box of the rotated oval (semi-axes reach*e, reach/e)
        ct, st = np.cos(t.theta), np.sin(t.theta)
        hx = reach * np.sqrt((e * ct) ** 2 + (st / e) ** 2)
        hy = reach * np.sqrt((e * st) ** 2 + (ct / e) ** 2)
        hc, wc = self.H + 2 * m, self.W + 2 * m
        yy = ((np.arange(hc) - m + 0.5) * self.ry).astype(np.float32)
        xx = ((np.arange(wc) - m + 0.5) * self.rx).astype(np.float32)
        canvas = np.zeros((hc, wc), np.int32)
        zbuf = np.full((hc, wc), _RHO_MAX, np.float32)
        vis = (
            (t.pos[:, 0] + hy > yy[0])
            & (t.pos[:, 0] - hy < yy[-1])
            & (t.pos[:, 1] + hx > xx[0])
            & (t.pos[:, 1] - hx < xx[-1])
            & (r > 0.3 * self.ry)
        )
        for i in np.flatnonzero(vis).tolist():
            cy, cx = t.pos[i].tolist()
            i0, i1 = np.searchsorted(yy, [cy - hy[i], cy + hy[i]]).tolist()
            j0, j1 = np.searchsorted(xx, [cx - hx[i], cx + hx[i]]).tolist()
            if i1 <= i0 or j1 <= j0:
                continue
            # python floats keep the arithmetic in float32
            ei, c, s_ = float(e[i]), float(ct[i]), float(st[i])
            h0, h1, h2, h3, h4, h5 = t.harm[i].tolist()
            dy = (yy[i0:i1] - np.float32(cy))[:, None]
            dx = (xx[j0:j1] - np.float32(cx))[None, :]
            u = dx * (c / ei) + dy * (s_ / ei)
            v = dy * (c * ei) - dx * (s_ * ei)
            rr = np.sqrt(u * u + v * v)
            rr += 1e-3
            inv = 1.0 / rr
            u *= inv
            v *= inv  # (u, v) = (cos, sin) of the angle
            c2 = u * u - v * v
            s2 = 2.0 * u * v
            poly = (
                1.0
                + h0 * c2
                + h1 * s2
                + h2 * (c2 * u - s2 * v)
                + h3 * (s2 * u + c2 * v)
                + h4 * (c2 * c2 - s2 * s2)
                + h5 * (2.0 * c2 * s2)
            )
            np.maximum(poly, 0.3, out=poly)
            poly *= float(r[i] + _RHO_ADD)
            rho = rr / poly
            zb = zbuf[i0:i1, j0:j1]
            better = rho < zb
            zb[better] = rho[better]
            canvas[i0:i1, j0:j1][better] = i + 1
        if not canvas.any():  # a tiny window far from every tube: give it to the nearest one
            c = np.array([yy.mean(), xx.mean()])
            canvas[:] = int(np.argmin(np.hypot(*(t.pos - c).T) - r)) + 1
        return canvas

    def _rings(self, shape, pts: np.ndarray, radius_px: float, weight: np.ndarray) -> np.ndarray:
        """Optical density of rings (dark rim, faint lighter lumen) centred at integer pixels."""
        R = int(math.ceil(radius_px + 2))
        oy, ox = np.mgrid[-R : R + 1, -R : R + 1]
        rr = np.hypot(oy, ox)
        k = np.exp(-0.5 * ((rr - radius_px) / 0.7) ** 2) - 0.1 * np.exp(-0.5 * (rr / (0.5 * radius_px)) ** 2)
        h, w = shape
        if len(pts) == 0:
            return np.zeros(shape, np.float32)
        py = pts[:, 0, None] + oy.ravel()[None]
        px = pts[:, 1, None] + ox.ravel()[None]
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        wts = (weight[:, None] * k.ravel()[None])[ok]
        out = np.bincount((py * w + px)[ok], weights=wts, minlength=h * w)
        return out.reshape(shape).astype(np.float32)

    def render(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        """Render the current state as section z: (raw uint8 (y,x), labels uint64 (y,x))."""
        t, ry, rx = self.tubes, self.ry, self.rx
        H, W = self.H, self.W
        lat = 0.5 * (ry + rx)
        pad = 6
        warp_px = int(math.ceil(4 * _WARP_AMP / min(ry, rx)))
        m = pad + warp_px + int(math.ceil(2 * _CORE_INSET / min(ry, rx))) + 8
        canvas = self._paint(m)
        idx = ndimage.distance_transform_edt(
            canvas == 0, sampling=(ry, rx), return_distances=False, return_indices=True
        )
        filled = canvas[idx[0], idx[1]] - 1
        del idx, canvas
        # smooth warp of the whole section, at two scales
        uy = (
            self._smooth(z, 0, _WARP_SCALE, pad) * (_WARP_AMP / ry)
            + self._smooth(z, 4, 60.0, pad) * (9.0 / ry)
            + self._smooth(z, 7, 25.0, pad) * (2.5 / ry)
        )
        ux = (
            self._smooth(z, 1, _WARP_SCALE, pad) * (_WARP_AMP / rx)
            + self._smooth(z, 5, 60.0, pad) * (9.0 / rx)
            + self._smooth(z, 8, 25.0, pad) * (2.5 / rx)
        )
        hp, wp = H + 2 * pad, W + 2 * pad
        iy = np.clip(np.rint(np.arange(hp)[:, None] + (m - pad) + uy).astype(np.int64), 0, filled.shape[0] - 1)
        ix = np.clip(np.rint(np.arange(wp)[None, :] + (m - pad) + ux).astype(np.int64), 0, filled.shape[1] - 1)
        tix = filled[iy, ix]  # tube index per pixel (window + pad)
        lab = t.label[tix]
        # distance (nm) to the nearest label boundary
        bnd = boundary_pixels(lab)
        if bnd.any():
            dist = ndimage.distance_transform_edt(~bnd, sampling=(ry, rx)).astype(np.float32)
        else:
            dist = np.full((hp, wp), 1e6, np.float32)
        dist += 0.5 * lat
        sl = (slice(pad, pad + H), slice(pad, pad + W))
        lab_p = lab
        lab, tix, dist = lab[sl], tix[sl], dist[sl]
        uyw, uxw = uy[sl], ux[sl]

        rng = _rng(self.seed, 200, z)
        # --- optical density ---------------------------------------------------------------
        D = t.dens[tix].astype(np.float32)
        # grainy cytoplasm: organelle-scale mottling + finer grain, stronger in some cells
        g1 = _noise(rng, (H, W), 7.0 / lat)
        g2 = _noise(rng, (H, W), 3.0 / lat)
        g3 = self._smooth(z, 9, 30.0, 0)
        D += (0.05 * g1 + 0.04 * g2 + 0.14 * np.maximum(g2 - 1.0, 0.0) + 0.05 * g3) * t.grain[tix].astype(np.float32)
        # membranes: Gaussian profile of the distance to the boundary; width and darkness vary
        wf = self._smooth(z, 2, 300.0, 0)
        sig = _MEM_SIGMA[0] + (_MEM_SIGMA[1] - _MEM_SIGMA[0]) / (1 + np.exp(-2.0 * (wf - 1.0)))
        dark = _D_MEM * (_MEM_SIGMA[0] / sig) ** 0.5 * (1.0 + 0.18 * self._smooth(z, 6, 120.0, 0))
        D += dark * np.exp(-0.5 * (dist / sig) ** 2)
        # where three cells meet: a little dark extracellular space / oblique membrane
        lp = lab_p
        j3 = (lp[:-1, :-1] != lp[:-1, 1:]) & (lp[:-1, :-1] != lp[1:, :-1]) & (lp[:-1, 1:] != lp[1:, :-1])
        j3 |= (lp[1:, 1:] != lp[:-1, 1:]) & (lp[1:, 1:] != lp[1:, :-1]) & (lp[:-1, 1:] != lp[1:, :-1])
        jm = np.zeros(lp.shape, np.float32)
        jm[:-1, :-1] = j3 * rng.uniform(0.5, 1.5, j3.shape).astype(np.float32)
        jm = ndimage.gaussian_filter(jm, 9.0 / lat, truncate=3.0)[sl]
        D += 0.8 * (9.0 / lat) ** 2 * jm * np.exp(0.8 * self._smooth(z, 10, 100.0, 0) - 0.3)
        # microtubules / small vesicles / ER: rings, per-cell density
        area_um2 = H * W * ry * rx * 1e-6
        cand = rng.integers(0, [H, W], (rng.poisson(150.0 * area_um2) + 1, 2))
        ct = tix[cand[:, 0], cand[:, 1]]
        keep = (rng.random(len(cand)) * 150.0 < t.mt[ct]) & (dist[cand[:, 0], cand[:, 1]] > 16.0)
        D += self._rings((H, W), cand[keep], 12.0 / lat, rng.uniform(0.25, 0.8, keep.sum()))
        cand = rng.integers(0, [H, W], (rng.poisson(6.0 * area_um2) + 1, 2))
        keep = dist[cand[:, 0], cand[:, 1]] > 30.0
        D += self._rings((H, W), cand[keep], rng.uniform(16.0, 26.0) / lat, rng.uniform(0.2, 0.45, keep.sum()))
        # synaptic vesicle clouds and post-synaptic densities
        D += self._synapses(z, rng, tix, lab, dist, uyw, uxw)
        # mitochondria
        D += self._mitochondria(tix, dist, uyw, uxw, g2)

        # --- image formation ---------------------------------------------------------------
        thick, beam, psf, gain = self._section_factors(z)
        illum = 1.0 + 0.035 * self._smooth(z, 3, 1500.0, 0)
        img = beam * illum * np.exp(-thick * D)
        img = ndimage.gaussian_filter(img, max(psf, 1.0) / lat, truncate=3.0)
        noise = _noise(rng, (H, W), 3.2 / lat)
        img += np.sqrt(np.maximum(img, 1.0) / gain) * noise
        raw = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return raw, lab.astype(np.uint64)

    def _section_factors(self, z: int) -> tuple[float, float, float, float]:
        """Per-section imaging conditions: section thickness/stain (contrast), beam brightness,
        PSF width (nm) and detector gain (counts per grey level; lower is noisier)."""
        g = np.clip(_rng(self.seed, 201, z).standard_normal(4), -2.0, 2.0)
        thick = 1.0 + 0.08 * g[0]
        beam = _BEAM * (1.0 + 0.04 * g[1])
        psf = _PSF_SIGMA * (1.0 + 0.12 * g[2])
        gain = 0.7 * math.exp(0.25 * g[3])
        return thick, beam, psf, gain

    def _synapses(self, z, rng, tix, lab, dist, uy, ux) -> np.ndarray:
        t, ry, rx, H, W = self.tubes, self.ry, self.rx, self.H, self.W
        lat = 0.5 * (ry + rx)
        out = np.zeros((H, W), np.float32)
        r = self._r_eff()
        core = r - np.minimum(_CORE_INSET, 0.45 * r)
        ids = np.flatnonzero(t.bouton)
        pts_all, w_all = [], []
        spacing = 43.0 / lat
        for i in ids:
            c = t.pos[i] / [ry, rx] - 0.5
            if not (-core[i] / lat < c[0] < H + core[i] / lat and -core[i] / lat < c[1] < W + core[i] / lat):
                continue
            dirn = np.array([math.sin(t.bang[i]), math.cos(t.bang[i])])
            cc = c + dirn * 0.3 * core[i] / lat
            ci = np.clip(np.rint(cc).astype(int), 0, [H - 1, W - 1])
            cc = cc - [uy[ci[0], ci[1]], ux[ci[0], ci[1]]]
            s = 0.65 * core[i] / lat
            n = int(2.2 * s / spacing) + 1
            gy, gx = np.mgrid[-n : n + 1, -n : n + 1].astype(float)
            gx = gx + 0.5 * (gy.astype(int) % 2)
            p = np.stack([gy.ravel() * 0.866, gx.ravel()], 1) * spacing
            p += rng.normal(0.0, 0.12 * spacing, p.shape)
            rr = np.hypot(p[:, 0], p[:, 1])
            p = p[rng.random(len(p)) < 0.95 * np.exp(-0.5 * (rr / s) ** 4)] + cc
            p = np.rint(p).astype(int)
            p = p[(p[:, 0] >= 0) & (p[:, 0] < H) & (p[:, 1] >= 0) & (p[:, 1] < W)]
            p = p[(tix[p[:, 0], p[:, 1]] == i) & (dist[p[:, 0], p[:, 1]] > 22.0)]
            pts_all.append(p)
            w_all.append(rng.uniform(0.45, 0.8, len(p)))
            # post-synaptic density where the cloud meets the membrane
            ray = np.rint(cc + dirn * np.arange(0.0, 2.0 * core[i] / lat + 2)[:, None]).astype(int)
            ray = ray[(ray[:, 0] >= 0) & (ray[:, 0] < H) & (ray[:, 1] >= 0) & (ray[:, 1] < W)]
            out_of_cell = np.flatnonzero(tix[ray[:, 0], ray[:, 1]] != i)
            if not len(out_of_cell) or out_of_cell[0] == 0:
                continue
            sp = ray[out_of_cell[0]]
            L = 90.0 / lat
            y0, y1 = int(max(0, sp[0] - 2 * L)), int(min(H, sp[0] + 2 * L + 1))
            x0, x1 = int(max(0, sp[1] - 2 * L)), int(min(W, sp[1] + 2 * L + 1))
            if y1 > y0 and x1 > x0:
                yy = np.arange(y0, y1)[:, None] - sp[0]
                xx = np.arange(x0, x1)[None, :] - sp[1]
                blob = np.exp(-0.5 * (yy**2 + xx**2) / (0.5 * L) ** 2)
                band = np.exp(-0.5 * (dist[y0:y1, x0:x1] / 20.0) ** 2) * (lab[y0:y1, x0:x1] != t.label[i])
                out[y0:y1, x0:x1] += 1.0 * (blob * band).astype(np.float32)
        if pts_all:
            pts = np.concatenate(pts_all)
            out += self._rings((H, W), pts, 18.0 / lat, np.concatenate(w_all))
        return out

    def _mitochondria(self, tix, dist, uy, ux, grain) -> np.ndarray:
        t, mi, ry, rx, H, W = self.tubes, self.mitos, self.ry, self.rx, self.H, self.W
        out = np.zeros((H, W), np.float32)
        if not len(mi):
            return out
        lat = 0.5 * (ry + rx)
        par = np.searchsorted(t.uid, mi.parent)
        r = self._r_eff()
        rc = np.maximum(r - _CORE_INSET, 1.0)
        for k in range(len(mi)):
            i = par[k]
            frac = min(1.0, mi.age[k] * self.rz / _TAPER_NM, (mi.length[k] - mi.age[k] * self.rz) / _TAPER_NM)
            frac = max(frac, 0.0) ** 0.5 * min(1.0, r[i] / t.r0[i])
            a, b = mi.a[k] * frac, mi.b[k] * frac
            if b < 8.0:
                continue
            c = (t.pos[i] + mi.off[k] * rc[i]) / [ry, rx] - 0.5
            R = a / lat + 2
            if not (-R < c[0] < H + R and -R < c[1] < W + R):
                continue
            ci = np.clip(np.rint(c).astype(int), 0, [H - 1, W - 1])
            c = c - [uy[ci[0], ci[1]], ux[ci[0], ci[1]]]
            y0, y1 = int(max(0, c[0] - R)), int(min(H, c[0] + R + 1))
            x0, x1 = int(max(0, c[1] - R)), int(min(W, c[1] + R + 1))
            if y1 <= y0 or x1 <= x0:
                continue
            dy = (np.arange(y0, y1)[:, None] - c[0]) * ry
            dx = (np.arange(x0, x1)[None, :] - c[1]) * rx
            th = mi.theta[k] + t.theta[i]
            u = dx * math.cos(th) + dy * math.sin(th)
            v = dy * math.cos(th) - dx * math.sin(th)
            q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            sub_d = dist[y0:y1, x0:x1]
            edge = np.minimum((1.0 - q) * b, sub_d - 14.0)  # nm inside the mitochondrion's outline
            inside = (edge > 0) & (tix[y0:y1, x0:x1] == i)
            if not inside.any():
                continue
            cr = np.cos(2 * np.pi * u / mi.period[k] + mi.phase[k] + 1.2 * grain[y0:y1, x0:x1])
            cristae = np.clip((cr - 0.45) / 0.55, 0.0, 1.0) * np.clip((edge - 3.0) / 8.0, 0.0, 1.0)
            rim = np.exp(-0.5 * ((edge - 4.0) / 3.5) ** 2)
            dens = 0.2 + 0.9 * cristae + 0.8 * rim
            out[y0:y1, x0:x1] += np.where(inside, dens, 0.0).astype(np.float32)
        return out

    # ------------------------------------------------------------------ iteration
    def sections(self, z0: int, z1: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (z, raw, labels) for z in [z0, z1); the state must be at or before z0."""
        if self.z > z0:
            raise RuntimeError("phantom state is past the requested section")
        while self.z < z0:
            self._step()
        while self.z < z1:
            raw, lab = self.render(self.z)
            yield self.z, raw, lab
            self._step()


def generate(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
    resolution=DEFAULT_RESOLUTION,
    z_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw uint8 (z,y,x), labels uint64 (z,y,x)) for sections ``z_range`` (default all)
    of the phantom of the given shape & seed.  Any z range equals the same slice of the whole."""
    shape, seed, resolution = _check(shape, seed, resolution)
    z0, z1 = _check_zrange(z_range, shape[0])
    ph = _Phantom(shape, seed, resolution)
    raw = np.empty((z1 - z0, shape[1], shape[2]), np.uint8)
    lab = np.empty((z1 - z0, shape[1], shape[2]), np.uint64)
    for z, r, l in ph.sections(z0, z1):
        raw[z - z0], lab[z - z0] = r, l
    return raw, lab


def write(path, shape=DEFAULT_SHAPE, seed: int = 0, resolution=DEFAULT_RESOLUTION, chunk_sections: int = 8) -> None:
    """Write the phantom in CREMI layout (``volumes/raw`` uint8, ``volumes/labels/neuron_ids``
    uint64, each with a ``resolution`` attribute), generating ``chunk_sections`` sections at a
    time so that memory stays bounded whatever the depth.  The file appears atomically."""
    import h5py

    from .io import LABELS_KEY, RAW_KEY, atomic_path

    shape, seed, resolution = _check(shape, seed, resolution)
    try:
        chunk_sections = int(chunk_sections)
    except (TypeError, ValueError):
        raise EmsrError(f"phantom: chunk_sections must be a positive integer, got {chunk_sections!r}") from None
    if chunk_sections < 1:
        raise EmsrError(f"phantom: chunk_sections must be a positive integer, got {chunk_sections}")
    depth, h, w = shape
    chunks = (1, min(256, h), min(256, w))
    ph = _Phantom(shape, seed, resolution)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dsets = []
        for key, dt in ((RAW_KEY, np.uint8), (LABELS_KEY, np.uint64)):
            ds = f.create_dataset(key, shape=shape, dtype=dt, chunks=chunks, compression="gzip", compression_opts=1)
            ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
            dsets.append(ds)
        f.attrs["generator"] = "emsrbench.phantom"
        f.attrs["seed"] = seed
        sections = ph.sections(0, depth)
        for z0 in range(0, depth, chunk_sections):
            z1 = min(depth, z0 + chunk_sections)
            raw = np.empty((z1 - z0, h, w), np.uint8)
            lab = np.empty((z1 - z0, h, w), np.uint64)
            for k in range(z1 - z0):
                _, raw[k], lab[k] = next(sections)
            dsets[0][z0:z1] = raw
            dsets[1][z0:z1] = lab


def _label_colours(lab: np.ndarray) -> np.ndarray:
    """Random but stable RGB colours per label id (a hash of the id)."""
    h = lab.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (8, 24, 40)], -1).astype(np.uint8)
    return (60 + rgb.astype(np.uint16) * 195 // 255).astype(np.uint8)


def render_png(
    path="docs/phantom_section.png",
    shape=(8, 512, 512),
    seed: int = 0,
    z: int | None = None,
    resolution=DEFAULT_RESOLUTION,
) -> None:
    """Save one section (the middle one by default) of a phantom as a PNG: raw on the left,
    the neuron ids in random colours on the right."""
    from PIL import Image

    shape, seed, resolution = _check(shape, seed, resolution)
    z = shape[0] // 2 if z is None else int(z)
    raw, lab = generate(shape, seed, resolution, z_range=(z, z + 1))
    gap = np.full((shape[1], 8, 3), 255, np.uint8)
    img = np.concatenate([np.repeat(raw[0][..., None], 3, -1), gap, _label_colours(lab[0])], 1)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(img).save(path)
