"""Procedural scenes (easy-vqa style) and a programmatic checker that measures, from the pixels, whether an image
satisfies a scene's structured spec: the evaluation of text-to-image adaptation that no reward sees.

A scene is one or two kinds of flat shapes (circle, square, triangle) in a colour, with a count, and for two
single shapes optionally a spatial relation ("a blue circle above a red square"). `draw` renders a spec on a white
canvas; `check` finds coloured blobs in any image (palette colour per pixel, connected components with
scipy.ndimage), classifies each blob's shape by a rotation-invariant geometric ratio and reports, per category
(colour, shape, binding, count, position) and "full", whether the spec holds, as GenEval (Ghosh et al. 2023)
reports its categories and the share of prompts fully satisfied.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import DataError

# Well-separated colours on white, so a blurred decoder output still maps to the right name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (160, 40, 180), "black": (20, 20, 20),
}
BACKGROUND = (255, 255, 255)
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("above", "below", "left of", "right of")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
MAX_COUNT = 3

# area / (max centroid distance)^2: pi for a disc, 2 for a square, 3*sqrt(3)/4 = 1.30 for an equilateral
# triangle, whatever the rotation; the class boundaries sit at the midpoints
SHAPE_RATIO = {"circle": math.pi, "square": 2.0, "triangle": 3 * math.sqrt(3) / 4}


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    count: int = 1

    def phrase(self) -> str:
        if self.count == 1:
            return f"a {self.colour} {self.shape}"
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.shape}s"


@dataclass(frozen=True)
class SceneSpec:
    """things[0] `relation` things[1] when relation is set (only for two single things)."""

    things: tuple[Thing, ...]
    relation: str | None = None

    def prompt(self) -> str:
        if len(self.things) == 1:
            return self.things[0].phrase()
        a, b = self.things
        return f"{a.phrase()} {self.relation} {b.phrase()}" if self.relation else f"{a.phrase()} and {b.phrase()}"

    def to_dict(self) -> dict:
        return {"objects": [{"shape": t.shape, "colour": t.colour, "count": t.count} for t in self.things],
                "relation": self.relation}

    @classmethod
    def from_dict(cls, obj: Any, source: str = "spec", line: int | None = None) -> SceneSpec:
        """Validate a JSON spec; errors name the source, line and field."""
        def bad(field_: str, msg: str):
            return DataError(source, line, field_, msg)

        if not isinstance(obj, dict) or not isinstance(obj.get("objects"), list):
            raise bad("spec", f"expected {{'objects': [...], 'relation': ...}}, got {obj!r}")
        if not 1 <= len(obj["objects"]) <= 2:
            raise bad("spec.objects", f"needs one or two objects, got {len(obj['objects'])}")
        things = []
        for i, o in enumerate(obj["objects"]):
            if not isinstance(o, dict):
                raise bad(f"spec.objects[{i}]", f"expected an object, got {o!r}")
            colour = o.get("colour", o.get("color"))
            if o.get("shape") not in SHAPES:
                raise bad(f"spec.objects[{i}].shape", f"must be one of {SHAPES}, got {o.get('shape')!r}")
            if colour not in PALETTE:
                raise bad(f"spec.objects[{i}].colour", f"must be one of {tuple(PALETTE)}, got {colour!r}")
            count = o.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
                raise bad(f"spec.objects[{i}].count", f"must be an integer 1..{MAX_COUNT}, got {count!r}")
            things.append(Thing(o["shape"], colour, count))
        rel = obj.get("relation")
        if rel is not None:
            if rel not in RELATIONS:
                raise bad("spec.relation", f"must be one of {RELATIONS} or null, got {rel!r}")
            if len(things) != 2 or any(t.count != 1 for t in things):
                raise bad("spec.relation", "a relation needs exactly two objects of count 1")
        if len(things) == 2 and (things[0].shape, things[0].colour) == (things[1].shape, things[1].colour):
            raise bad("spec.objects", "the two objects must differ in shape or colour")
        return cls(tuple(things), rel)


def all_specs() -> list[SceneSpec]:
    """Every scene the generator knows, in a fixed order (54 single, 153 pairs joined by "and", 1224 related)."""
    kinds = [(s, c) for c in PALETTE for s in SHAPES]
    specs = [SceneSpec((Thing(s, c, n),)) for s, c in kinds for n in range(1, MAX_COUNT + 1)]
    for (s1, c1), (s2, c2) in itertools.combinations(kinds, 2):
        specs.append(SceneSpec((Thing(s1, c1), Thing(s2, c2))))
    for (s1, c1), (s2, c2) in itertools.permutations(kinds, 2):
        specs.extend(SceneSpec((Thing(s1, c1), Thing(s2, c2)), rel) for rel in RELATIONS)
    return specs


# -- drawing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrawOptions:
    size: int = field(default=64, metadata={"help": "canvas side in pixels (easy-vqa images are 64x64)"})
    min_frac: float = field(default=0.2, metadata={"help": "smallest shape side as a share of the canvas"})
    max_frac: float = field(default=0.3, metadata={"help": "largest shape side as a share of the canvas"})
    gap: int = field(default=3, metadata={"help": "pixels kept free between shapes, so blobs stay separate"})
    margin: float = field(default=0.15, metadata={
        "help": "a relation's centroid offset along its axis is at least this share of the canvas"})


def draw_shape(draw, shape: str, box: tuple[float, float, float, float], colour, rotation: float = 0.0) -> None:
    """One filled shape inscribed in `box` (x0, y0, x1, y1), rotated by `rotation` degrees about its centre."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
        return
    # square: corners at 45 + k*90 degrees on radius r*sqrt(2) (axis-aligned when rotation = 0) scaled to the box;
    # triangle: equilateral, apex up, circumradius r
    if shape == "square":
        angles, radius = [45 + 90 * k for k in range(4)], r * math.sqrt(2)
    elif shape == "triangle":
        angles, radius = [-90 + 120 * k for k in range(3)], r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = [(cx + radius * math.cos(math.radians(a + rotation)), cy + radius * math.sin(math.radians(a + rotation)))
           for a in angles]
    draw.polygon(pts, fill=colour)


def _placements(spec: SceneSpec, rng: np.random.Generator, opts: DrawOptions, tries: int = 2000):
    """Boxes per shape, non-overlapping (with a gap), satisfying the relation; rejection sampling."""
    size = opts.size
    n = sum(t.count for t in spec.things)
    for _ in range(tries):
        boxes = []
        for _k in range(n):
            side = rng.uniform(opts.min_frac, opts.max_frac) * size
            x0, y0 = rng.uniform(1, size - side - 1, size=2)
            boxes.append((x0, y0, x0 + side, y0 + side))
        if any(_overlap(a, b, opts.gap) for a, b in itertools.combinations(boxes, 2)):
            continue
        if spec.relation and not _relation_holds(spec.relation, _centre(boxes[0]), _centre(boxes[1]),
                                                  opts.margin * size):
            continue
        return boxes
    raise RuntimeError(f"could not place {spec.prompt()!r} on {size}x{size} after {tries} tries")


def _centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _overlap(a, b, gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _relation_holds(rel: str, a, b, margin: float) -> bool:
    """Centroid a `rel` centroid b (image y grows downwards) by at least `margin` pixels along the axis."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    return {"above": -dy, "below": dy, "left of": -dx, "right of": dx}[rel] >= margin


def draw(spec: SceneSpec, seed: int, opts: DrawOptions = DrawOptions()):
    """The scene as an RGB PIL image: random sizes and positions from `seed`, flat colours on white."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    boxes = iter(_placements(spec, rng, opts))
    im = Image.new("RGB", (opts.size, opts.size), BACKGROUND)
    d = ImageDraw.Draw(im)
    for t in spec.things:
        for _ in range(t.count):
            draw_shape(d, t.shape, next(boxes), PALETTE[t.colour])
    return im


# -- checking ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckOptions:
    colour_tol: float = field(default=110.0, metadata={
        "help": "the nearest palette colour names a pixel; farther than this RGB distance from it, the pixel is "
                "background (palette colours are >= 130 apart; a colour's midpoint with white sits 116-204 away)"})
    min_area: float = field(default=0.006, metadata={
        "help": "blobs smaller than this share of the image are noise (a shape of the smallest drawn size is ~0.04)"})


@dataclass(frozen=True)
class Blob:
    colour: str
    shape: str
    area: int
    centroid: tuple[float, float]  # (x, y) in pixels
    ratio: float  # area / max centroid distance^2, the shape feature


def colour_map(pixels: np.ndarray, tol: float) -> np.ndarray:
    """Per pixel the palette index (0..len-1) of the nearest colour, or -1 for background / unsure."""
    names = list(PALETTE)
    refs = np.array([PALETTE[c] for c in names] + [BACKGROUND], dtype=float)
    d = np.linalg.norm(pixels[..., None, :].astype(float) - refs, axis=-1)  # [H, W, K+1]
    idx = d.argmin(-1)
    ok = (idx < len(names)) & (d.min(-1) <= tol)
    return np.where(ok, idx, -1)


def classify_shape(ratio: float) -> str:
    """Nearest reference ratio on a log scale (boundaries between circle/square and square/triangle)."""
    return min(SHAPE_RATIO, key=lambda s: abs(math.log(ratio / SHAPE_RATIO[s])))


def find_blobs(image, opts: CheckOptions = CheckOptions()) -> list[Blob]:
    """Coloured connected components (8-connectivity) of a PIL image or HxWx3 array, largest first."""
    from scipy import ndimage

    px = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    cmap = colour_map(px, opts.colour_tol)
    min_px = opts.min_area * px.shape[0] * px.shape[1]
    blobs = []
    for k, name in enumerate(PALETTE):
        labels, n = ndimage.label(cmap == k, structure=np.ones((3, 3)))
        for j in range(1, n + 1):
            ys, xs = np.nonzero(labels == j)
            if len(xs) < min_px:
                continue
            cx, cy = xs.mean(), ys.mean()
            # pixel centres understate the extent by about half a pixel
            rmax = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2).max() + 0.5
            ratio = len(xs) / rmax ** 2
            blobs.append(Blob(name, classify_shape(ratio), len(xs), (float(cx), float(cy)), float(ratio)))
    return sorted(blobs, key=lambda b: -b.area)


@dataclass(frozen=True)
class SceneCheck:
    """Per applicable category whether it holds; `full` = all of them."""

    categories: dict[str, bool]
    blobs: tuple[Blob, ...]

    @property
    def full(self) -> bool:
        return all(self.categories.values())


def check(image, spec: SceneSpec, opts: CheckOptions = CheckOptions(), size: int | None = None) -> SceneCheck:
    """Whether `image` satisfies `spec`, measured from its pixels.

    colour: every object's colour is present; shape: every object's shape is present (any colour); binding: a blob
    has both; count (objects with count > 1 only): exactly `count` blobs of that colour and shape; position (with
    a relation): the largest matching blobs' centroids are in the relation by at least 5% of the image side.
    Objects with count 1 need at least one matching blob (an extra copy does not fail a single-object prompt)."""
    return check_blobs(find_blobs(image, opts), spec, size or max(np.asarray(image).shape[:2]))


def check_blobs(blobs: Sequence[Blob], spec: SceneSpec, side: int) -> SceneCheck:
    """`check` on blobs already found in an image of `side` pixels (one find_blobs serves several specs)."""
    cats = {
        "colour": all(any(b.colour == t.colour for b in blobs) for t in spec.things),
        "shape": all(any(b.shape == t.shape for b in blobs) for t in spec.things),
        "binding": all(any(b.colour == t.colour and b.shape == t.shape for b in blobs) for t in spec.things),
    }
    if any(t.count > 1 for t in spec.things):
        cats["count"] = all(sum(b.colour == t.colour and b.shape == t.shape for b in blobs) == t.count
                            for t in spec.things if t.count > 1)
    if spec.relation:
        match = [next((b for b in blobs if b.colour == t.colour and b.shape == t.shape), None) for t in spec.things]
        cats["position"] = all(m is not None for m in match) and _relation_holds(
            spec.relation, match[0].centroid, match[1].centroid, 0.05 * side)
    return SceneCheck(cats, tuple(blobs))


CATEGORIES = ("colour", "shape", "binding", "count", "position")


def summarize(checks: Sequence[SceneCheck]) -> dict[str, float]:
    """GenEval-style shares: `full` over all prompts, each category over the prompts it applies to, and how
    many prompts each category covers (`n_<category>`)."""
    out: dict[str, float] = {"full": float(np.mean([c.full for c in checks])) if checks else float("nan"),
                             "n": float(len(checks))}
    for cat in CATEGORIES:
        vals = [c.categories[cat] for c in checks if cat in c.categories]
        out[cat] = float(np.mean(vals)) if vals else float("nan")
        out[f"n_{cat}"] = float(len(vals))
    return out
