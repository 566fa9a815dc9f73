"""Procedural face identities: the embedded default data set, generated rather than downloaded.

No face data set may be fetched at run time, so nptface draws its own faces. An *identity* is a
seeded parameter vector (face shape, skin tone, hair style and colour, brows, eye spacing, size
and colour, nose, mouth, glasses, beard, moles, ears); an *image* is that identity rendered
under nuisance: yaw/pitch/roll (approximated in 2-D), expression, directional illumination,
colour cast, background clutter, blur, sensor noise, JPEG, partial occlusion, misalignment
(shift/scale/rotation) and resolution drop. Everything is a pure function of
``(seed, identity id, image index, domain)``, so any worker on any machine renders the same
pixels, and identity ids in disjoint ranges (:data:`SERVER_IDS`, :data:`CLIENT_IDS`,
:data:`HELDOUT_IDS`) are different people by construction.

The task is made hard on purpose: a share of identities are *look-alikes*, small perturbations
of a common family face, and the nuisance is strong enough that raw pixels do not identify a
person (an untrained network verifies poorly, a trained one well), so losses can be told apart.
Named *domains* shift the nuisance and capture distributions (studio vs low-light phone vs CCTV)
for federated clients that do not look like the server's training data.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 112
SERVER_IDS = range(0, 1_000_000)
CLIENT_IDS = range(1_000_000, 9_000_000)
HELDOUT_IDS = range(9_000_000, 10_000_000)
_FAMILY_SIZE = 2  # look-alike families are consecutive id pairs, so they never straddle ranges
_PARAMS = 40  # length of an identity's parameter vector
_LOOKALIKE_SPREAD = 0.07  # std of a look-alike's offset from its family face, in [0, 1] units


@dataclass(frozen=True)
class Domain:
    """The capture conditions of a population of images: ranges the nuisance is drawn from."""

    name: str
    yaw: float = 0.5  # max |yaw|, 1 = profile-ish
    pitch: float = 0.3
    roll_degrees: float = 10.0
    expression: float = 0.6  # strength of smile / open mouth / blink / brow raise
    brightness: tuple[float, float] = (0.75, 1.15)
    light_gradient: float = 0.35  # max amplitude of a directional light across the face
    colour_cast: float = 0.12  # max per-channel gain deviation
    clutter: float = 0.5  # background shapes per image, on average about 6x this
    shift: float = 0.06  # max misalignment, as a fraction of the image side
    scale: tuple[float, float] = (0.9, 1.1)
    blur_prob: float = 0.3
    blur_radius: tuple[float, float] = (0.4, 1.4)
    noise_sigma: tuple[float, float] = (2.0, 9.0)  # grey levels
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 90)
    occlusion_prob: float = 0.25
    lowres_prob: float = 0.2
    lowres_side: tuple[int, int] = (28, 64)
    grey_prob: float = 0.05

    def __post_init__(self) -> None:
        for name in ("blur_prob", "jpeg_prob", "occlusion_prob", "lowres_prob", "grey_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Domain {self.name!r}: {name} must be a probability in [0, 1], got {value}")


DOMAINS: dict[str, Domain] = {
    domain.name: domain
    for domain in (
        Domain(
            "studio",
            yaw=0.2,
            pitch=0.1,
            roll_degrees=4.0,
            expression=0.3,
            brightness=(0.95, 1.05),
            light_gradient=0.1,
            colour_cast=0.04,
            clutter=0.0,
            shift=0.02,
            scale=(0.97, 1.03),
            blur_prob=0.05,
            noise_sigma=(1.0, 3.0),
            jpeg_prob=0.1,
            jpeg_quality=(80, 95),
            occlusion_prob=0.0,
            lowres_prob=0.0,
            grey_prob=0.0,
        ),
        Domain("wild"),
        Domain(
            "phone-lowlight",
            yaw=0.4,
            brightness=(0.35, 0.65),
            light_gradient=0.45,
            colour_cast=0.25,
            blur_prob=0.5,
            blur_radius=(0.6, 1.8),
            noise_sigma=(8.0, 20.0),
            jpeg_prob=0.7,
            jpeg_quality=(40, 80),
            occlusion_prob=0.15,
            lowres_prob=0.1,
        ),
        Domain(
            "cctv-lowres",
            yaw=0.7,
            pitch=0.5,
            roll_degrees=14.0,
            expression=0.4,
            brightness=(0.7, 1.2),
            light_gradient=0.3,
            colour_cast=0.08,
            clutter=0.8,
            shift=0.08,
            scale=(0.85, 1.15),
            blur_prob=0.6,
            noise_sigma=(4.0, 12.0),
            jpeg_prob=0.9,
            jpeg_quality=(20, 55),
            occlusion_prob=0.2,
            lowres_prob=0.9,
            lowres_side=(20, 40),
            grey_prob=0.6,
        ),
    )
}


def get_domain(name: str) -> Domain:
    try:
        return DOMAINS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic domain {name!r}; expected one of {sorted(DOMAINS)}") from None


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(key) & 0xFFFFFFFF for key in keys] + [0xFACE])


def _domain_key(name: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def _check_identity(identity: int) -> None:
    if identity < 0 or identity >= HELDOUT_IDS.stop:
        raise ValueError(f"identity ids must lie in [0, {HELDOUT_IDS.stop}), got {identity}")


def identity_vector(identity: int, seed: int = 0, lookalike_share: float = 0.3) -> np.ndarray:
    """The identity's appearance parameters in [0, 1]^40; look-alikes share a family face."""
    _check_identity(identity)
    if not 0.0 <= lookalike_share <= 1.0:
        raise ValueError(f"lookalike_share must lie in [0, 1], got {lookalike_share}")
    family = identity // _FAMILY_SIZE
    if _rng(seed, family, 1).random() < lookalike_share:
        base = _rng(seed, family, 2).random(_PARAMS)
        offset = _rng(seed, identity, 3).normal(0.0, _LOOKALIKE_SPREAD, _PARAMS)
        # Keep what makes a person recognisable at a glance (hair style, glasses, beard) shared.
        for discrete in (6, 24, 26):
            offset[discrete] = 0.0
        return np.clip(base + offset, 0.0, 1.0)
    return _rng(seed, identity, 4).random(_PARAMS)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _mix(c1: Sequence[float], c2: Sequence[float], t: float) -> tuple[int, int, int]:
    return tuple(int(round(_lerp(a, b, t))) for a, b in zip(c1, c2))  # type: ignore[return-value]


_SKIN = ((246, 212, 186), (198, 142, 104), (92, 56, 38))
_HAIR = ((22, 18, 16), (84, 52, 30), (150, 98, 52), (214, 178, 104), (160, 64, 30), (160, 160, 160))
_IRIS = ((70, 40, 20), (40, 90, 160), (60, 120, 70), (110, 110, 120), (30, 20, 15))


def _palette(colours: Sequence[Sequence[int]], t: float) -> tuple[int, int, int]:
    position = min(t, 0.9999) * (len(colours) - 1)
    i = int(position)
    return _mix(colours[i], colours[min(i + 1, len(colours) - 1)], position - i)


@dataclass(frozen=True)
class _Nuisance:
    yaw: float
    pitch: float
    roll: float
    smile: float
    mouth_open: float
    eye_open: float
    brow_raise: float


class _NoiseBank:
    """Pre-drawn Gaussian noise tiles: cropping one at a random offset costs far less than drawing."""

    def __init__(self, side: int, seed: int = 12345) -> None:
        self.tiles = np.random.default_rng(seed).standard_normal((8, side * 2, side * 2, 3)).astype(np.float32)
        self.side = side

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        tile = self.tiles[rng.integers(len(self.tiles))]
        y = int(rng.integers(tile.shape[0] - height + 1))
        x = int(rng.integers(tile.shape[1] - width + 1))
        return tile[y : y + height, x : x + width]


class FaceRenderer:
    """Renders identity images; holds only precomputed grids and noise, so it is cheap to copy."""

    def __init__(self, image_size: int = IMAGE_SIZE, seed: int = 0, lookalike_share: float = 0.3) -> None:
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
        if not 0.0 <= lookalike_share <= 1.0:
            raise ValueError(f"lookalike_share must lie in [0, 1], got {lookalike_share}")
        self.size = image_size
        self.seed = seed
        self.lookalike_share = lookalike_share
        axis = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
        self._grid_x, self._grid_y = np.meshgrid(axis, axis)
        self._noise = _NoiseBank(image_size)

    def render(self, identity: int, index: int, domain: Domain | str = "wild") -> np.ndarray:
        """One RGB uint8 image (size, size, 3) of ``identity``, the ``index``-th of its images."""
        domain = get_domain(domain) if isinstance(domain, str) else domain
        params = identity_vector(identity, self.seed, self.lookalike_share)
        rng = _rng(self.seed, identity, index, _domain_key(domain.name), 5)
        nuisance = _Nuisance(
            yaw=rng.uniform(-domain.yaw, domain.yaw),
            pitch=rng.uniform(-domain.pitch, domain.pitch),
            roll=rng.uniform(-domain.roll_degrees, domain.roll_degrees),
            smile=rng.uniform(-0.3, 1.0) * domain.expression,
            mouth_open=max(0.0, rng.uniform(-0.6, 1.0)) * domain.expression,
            eye_open=1.0
            - (0.9 if rng.random() < 0.08 * domain.expression else rng.uniform(0, 0.4) * domain.expression),
            brow_raise=rng.uniform(-1.0, 1.0) * domain.expression,
        )
        background = self._background(rng, domain)
        image = Image.new("RGB", (self.size, self.size), background)
        draw = ImageDraw.Draw(image)
        self._clutter(draw, rng, domain, background)
        self._face(draw, params, nuisance)
        if rng.random() < domain.occlusion_prob:
            self._occlude(draw, rng)
        image = self._misalign(image, rng, domain, nuisance.roll, background)
        return self._capture(image, rng, domain)

    # -- scene -------------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator, domain: Domain) -> tuple[int, int, int]:
        if domain.clutter == 0.0:
            grey = int(rng.integers(170, 230))
            return (grey, grey, grey)
        return tuple(int(v) for v in rng.integers(20, 235, 3))  # type: ignore[return-value]

    def _clutter(
        self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, domain: Domain, bg: tuple[int, int, int]
    ) -> None:
        s = self.size
        for _ in range(int(rng.poisson(6 * domain.clutter))):
            x0, y0 = rng.integers(-s // 4, s, 2)
            w, h = rng.integers(s // 8, s // 2, 2)
            colour = tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(bg, rng.integers(-70, 70, 3)))
            box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)

    def _face(self, draw: ImageDraw.ImageDraw, p: np.ndarray, n: _Nuisance) -> None:
        s = self.size / 112.0  # all geometry is designed at 112 px and scaled
        skin = _palette(_SKIN, p[3])
        skin = (min(255, skin[0] + int(18 * (p[4] - 0.5))), skin[1], min(255, skin[2] + int(14 * (p[5] - 0.5))))
        shade = _mix(skin, (40, 20, 10), 0.35)
        hair = _mix(_palette(_HAIR, p[7]), (255, 255, 255), 0.25 * p[8])
        cx = 56 * s + n.yaw * 6 * s
        cy = 60 * s + n.pitch * 3 * s
        half_w = _lerp(30, 40, p[0]) * s * (1 - 0.12 * abs(n.yaw))
        half_h = _lerp(38, 47, p[1]) * s
        feature_dx = n.yaw * half_w * 0.45  # features slide towards the turned side
        feature_dy = n.pitch * half_h * 0.25
        style = int(p[6] * 6)  # 0 bald, 1 short, 2 long, 3 fringe, 4 side part, 5 curly

        if style == 2:  # long hair falls behind the face and shoulders
            draw.rounded_rectangle(
                (cx - half_w * 1.25, cy - half_h * 1.05, cx + half_w * 1.25, cy + half_h * 1.35),
                radius=int(20 * s),
                fill=hair,
            )
        draw.rectangle((cx - half_w * 0.45, cy + half_h * 0.6, cx + half_w * 0.45, 112 * s), fill=shade)  # neck
        ear_h = _lerp(9, 15, p[34]) * s
        ear_y = cy - 2 * s + feature_dy
        for side in (-1, 1):
            ex = cx + side * half_w * (0.97 - 0.25 * side * n.yaw)
            draw.ellipse((ex - 5 * s, ear_y - ear_h, ex + 5 * s, ear_y + ear_h), fill=shade)
        # Face: an ellipse for the cranium and a chin polygon whose pointiness is the jaw.
        draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h * 0.8), fill=skin)
        chin_y = cy + half_h * _lerp(0.95, 1.08, p[2])
        jaw_x = half_w * _lerp(0.55, 0.85, p[2])
        draw.polygon(
            [
                (cx - half_w * 0.98, cy + 0.2 * half_h),
                (cx - jaw_x, cy + half_h * 0.8),
                (cx + feature_dx * 0.3, chin_y),
                (cx + jaw_x, cy + half_h * 0.8),
                (cx + half_w * 0.98, cy + 0.2 * half_h),
            ],
            fill=skin,
        )
        if p[35] > 0.5:  # cheek blush / freckle tone, a stable skin trait
            for side in (-1, 1):
                bx = cx + side * half_w * 0.55 + feature_dx
                draw.ellipse(
                    (bx - 7 * s, cy + 6 * s, bx + 7 * s, cy + 14 * s),
                    fill=_mix(skin, (200, 80, 80), 0.25 * (p[35] - 0.5) * 2),
                )
        self._hair(draw, style, hair, cx, cy, half_w, half_h, p, s)

        eye_y = cy + _lerp(-14, -4, p[15]) * s + feature_dy
        eye_dx = _lerp(11, 18, p[13]) * s
        eye_r = _lerp(3.5, 6.5, p[14]) * s
        iris = _palette(_IRIS, p[16])
        brow_y = eye_y - _lerp(6, 11, p[12]) * s - n.brow_raise * 2 * s
        brow_w = _lerp(1.5, 4.5, p[10]) * s
        for side in (-1, 1):
            ex = cx + side * eye_dx + feature_dx
            far = side * n.yaw < 0  # the eye on the side turned away looks narrower
            rx = eye_r * (1.45 if not far else 1.45 * (1 - 0.35 * abs(n.yaw)))
            ry = max(0.6 * s, eye_r * 0.8 * n.eye_open)
            draw.ellipse((ex - rx, eye_y - ry, ex + rx, eye_y + ry), fill=(245, 245, 240))
            ir = min(rx, eye_r * 0.75)
            if ry > 1.2 * s:
                draw.ellipse((ex - ir, eye_y - min(ir, ry), ex + ir, eye_y + min(ir, ry)), fill=iris)
                draw.ellipse((ex - ir * 0.4, eye_y - ir * 0.4, ex + ir * 0.4, eye_y + ir * 0.4), fill=(10, 10, 10))
            slant = (p[11] - 0.5) * 6 * s * side
            draw.line(
                [(ex - rx * 1.1, brow_y + slant), (ex + rx * 1.1, brow_y - slant)],
                fill=_mix(hair, (0, 0, 0), 0.3),
                width=max(1, int(round(brow_w))),
            )

        nose_top = eye_y + 3 * s
        nose_len = _lerp(10, 20, p[17]) * s
        nose_w = _lerp(3.5, 8.0, p[18]) * s
        nx = cx + feature_dx * 1.15
        if p[19] < 0.5:
            draw.polygon(
                [(nx, nose_top), (nx - nose_w, nose_top + nose_len), (nx + nose_w, nose_top + nose_len)], fill=shade
            )
        else:
            draw.line([(nx, nose_top), (nx + nose_w * 0.5, nose_top + nose_len)], fill=shade, width=max(1, int(2 * s)))
            draw.line(
                [(nx - nose_w, nose_top + nose_len), (nx + nose_w, nose_top + nose_len)],
                fill=shade,
                width=max(1, int(2 * s)),
            )

        mouth_y = nose_top + nose_len + _lerp(5, 11, p[22]) * s
        mouth_w = _lerp(8, 16, p[20]) * s * (1 + 0.15 * n.smile)
        lip = _mix(skin, (170, 40, 50), _lerp(0.3, 0.8, p[23]))
        lip_h = _lerp(1.5, 4.0, p[21]) * s
        mx = cx + feature_dx
        if p[26] < 0.15:  # full beard below the mouth line
            draw.chord(
                (cx - half_w * 0.85, mouth_y - 10 * s, cx + half_w * 0.85, chin_y + 4 * s),
                0,
                180,
                fill=_mix(hair, (0, 0, 0), 0.2),
            )
        elif p[26] < 0.3:  # moustache
            draw.rectangle(
                (mx - mouth_w, mouth_y - lip_h - 4 * s, mx + mouth_w, mouth_y - lip_h), fill=_mix(hair, (0, 0, 0), 0.2)
            )
        open_h = n.mouth_open * 7 * s
        curve = n.smile * 5 * s
        draw.chord(
            (mx - mouth_w, mouth_y - lip_h - curve, mx + mouth_w, mouth_y + lip_h + open_h + curve), 0, 180, fill=lip
        )
        draw.chord((mx - mouth_w, mouth_y - lip_h, mx + mouth_w, mouth_y + lip_h), 180, 360, fill=lip)
        if open_h > 1.5 * s:
            draw.ellipse((mx - mouth_w * 0.6, mouth_y, mx + mouth_w * 0.6, mouth_y + open_h), fill=(60, 20, 25))

        for mole in range(int(p[27] * 4)):  # moles at identity-fixed places
            mxp = cx + (p[28 + 2 * mole] - 0.5) * half_w * 1.4 + feature_dx
            myp = cy + (p[29 + 2 * mole] - 0.3) * half_h * 1.1
            draw.ellipse(
                (mxp - 1.5 * s, myp - 1.5 * s, mxp + 1.5 * s, myp + 1.5 * s), fill=_mix(skin, (40, 20, 10), 0.7)
            )

        if p[24] < 0.2:  # glasses, round or square, frame colour from the identity
            frame = _mix((20, 20, 20), (150, 110, 40), p[25])
            shape = draw.ellipse if p[25] < 0.5 else draw.rectangle
            for side in (-1, 1):
                gx = cx + side * eye_dx + feature_dx
                shape(
                    (gx - eye_r * 2.2, eye_y - eye_r * 1.7, gx + eye_r * 2.2, eye_y + eye_r * 1.7),
                    outline=frame,
                    width=max(1, int(2 * s)),
                )
            draw.line(
                [(cx - eye_dx + eye_r * 2.2 + feature_dx, eye_y), (cx + eye_dx - eye_r * 2.2 + feature_dx, eye_y)],
                fill=frame,
                width=max(1, int(2 * s)),
            )

    def _hair(
        self,
        draw: ImageDraw.ImageDraw,
        style: int,
        hair: tuple[int, int, int],
        cx: float,
        cy: float,
        half_w: float,
        half_h: float,
        p: np.ndarray,
        s: float,
    ) -> None:
        if style == 0:
            return
        volume = _lerp(0.0, 8.0, p[9]) * s
        top = (cx - half_w * 1.05, cy - half_h - volume, cx + half_w * 1.05, cy + half_h * 0.2)
        if style == 3:  # fringe: hair down to the brows
            draw.chord((top[0], top[1], top[2], cy + half_h * 0.05), 180, 360, fill=hair)
            draw.rectangle((cx - half_w * 0.8, cy - half_h * 0.6, cx + half_w * 0.8, cy - half_h * 0.35), fill=hair)
        elif style == 4:  # side part: an asymmetric cap
            draw.chord(top, 180, 360, fill=hair)
            side = -1 if p[9] < 0.5 else 1
            draw.polygon(
                [
                    (cx + side * half_w * 1.05, cy - half_h * 0.2),
                    (cx + side * half_w * 0.1, cy - half_h - volume * 0.5),
                    (cx - side * half_w * 0.2, cy - half_h * 0.55),
                ],
                fill=hair,
            )
        elif style == 5:  # curly: a ring of bumps
            draw.chord(top, 180, 360, fill=hair)
            for i in range(9):
                angle = math.pi * (1 + i / 8)
                bx, by = (
                    cx + math.cos(angle) * half_w * 1.02,
                    cy - half_h * 0.25 + math.sin(angle) * (half_h * 0.85 + volume),
                )
                draw.ellipse((bx - 7 * s, by - 7 * s, bx + 7 * s, by + 7 * s), fill=hair)
        else:  # short or long: a cap
            draw.chord(top, 180, 360, fill=hair)

    def _occlude(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
        s = self.size
        kind = rng.integers(3)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if kind == 0:  # a mask over the lower face
            draw.rounded_rectangle(
                (s * 0.25, s * rng.uniform(0.55, 0.68), s * 0.75, s * 0.95), radius=int(s * 0.08), fill=colour
            )
        elif kind == 1:  # sunglasses band
            y = s * rng.uniform(0.38, 0.45)
            draw.rectangle((s * 0.25, y - s * 0.05, s * 0.75, y + s * 0.05), fill=(15, 15, 15))
        else:  # a hand or object from one side
            x = s * (rng.uniform(-0.1, 0.15) if rng.random() < 0.5 else rng.uniform(0.65, 0.9))
            y = s * rng.uniform(0.3, 0.7)
            draw.ellipse((x, y, x + s * 0.35, y + s * 0.45), fill=colour)

    def _misalign(
        self, image: Image.Image, rng: np.random.Generator, domain: Domain, roll: float, fill: tuple[int, int, int]
    ) -> Image.Image:
        """Roll, shift and scale in one bilinear affine warp (an imperfect detector+aligner)."""
        scale = rng.uniform(*domain.scale)
        tx, ty = rng.uniform(-domain.shift, domain.shift, 2) * self.size
        angle = math.radians(roll)
        cos_a, sin_a = math.cos(angle) / scale, math.sin(angle) / scale
        c = self.size / 2
        # PIL maps output (x, y) to input (a x + b y + c0, d x + e y + f0).
        a, b, d, e = cos_a, sin_a, -sin_a, cos_a
        c0 = c - a * (c + tx) - b * (c + ty)
        f0 = c - d * (c + tx) - e * (c + ty)
        return image.transform(
            image.size, Image.Transform.AFFINE, (a, b, c0, d, e, f0), resample=Image.Resampling.BILINEAR, fillcolor=fill
        )

    def _capture(self, image: Image.Image, rng: np.random.Generator, domain: Domain) -> np.ndarray:
        """The camera: light, colour cast, sensor noise, grey, resolution, blur, JPEG."""
        pixels = np.asarray(image, dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        gradient = (self._grid_x * math.cos(angle) + self._grid_y * math.sin(angle)) * rng.uniform(
            0, domain.light_gradient
        )
        gains = rng.uniform(*domain.brightness) * (1 + rng.uniform(-domain.colour_cast, domain.colour_cast, 3))
        pixels = pixels * (1 + gradient)[:, :, None] * gains.astype(np.float32)
        pixels += self._noise.sample(rng, self.size, self.size) * np.float32(rng.uniform(*domain.noise_sigma))
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        if rng.random() < domain.grey_prob:
            grey = (pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
            pixels = np.repeat(grey[:, :, None], 3, axis=2)
        image = Image.fromarray(pixels)
        if rng.random() < domain.lowres_prob:
            side = int(rng.integers(domain.lowres_side[0], domain.lowres_side[1] + 1))
            image = image.resize((side, side), Image.Resampling.BILINEAR).resize(
                (self.size, self.size), Image.Resampling.BILINEAR
            )
        if rng.random() < domain.blur_prob:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*domain.blur_radius)))
        if rng.random() < domain.jpeg_prob:
            buffer = io.BytesIO()
            image.save(
                buffer, format="JPEG", quality=int(rng.integers(domain.jpeg_quality[0], domain.jpeg_quality[1] + 1))
            )
            buffer.seek(0)
            image = Image.open(buffer).convert("RGB")
        return np.array(image, dtype=np.uint8)  # writable: torch warns on read-only arrays


def with_overrides(domain: Domain, **changes: object) -> Domain:
    """A copy of a domain with some nuisance ranges changed (e.g. for an ablation)."""
    return replace(domain, **changes)  # type: ignore[arg-type]
