"""Procedural multi-view indoor scenes, rendered by vectorised numpy ray casting.

Every random choice comes from ``np.random.default_rng(seed)``, so a seed fixes a scene bit for bit.

Scene distribution (world frame: z up, floor at z = 0, unit-free lengths)
------------------------------------------------------------------------
* Room: axis-aligned box, x in [-a_x, b_x] and y in [-a_y, b_y] with a, b ~ U[4, 6] (8-12 units
  wide), ceiling z ~ U[3.6, 5]. Its six faces (4 walls, floor, ceiling) each get their own material.
* Objects: K ~ U{3..7}; kind uniform over sphere, box (yaw 0 with probability 0.3, else U[0, 90)
  deg) and vertical cylinder with flat caps; radius / half-extents ~ U[0.2, 0.45]; horizontal
  position uniform in the disc of radius 0.8 around the room centre; resting on the floor with
  probability 0.7, else floating U[0, 0.8] above it. Each object is re-drawn up to 10 times until
  its bounding sphere clears those of the objects before it; the last draw is kept, so crowded
  scenes may interpenetrate.
* Scene centre c = (0, 0, z_c), z_c ~ U[0.5, 1.0].
* Cameras (S frames): base azimuth ~ U[0, 360) deg; the arc base +- max_azimuth_deg is cut into S
  equal sub-arcs with one uniform azimuth in each, then the frames are shuffled, so the frame order
  is random along the arc (relative poses range from small to large baselines). Elevation
  ~ U[10, 35] deg above c; distance r0 * U[0.8, 1.2] from c with r0 ~ U[2.5, 3.0] per scene (so
  always inside the room and outside every object); look-at point c + U[-0.15, 0.15]^3; roll
  ~ U[-5, 5] deg about the optical axis; vertical field of view ~ U[45, 75] deg per frame, square
  pixels, fx = fy = (H/2) / tan(fov/2), principal point exactly (W/2, H/2).
* Compass-coded walls: the four walls always have the base hues red, green, blue and yellow (-x, +x,
  -y, +y faces; random saturation and value), like a real room whose walls differ. A 6M-parameter
  model trained for a few CPU hours cannot learn relative pose from cross-view correspondences alone
  (it stayed at the trivial level for 1000 steps); the colour code makes each view's orientation
  visible, so relative poses become learnable. VGGT-1B learns from correspondences instead.
* Materials (world-space solid textures, one per surface): kind uniform over checker, stripes, value
  noise (two octaves) and a smooth colour gradient (a sinusoid of 4 periods' wavelength); two
  colours per surface with a brightness gap of 0.3-0.5. Periods U[0.6, 1.6] on room faces (in-plane
  directions) and U[0.25, 0.5] on objects (randomly rotated 3-D checkers / stripes), noise cells
  half a period, so a period spans >= ~6 px at typical viewing distances.
* Shading, view independent: albedo * (ambient + (1 - ambient) max(0, n . l)) with ambient
  ~ U[0.35, 0.5] and one world-space light direction l per scene (elevation U[40, 80] deg); no
  specular term.

Camera and pixel conventions (VGGT's)
-------------------------------------
extrinsics [R | t] map world to camera, x_cam = R x_world + t, OpenCV axes (x right, y down,
z forward). Pixel (u, v), u = 0..W-1, v = 0..H-1 (no +0.5), sees the ray
K^-1 (u, v, 1) = ((u - cx) / fx, (v - cy) / fy, 1), so world_points = R^T (depth K^-1 (u, v, 1) - t)
exactly, depth being the camera-frame z.

Anti-aliasing
-------------
Textures are filtered analytically per pixel. A texture phase phi(p) (cycles) changes at the screen
rate rho = |(d phi / d p) [dp/du, dp/dv]| cycles per pixel, with the ray-plane footprint
dp/du = t (D_u - (n . D_u) / (n . D) D), D the pixel ray and D_u = R^T (1/fx, 0, 0) (same for v).
Each pattern is scaled by the Gaussian-filter gain exp(-2 pi^2 sigma^2 rho^2), sigma = 0.8 px, and
square-wave edges are ramps at least 1.5 px wide. Pixels on silhouettes and creases (surface id
change or normal turned by > 25 deg) are re-shaded with 2x2 sub-pixel rays and averaged; depth and
points always come from the pixel-centre ray. Geometry and shading run in float32.
"""

import colorsys
from dataclasses import dataclass

import numpy as np

DTYPE = np.float32
WALL_HUES = (0.0, 0.33, 0.6, 0.15)  # red, green, blue, yellow walls (-x, +x, -y, +y)
FAR_LIMIT = 100.0
FILTER_SIGMA_PX = 0.8
MIN_EDGE_PX = 1.5
EPS = 1e-6
PLACEMENT_TRIES = 10
NOISE_LATTICE = 32  # value-noise lattice period in cells, per axis
NUM_ROOM_FACES = 6
SUBPIXEL_OFFSETS = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of component-first vectors: [3, ...] x [3, ...] -> [...] (broadcasting)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _column(vector: np.ndarray) -> np.ndarray:
    """[3] -> [3, 1] float32, to broadcast one vector against component-first arrays [3, N]."""
    return np.asarray(vector, dtype=DTYPE)[:, None]


def _screen_rate(direction: np.ndarray, dp_du: np.ndarray, dp_dv: np.ndarray) -> np.ndarray:
    """Cycles per pixel of the phase p . d: sqrt((d . dp/du)^2 + (d . dp/dv)^2), [M]."""
    return np.sqrt(_dot(direction, dp_du) ** 2 + _dot(direction, dp_dv) ** 2)


def _filter_gain(rate: np.ndarray) -> np.ndarray:
    """Gain of the Gaussian pixel filter on `rate` cycles/px: exp(-2 pi^2 sigma^2 rate^2)."""
    return np.exp(-2.0 * np.pi**2 * FILTER_SIGMA_PX**2 * rate**2)


def _filtered_square(phase: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Band-limited square wave of unit period in [-1, 1]: gain(rho) clip(k tri(phi), -1, 1).

    tri(phi) = 4 |frac(phi) - 1/2| - 1; a ramp of the clipped wave is 1 / (2 k rho) px wide, kept
    >= MIN_EDGE_PX by k = clip(1 / (2 MIN_EDGE_PX rho), 1, 8). phase, rate [M] -> [M].
    """
    triangle = 4.0 * np.abs(phase - np.floor(phase) - 0.5) - 1.0
    slope = np.clip(1.0 / (2.0 * MIN_EDGE_PX * np.maximum(rate, 1e-6)), 1.0, 8.0)
    return _filter_gain(rate) * np.clip(slope * triangle, -1.0, 1.0)


def _lerp(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return a + weight * (b - a)


def _value_noise(q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Value noise with quintic interpolation: q [3, M] -> [M] in [0, 1].

    Lattice point (i, j, k) holds table[(i mod 32) 32^2 + (j mod 32) 32 + (k mod 32)], table [32^3]
    uniform in [0, 1]; values are blended with the weights w = 6 f^5 - 15 f^4 + 10 f^3 of the
    fractional part f of q (C2-smooth, so no feature is smaller than one lattice cell).
    """
    corner = np.floor(q)
    frac = q - corner
    weight = frac * frac * frac * (frac * (frac * 6.0 - 15.0) + 10.0)
    index = corner.astype(np.int32)
    i, j, k = (
        [(index[axis] + offset) & (NOISE_LATTICE - 1) for offset in (0, 1)] for axis in range(3)
    )
    planes = []
    for i_corner in i:
        rows = []
        for j_corner in j:
            row = i_corner * NOISE_LATTICE**2 + j_corner * NOISE_LATTICE
            rows.append(_lerp(table[row + k[0]], table[row + k[1]], weight[2]))
        planes.append(_lerp(rows[0], rows[1], weight[1]))
    return _lerp(planes[0], planes[1], weight[0])


@dataclass
class Material:
    """World-space procedural albedo: colour = colour_a + (colour_b - colour_a) m(p), m in [0, 1].

    kind "checker": m = 1/2 + 1/2 prod_k sq(p . d_k / period + offset_k) (sq: ``_filtered_square``);
    "stripes": the same with one direction; "noise": two octaves of value noise, of p / (period / 2)
    and of R p / (period / 4) with R the rotation whose rows are d_k (so the lattices do not align);
    "gradient": m = 1/2 + 1/2 sin(2 pi (p . d_0 / (4 period) + offset_0)).
    Every term is scaled by the filter gain of its screen rate, so m tends to 1/2 when minified.
    """

    kind: str
    colour_a: np.ndarray  # [3]
    colour_b: np.ndarray  # [3]
    directions: np.ndarray  # [k, 3] unit vectors
    period: float
    offsets: np.ndarray  # [k] phase offsets in cycles
    noise_table: np.ndarray | None  # [32^3] lattice values in [0, 1], for kind "noise" only

    def albedo(self, p: np.ndarray, dp_du: np.ndarray, dp_dv: np.ndarray) -> np.ndarray:
        """p, dp_du, dp_dv [3, M] -> albedo [3, M]."""
        if self.kind == "noise":
            m = self._noise(p, dp_du, dp_dv)
        elif self.kind == "gradient":
            d = _column(self.directions[0]) / (4.0 * self.period)
            phase = _dot(d, p) + self.offsets[0]
            m = 0.5 + 0.5 * _filter_gain(_screen_rate(d, dp_du, dp_dv)) * np.sin(
                2.0 * np.pi * phase
            )
        else:
            m = np.ones(p.shape[1], dtype=DTYPE)
            for direction, offset in zip(self.directions, self.offsets, strict=True):
                d = _column(direction) / self.period
                m = m * _filtered_square(_dot(d, p) + offset, _screen_rate(d, dp_du, dp_dv))
            m = 0.5 + 0.5 * m
        return _column(self.colour_a) + _column(self.colour_b - self.colour_a) * m

    def _noise(self, p: np.ndarray, dp_du: np.ndarray, dp_dv: np.ndarray) -> np.ndarray:
        """m = 1/2 + 1.6 sum_o w_o gain(rho_o) (N(q_o) - 1/2), w = (2/3, 1/3),
        L_o = period / 2^(o+1), q_0 = p / L_0, q_1 = R p / L_1.

        rho_o = |dp/d(u, v)| / (2 L_o): value noise of cell L has most energy below 1 / (2 L).
        """
        footprint = np.sqrt(_dot(dp_du, dp_du) + _dot(dp_dv, dp_dv))
        m = np.full(p.shape[1], 0.5, dtype=DTYPE)
        for octave, weight in enumerate((2.0 / 3.0, 1.0 / 3.0)):
            cell = self.period / 2.0 ** (octave + 1)
            q = p / cell if octave == 0 else np.einsum("ij,jm->im", self.directions, p) / cell
            noise = _value_noise(q, self.noise_table)
            m += 1.6 * weight * _filter_gain(footprint / (2.0 * cell)) * (noise - 0.5)
        return np.clip(m, 0.0, 1.0)


@dataclass
class Room:
    """Interior of the box lo <= x <= hi; face f = 2 axis + (1 on the hi side), inward normals."""

    lo: np.ndarray  # [3]
    hi: np.ndarray  # [3]

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance t = min_i max((lo_i - o_i) / d_i, (hi_i - o_i) / d_i), face id; [...]."""
        lo, hi = (
            np.asarray(x, dtype=DTYPE).reshape((3,) + (1,) * (d.ndim - 1))
            for x in (self.lo, self.hi)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            t_axes = np.maximum((lo - o) / d, (hi - o) / d)
        axis = np.argmin(t_axes, axis=0)[None]
        t = np.take_along_axis(t_axes, axis, axis=0)[0]
        face = 2 * axis[0] + (np.take_along_axis(d, axis, axis=0)[0] > 0)
        return t, face

    @staticmethod
    def normal(face: int) -> np.ndarray:
        """Inward unit normal [3] of a face."""
        n = np.zeros(3, dtype=DTYPE)
        n[face // 2] = -1.0 if face % 2 else 1.0
        return n


@dataclass
class Sphere:
    """Sphere |x - centre| <= radius."""

    centre: np.ndarray  # [3]
    radius: float

    @property
    def bounding_radius(self) -> float:
        return self.radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Nearest root t > 0 of |o + t d - c|^2 = r^2, inf on a miss: o, d [3, M] -> [M]."""
        oc = o - _column(self.centre)
        a, b, c = _dot(d, d), _dot(oc, d), _dot(oc, oc) - self.radius**2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc >= 0) & (t > EPS), t, np.inf).astype(DTYPE)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - _column(self.centre)) / self.radius


@dataclass
class Box:
    """Box with half-extents [3] about centre [3], rotated by yaw (radians) about world z."""

    centre: np.ndarray
    half_extents: np.ndarray
    yaw: float

    @property
    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.half_extents))

    @staticmethod
    def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
        """Rotate vectors v [3, ...] by `angle` radians about z."""
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        return np.stack([cos * v[0] - sin * v[1], sin * v[0] + cos * v[1], v[2]])

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Slab test in the box frame: t = max_i min(t1_i, t2_i) if <= min_i max(t1_i, t2_i)."""
        o_local = self._rotate(o - _column(self.centre), -self.yaw)
        d_local = self._rotate(d, -self.yaw)
        h = _column(self.half_extents)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-h - o_local) / d_local, (h - o_local) / d_local
        t_near = np.minimum(t1, t2).max(axis=0)
        t_far = np.maximum(t1, t2).min(axis=0)
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf).astype(DTYPE)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward normal of the face whose slab coordinate |p_local,i| / h_i is largest."""
        local = self._rotate(p - _column(self.centre), -self.yaw) / _column(self.half_extents)
        axis = np.argmax(np.abs(local), axis=0)[None]
        n_local = np.zeros_like(local)
        np.put_along_axis(n_local, axis, np.sign(np.take_along_axis(local, axis, 0)), 0)
        return self._rotate(n_local, self.yaw)


@dataclass
class Cylinder:
    """Vertical cylinder (x - c_x)^2 + (y - c_y)^2 <= r^2, |z - c_z| <= half_height, flat caps."""

    centre: np.ndarray  # [3], midpoint of the axis
    radius: float
    half_height: float

    @property
    def bounding_radius(self) -> float:
        return float(np.hypot(self.radius, self.half_height))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Nearest t > 0 over the side (quadratic in x, y, clipped in z) and the two cap discs."""
        rel = o - _column(self.centre)
        a = d[0] ** 2 + d[1] ** 2
        b = rel[0] * d[0] + rel[1] * d[1]
        disc = b * b - a * (rel[0] ** 2 + rel[1] ** 2 - self.radius**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            on_side = (
                (disc >= 0) & (t_side > EPS) & (np.abs(rel[2] + t_side * d[2]) <= self.half_height)
            )
            best = np.where(on_side, t_side, np.inf)
            for z_cap in (-self.half_height, self.half_height):
                t_cap = (z_cap - rel[2]) / d[2]
                cap_x, cap_y = rel[0] + t_cap * d[0], rel[1] + t_cap * d[1]
                in_disc = cap_x**2 + cap_y**2 <= self.radius**2
                best = np.where(in_disc & (t_cap > EPS) & (t_cap < best), t_cap, best)
        return best.astype(DTYPE)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Cap normal +-z where p is closer to a cap plane than to the side, else radial."""
        rel = p - _column(self.centre)
        radial = np.sqrt(rel[0] ** 2 + rel[1] ** 2)
        on_cap = np.abs(np.abs(rel[2]) - self.half_height) < np.abs(radial - self.radius)
        zero = np.zeros_like(radial)
        side = np.stack([rel[0] / self.radius, rel[1] / self.radius, zero])
        return np.where(on_cap, np.stack([zero, zero, np.sign(rel[2])]), side)


@dataclass
class Layout:
    """Room, objects, materials (6 room faces, then one per object), light, ambient, centre."""

    room: Room
    objects: list
    materials: list
    light: np.ndarray  # [3] unit vector towards the light
    ambient: float
    centre: np.ndarray  # [3]


def _sample_material(rng: np.random.Generator, face_normal: np.ndarray | None, wall: int | None = None) -> Material:
    """Room faces (face_normal given) get periods U[0.6, 1.6] and in-plane pattern directions at a
    random angle; objects get periods U[0.25, 0.5] and a random orthonormal frame, as does noise.
    Wall ``wall`` (0..3) gets the base hue WALL_HUES[wall]."""
    kind = ("checker", "stripes", "noise", "gradient")[rng.integers(4)]
    colour_a = rng.uniform(0.1, 0.9, 3)
    if wall is not None:  # compass-coded walls: a fixed hue per wall, random saturation and value
        colour_a = np.array(colorsys.hsv_to_rgb(WALL_HUES[wall], rng.uniform(0.45, 0.8), rng.uniform(0.45, 0.85)))
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.5)
    if not 0.05 <= colour_a.mean() + shift <= 0.95:
        shift = -shift
    colour_b = np.clip(colour_a + shift + rng.normal(0.0, 0.1, 3), 0.0, 1.0)
    if face_normal is None or kind == "noise":
        directions = np.linalg.qr(rng.normal(size=(3, 3)))[0].T  # rows: random orthonormal frame
        period = rng.uniform(0.25, 0.5) if face_normal is None else rng.uniform(0.6, 1.6)
    else:
        tangents = np.linalg.svd(face_normal[None])[2][1:]  # [2, 3] orthonormal basis of the face
        angle = rng.uniform(0.0, np.pi)
        in_plane = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        directions, period = in_plane @ tangents, rng.uniform(0.6, 1.6)
    if kind in ("stripes", "gradient"):
        directions = directions[:1]
    return Material(
        kind=kind,
        colour_a=colour_a.astype(DTYPE),
        colour_b=colour_b.astype(DTYPE),
        directions=directions.astype(DTYPE),
        period=float(period),
        offsets=rng.uniform(0.0, 1.0, len(directions)).astype(DTYPE),
        noise_table=(
            rng.uniform(0.0, 1.0, NOISE_LATTICE**3).astype(DTYPE) if kind == "noise" else None
        ),
    )


def _sample_object(rng: np.random.Generator) -> Sphere | Box | Cylinder:
    kind = rng.integers(3)
    radius = 0.8 * np.sqrt(rng.uniform())  # uniform in the disc of radius 0.8 around the centre
    angle = rng.uniform(0.0, 2.0 * np.pi)
    size = rng.uniform(0.2, 0.45, 3)
    lift = 0.0 if rng.uniform() < 0.7 else rng.uniform(0.0, 0.8)
    half_height = size[0] if kind == 0 else size[2]
    centre = np.array([radius * np.cos(angle), radius * np.sin(angle), lift + half_height])
    if kind == 0:
        return Sphere(centre, float(size[0]))
    if kind == 1:
        yaw = 0.0 if rng.uniform() < 0.3 else rng.uniform(0.0, np.pi / 2)
        return Box(centre, size, float(yaw))
    return Cylinder(centre, float(size[0]), float(size[2]))


def _sample_layout(rng: np.random.Generator) -> Layout:
    lo = np.array([-rng.uniform(4.0, 6.0), -rng.uniform(4.0, 6.0), 0.0])
    hi = np.array([rng.uniform(4.0, 6.0), rng.uniform(4.0, 6.0), rng.uniform(3.6, 5.0)])
    objects = []
    for _ in range(rng.integers(3, 8)):
        for _ in range(PLACEMENT_TRIES):
            candidate = _sample_object(rng)
            if all(
                np.linalg.norm(candidate.centre - other.centre)
                >= candidate.bounding_radius + other.bounding_radius
                for other in objects
            ):
                break
        objects.append(candidate)
    materials = [_sample_material(rng, Room.normal(face), face if face < 4 else None) for face in range(NUM_ROOM_FACES)]
    materials += [_sample_material(rng, None) for _ in objects]
    azimuth, elevation = rng.uniform(0.0, 2.0 * np.pi), np.deg2rad(rng.uniform(40.0, 80.0))
    light = np.array(
        [
            np.cos(elevation) * np.cos(azimuth),
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation),
        ]
    )
    centre = np.array([0.0, 0.0, rng.uniform(0.5, 1.0)])
    return Layout(Room(lo, hi), objects, materials, light, float(rng.uniform(0.35, 0.5)), centre)


def look_at_extrinsics(positions: np.ndarray, targets: np.ndarray, rolls: np.ndarray) -> np.ndarray:
    """[R | t] [S, 3, 4] for cameras at positions [S, 3] looking at targets [S, 3], rolled by rolls
    [S] radians: rows of R = (right, down, forward) in world axes (z up), t = -R position, with
    forward = (target - position) / |.|, right = forward x e_z / |.|, down = forward x right, and
    (right, down) rotated by the roll about forward.
    """
    forward = targets - positions
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    cos, sin = np.cos(rolls)[:, None], np.sin(rolls)[:, None]
    rotations = np.stack([cos * right + sin * down, -sin * right + cos * down, forward], axis=1)
    translations = -np.einsum("sij,sj->si", rotations, positions)
    return np.concatenate([rotations, translations[:, :, None]], axis=2)


def _sample_cameras(
    rng: np.random.Generator,
    centre: np.ndarray,
    num_frames: int,
    image_size: int,
    max_azimuth_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Extrinsics [S, 3, 4] and intrinsics [S, 3, 3] (float64) as in the module docstring."""
    arc = np.deg2rad(max_azimuth_deg)
    strata = (np.arange(num_frames) + rng.uniform(size=num_frames)) / num_frames
    azimuths = rng.uniform(0.0, 2.0 * np.pi) + rng.permutation(arc * (2.0 * strata - 1.0))
    elevations = np.deg2rad(rng.uniform(10.0, 35.0, num_frames))
    distances = rng.uniform(2.5, 3.0) * rng.uniform(0.8, 1.2, num_frames)
    targets = centre + rng.uniform(-0.15, 0.15, (num_frames, 3))
    rolls = np.deg2rad(rng.uniform(-5.0, 5.0, num_frames))
    fovs = np.deg2rad(rng.uniform(45.0, 75.0, num_frames))
    directions = np.stack(
        [
            np.cos(elevations) * np.cos(azimuths),
            np.cos(elevations) * np.sin(azimuths),
            np.sin(elevations),
        ],
        axis=1,
    )
    positions = centre + distances[:, None] * directions
    extrinsics = look_at_extrinsics(positions, targets, rolls)
    intrinsics = np.zeros((num_frames, 3, 3))
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = (image_size / 2.0) / np.tan(fovs / 2.0)
    intrinsics[:, 0, 2] = intrinsics[:, 1, 2] = image_size / 2.0
    intrinsics[:, 2, 2] = 1.0
    return extrinsics, intrinsics


def _trace(layout: Layout, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of the rays o + t d (o, d [3, ...], broadcastable): t [...] and surface id [...]
    (room face 0..5, object k -> 6 + k). An object is only intersected exactly on the rays that hit
    its bounding sphere, |oc|^2 |d|^2 - (oc . d)^2 <= r^2 |d|^2 with oc = o - centre."""
    t, surface = layout.room.intersect(o, d)
    t, surface = t.reshape(-1), surface.reshape(-1)
    o_flat, d_flat = np.broadcast_to(o, d.shape).reshape(3, -1), d.reshape(3, -1)
    d_squared = _dot(d, d)
    for index, obj in enumerate(layout.objects):
        oc = o - _column(obj.centre).reshape((3,) + (1,) * (d.ndim - 1))
        gap = d_squared * (_dot(oc, oc) - obj.bounding_radius**2) - _dot(oc, d) ** 2
        rays = np.flatnonzero(gap < 0)
        t_obj = obj.intersect(np.take(o_flat, rays, axis=1), np.take(d_flat, rays, axis=1))
        closer = t_obj < t[rays]
        t[rays[closer]] = t_obj[closer]
        surface[rays[closer]] = NUM_ROOM_FACES + index
    return t.reshape(d.shape[1:]), surface.reshape(d.shape[1:])


def _shade(
    layout: Layout,
    p: np.ndarray,
    d: np.ndarray,
    t: np.ndarray,
    surface: np.ndarray,
    frame: np.ndarray,
    pixel_steps: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Colour [3, N] and normal [3, N] at the hits p [3, N] of rays d [3, N] at distance t [N].

    colour = albedo(p) (ambient + (1 - ambient) max(0, n . l)), the material seeing the footprint
    dp/du = t (D_u - (n . D_u) / (n . D) D) and dp/dv likewise, with (D_u, D_v) = pixel_steps
    [3, S] taken at each ray's frame [N]. Rays are sorted by surface once, so each surface shades
    one contiguous slice.
    """
    order = np.argsort(surface.astype(np.int16), kind="stable")
    bounds = np.searchsorted(surface[order], np.arange(len(layout.materials) + 1))
    p, d = np.take(p, order, axis=1), np.take(d, order, axis=1)
    d_u, d_v = (np.take(step, frame[order], axis=1) for step in pixel_steps)
    t = t[order]
    colour, normal = np.empty_like(d), np.empty_like(d)
    for index, material in enumerate(layout.materials):
        rows = slice(bounds[index], bounds[index + 1])
        if rows.start == rows.stop:
            continue
        if index < NUM_ROOM_FACES:
            n = np.broadcast_to(_column(Room.normal(index)), p[:, rows].shape)
        else:
            n = layout.objects[index - NUM_ROOM_FACES].normal(p[:, rows])
        n_dot_d = _dot(n, d[:, rows])
        n_dot_d = np.where(np.abs(n_dot_d) < EPS, EPS, n_dot_d)
        dp_du = t[rows] * (d_u[:, rows] - _dot(n, d_u[:, rows]) / n_dot_d * d[:, rows])
        dp_dv = t[rows] * (d_v[:, rows] - _dot(n, d_v[:, rows]) / n_dot_d * d[:, rows])
        lambert = np.maximum(_dot(n, _column(layout.light)), 0.0)
        colour[:, rows] = material.albedo(p[:, rows], dp_du, dp_dv) * (
            layout.ambient + (1.0 - layout.ambient) * lambert
        )
        normal[:, rows] = n
    unsorted = np.empty_like(order)
    unsorted[order] = np.arange(order.size)
    return np.take(colour, unsorted, axis=1), np.take(normal, unsorted, axis=1)


def _edge_pixels(surface: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Pixels [S, H, W] with a 4-neighbour on another surface id or a normal turned > 25 degrees
    (n . n' < 0.9); surface [S, H, W], normal [3, S, H, W]."""
    edge = np.zeros(surface.shape, dtype=bool)
    for axis in (1, 2):
        head = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        tail = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        differs = (surface[head] != surface[tail]) | (
            _dot(normal[(slice(None),) + head], normal[(slice(None),) + tail]) < 0.9
        )
        edge[head] |= differs
        edge[tail] |= differs
    return edge


def _supersample(
    layout: Layout,
    o: np.ndarray,
    d: np.ndarray,
    frame: np.ndarray,
    pixel_steps: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Mean colour [3, M] of the 2x2 sub-pixel rays D + du D_u + dv D_v, (du, dv) in {-1/4, 1/4}^2,
    of pixels with centre rays o + t D (o, D [3, M]) in `frame` [M] with per-frame pixel steps
    (D_u, D_v) [3, S]; all 4 M rays are traced and shaded in one batch."""
    d_u, d_v = (np.take(step, frame, axis=1)[:, None] for step in pixel_steps)
    offsets = np.array(SUBPIXEL_OFFSETS, dtype=DTYPE).T[:, :, None]  # [2, 4, 1]
    d_sub = d[:, None] + offsets[0] * d_u + offsets[1] * d_v  # [3, 4, M]
    t, surface = _trace(layout, o[:, None], d_sub)
    shape = (3, d_sub[0].size)
    colour = _shade(
        layout,
        (o[:, None] + t * d_sub).reshape(shape),
        d_sub.reshape(shape),
        t.reshape(-1),
        surface.reshape(-1),
        np.tile(frame, len(SUBPIXEL_OFFSETS)),
        pixel_steps,
    )[0]
    return colour.reshape(d_sub.shape).mean(axis=1)


def _pixel_rays(extrinsics: np.ndarray, intrinsics: np.ndarray, image_size: int):
    """Camera centres o = -R^T t [3, S], pixel rays D = R^T ((u-cx)/fx, (v-cy)/fy, 1) [3, S, H*W]
    and pixel steps D_u = R^T (1/fx, 0, 0), D_v = R^T (0, 1/fy, 0) [3, S], all float32."""
    rotations_t = extrinsics[:, :, :3].transpose(0, 2, 1)  # world-from-camera [S, 3, 3]
    origins = -np.einsum("sij,sj->is", rotations_t, extrinsics[:, :, 3])
    pixel = np.arange(image_size, dtype=np.float64)
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    x = ((pixel - intrinsics[:, 0, 2, None]) / fx[:, None])[:, None, :]  # [S, 1, W]
    y = ((pixel - intrinsics[:, 1, 2, None]) / fy[:, None])[:, :, None]  # [S, H, 1]
    axes = rotations_t.transpose(2, 1, 0)[
        ..., None, None
    ]  # world camera axes [3 (cam), 3, S, 1, 1]
    directions = (axes[0] * x + axes[1] * y + axes[2]).reshape(3, len(fx), -1)
    d_u, d_v = axes[0, :, :, 0, 0] / fx, axes[1, :, :, 0, 0] / fy
    return tuple(a.astype(DTYPE) for a in (origins, directions, d_u, d_v))


def render_scene(
    seed: int, num_frames: int = 8, image_size: int = 112, max_azimuth_deg: float = 60.0
) -> dict:
    """Render one scene as S = num_frames views of H = W = image_size pixels.

    Returns numpy arrays: images [S, 3, H, W] float32 in [0, 1]; depth [S, H, W] float32 camera z;
    extrinsics [S, 3, 4] float32 camera-from-world; intrinsics [S, 3, 3] float32; world_points
    [S, H, W, 3] float32 = R^T (depth K^-1 (u, v, 1) - t); valid [S, H, W] bool (finite depth
    in (0, FAR_LIMIT)); seed and num_frames as int64 scalars.
    """
    rng = np.random.default_rng(seed)
    layout = _sample_layout(rng)
    extrinsics, intrinsics = _sample_cameras(
        rng, layout.centre, num_frames, image_size, max_azimuth_deg
    )
    origins, d, d_u, d_v = _pixel_rays(extrinsics, intrinsics, image_size)
    t, surface = _trace(layout, origins[:, :, None], d)  # t is the camera z, as D has z_cam = 1
    points = origins[:, :, None] + t * d  # [3, S, H*W]
    num_rays, pixels_per_frame = t.size, image_size * image_size
    frame = np.repeat(np.arange(num_frames), pixels_per_frame)
    colour, normal = _shade(
        layout,
        points.reshape(3, num_rays),
        d.reshape(3, num_rays),
        t.reshape(num_rays),
        surface.reshape(num_rays),
        frame,
        (d_u, d_v),
    )

    grid = (num_frames, image_size, image_size)
    edge = np.flatnonzero(_edge_pixels(surface.reshape(grid), normal.reshape((3,) + grid)))
    edge_frame = edge // pixels_per_frame
    colour[:, edge] = _supersample(
        layout,
        np.take(origins, edge_frame, axis=1),
        np.take(d.reshape(3, num_rays), edge, axis=1),
        edge_frame,
        (d_u, d_v),
    )

    depth = t.reshape(grid)
    return {
        "images": np.clip(colour.reshape((3,) + grid), 0.0, 1.0).transpose(1, 0, 2, 3).copy(),
        "depth": depth,
        "extrinsics": extrinsics.astype(np.float32),
        "intrinsics": intrinsics.astype(np.float32),
        "world_points": np.moveaxis(points.reshape((3,) + grid), 0, -1).copy(),
        "valid": np.isfinite(depth) & (depth > 0) & (depth < FAR_LIMIT),
        "seed": np.int64(seed),
        "num_frames": np.int64(num_frames),
    }
