"""A synthetic benchmark written in the real formats, so every loader runs end to end without data.

``generate(out_dir, num_images, seed)`` draws scenes of 2-6 objects, each with a shape (class),
colour, size and position, and writes:

* region features from a fixed random "detector": per region, ReLU(class + colour + size embedding +
  noise), plus duplicate boxes of objects and background ("stuff") regions; boxes in pixels; the
  detector's class distribution over ``num_classes`` classes (1601 like BUTD; index 0 = background,
  1..8 = the shapes, the rest stuff classes); stored in our fast store;
* captions, 5 per image, that name objects by attributes and spatial relations (Conceptual Captions
  JSON gets the first, Flickr30k JSON lines get all 5);
* VQAv2 questions with 10 answers from noisy annotators (who sometimes answer wrongly, and write
  "Two" or "red." for "2" and "red": the official normalisation matters), of 7 types: colour of a
  shape, shape of a colour, counting by colour, counting by shape, existence, relation yes/no and
  relational colour ("what color is the cube that is left of the red sphere?", which has another cube
  on the other side, so it needs the relation);
* RefCOCO+-style refs and COCO ``instances.json``: expressions that identify one object among
  same-shape distractors by colour, size or relation, with its true box (the detected boxes are jittered
  copies, so IoU targets are < 1).

Knobs (docs/training.md, "The synthetic benchmark's knobs"): ``abstraction`` moves the region
features from word-level codes (0: one coordinate per shape, colour, size) to the entangled random
embeddings above (1, the default), the modality misalignment of the paper; ``clutter`` scales the
duplicate and background regions; ``noise`` the features' noise; ``question_types`` picks VQA types
or a family of ``QUESTION_FAMILIES`` (cross-modal, cross-then-intra-modal, intra-modal).

Everything is a function of ``seed`` (the detector of ``detector_seed``, fixed by default, so data drawn
with different seeds shares one detector). Answers are balanced so the text alone is a weak predictor:
``manifest.json`` records the accuracy of the best text-only rule (the most frequent training answer of
the exact question string, else of its type) on the validation questions, next to the accuracy of
answering from the scene itself (the ceiling the annotators' noise leaves).

Directory layout (keys of ``manifest.json`` in brackets)::

    DIR/manifest.json
    DIR/features.lmdb/                                   [features]  fast store, keyed by image id
    DIR/cc/caption_{train,valid}.json                    [cc_train, cc_valid]
    DIR/vqa/v2_OpenEnded_mscoco_{train,val}2014_questions.json   [vqa_train_questions, vqa_val_questions]
    DIR/vqa/v2_mscoco_{train,val}2014_annotations.json           [vqa_train_annotations, vqa_val_annotations]
    DIR/flickr30k/{train,val,test}.jsonl                 [flickr_train, flickr_val, flickr_test]
    DIR/refcoco+/refs(unc).p, DIR/refcoco+/instances.json         [refcoco_refs, refcoco_instances]

Image splits: 80% train, 10% val, 10% test (VQA val2014 = val + test images; RefCOCO+ test images
give testA when the target is one of the first four shapes, testB otherwise).
"""

from __future__ import annotations

import json
import pickle
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from switchbert.data.errors import PathLike
from switchbert.dirlock import DirectoryLock
from switchbert.io import atomic_write_json
from switchbert.data.features import RegionRecord, write_store
from switchbert.data.vqa_answers import majority_answer, soft_score

SHAPES = ("cube", "sphere", "cylinder", "cone", "pyramid", "torus", "star", "ring")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES = ("small", "large")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUM_STUFF = 16  # background region kinds ("wall", "floor", ...) with their own embeddings
QUESTION_TYPES = ("color_of_shape", "shape_of_color", "count_color", "count_shape", "exist", "rel_yesno",
                  "rel_color")
"""The default mix of VQA question types."""
EXTRA_QUESTION_TYPES = ("count_all", "same_color")
"""Image-only types, not in the default mix: the question is fixed text, so the answer is all in the
regions, and finding it means comparing regions with each other (intra-modal)."""
QUESTION_FAMILIES: dict[str, tuple[str, ...]] = {
    # one word-region match, then read an attribute off the region
    "cross_modal": ("color_of_shape", "shape_of_color", "exist"),
    # words bound to regions, then the matching regions compared / counted
    "cross_then_intra": ("count_color", "count_shape", "rel_yesno", "rel_color"),
    # the regions compared with each other; the text names no object
    "intra_modal": EXTRA_QUESTION_TYPES,
}
"""Task families by the interaction they need (``generate(question_types=...)`` takes a family's types)."""


@dataclass
class Scene:
    """One image: k objects.

    Attributes:
        image_id: int.
        width, height: pixels.
        shape, color, size: (k,) int indices into SHAPES, COLORS, SIZES.
        boxes: (k, 4) float32 true pixel x1y1x2y2.
    """

    image_id: int
    width: int
    height: int
    shape: np.ndarray
    color: np.ndarray
    size: np.ndarray
    boxes: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    def name(self, i: int, with_size: bool = False) -> str:
        words = ([SIZES[self.size[i]]] if with_size else []) + [COLORS[self.color[i]], SHAPES[self.shape[i]]]
        return " ".join(words)


def make_scenes(num_images: int, rng: np.random.Generator) -> list[Scene]:
    """Draws scenes; objects do not overlap much so every one gets its own detection."""
    scenes = []
    widths = rng.integers(480, 641, num_images)
    heights = rng.integers(360, 481, num_images)
    counts = rng.integers(2, 7, num_images)
    for i in range(num_images):
        k, w, h = int(counts[i]), int(widths[i]), int(heights[i])
        size = rng.integers(0, 2, k)
        side = np.where(size == 0, rng.uniform(0.09, 0.13, k), rng.uniform(0.17, 0.23, k)) * min(w, h) * 1.3
        # objects sit on a jittered grid of columns so centres differ in x (left/right is well defined)
        cols = rng.permutation(6)[:k]
        cx = (cols + 0.5 + rng.uniform(-0.2, 0.2, k)) / 6 * w
        cy = rng.uniform(0.25, 0.75, k) * h
        boxes = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
        boxes = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
        scenes.append(Scene(i + 1, w, h, rng.integers(0, len(SHAPES), k), rng.integers(0, len(COLORS), k), size, boxes))
    return scenes


class Detector:
    """A fixed random "detector": embeddings for classes, colours, sizes and stuff; noise per region."""

    def __init__(self, feat_dim: int, num_classes: int, seed: int = 1234, noise: float = 0.6,
                 abstraction: float = 1.0, clutter: float = 1.0) -> None:
        if num_classes < 1 + len(SHAPES) + 1:
            raise ValueError(f"num_classes must be at least {len(SHAPES) + 2} (background, shapes, stuff)")
        if not 0.0 <= abstraction <= 1.0:
            raise ValueError(f"abstraction must be in [0, 1], got {abstraction}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        rng = np.random.default_rng(seed)
        if not 0.0 <= clutter <= 1.0:
            raise ValueError(f"clutter must be in [0, 1], got {clutter}")
        self.feat_dim, self.num_classes, self.noise, self.abstraction = feat_dim, num_classes, noise, abstraction
        self.clutter = clutter
        self.shape_emb = rng.standard_normal((len(SHAPES), feat_dim), dtype=np.float32)
        self.color_emb = rng.standard_normal((len(COLORS), feat_dim), dtype=np.float32) * 0.8
        self.size_emb = rng.standard_normal((len(SIZES), feat_dim), dtype=np.float32) * 0.5
        self.stuff_emb = rng.standard_normal((NUM_STUFF, feat_dim), dtype=np.float32)
        # each shape is confused with two fixed other classes, as real detectors confuse similar ones
        self.confusers = rng.integers(1, num_classes, (len(SHAPES), 2))
        # stuff kinds map to classes after the shapes (several kinds share one when classes are few)
        self.stuff_class = 1 + len(SHAPES) + rng.integers(0, num_classes - 1 - len(SHAPES), NUM_STUFF)

    def detect(self, scenes: list[Scene], rng: np.random.Generator) -> Iterator[RegionRecord]:
        """Region records for ``scenes``: objects, jittered duplicates and stuff, in random order."""
        per_image = []
        for s in scenes:
            k = len(s.shape)
            # clutter scales the duplicate detections (50% of objects at 1) and background regions (2-8 at 1)
            dup = np.flatnonzero(rng.random(k) < 0.5 * self.clutter)
            n_stuff = int(round(rng.integers(2, 9) * self.clutter))
            obj = np.concatenate([np.arange(k), dup])  # which object each object-region shows
            jitter = np.where(np.arange(len(obj)) < k, 0.05, 0.12)[:, None]
            wh = (s.boxes[obj, 2:] - s.boxes[obj, :2])
            ob = s.boxes[obj] + rng.uniform(-1, 1, (len(obj), 4)).astype(np.float32) * np.tile(wh, 2) * jitter
            sx = rng.uniform(0, s.width * 0.7, n_stuff)
            sy = rng.uniform(0, s.height * 0.7, n_stuff)
            sb = np.stack([sx, sy, sx + rng.uniform(0.2, 0.3, n_stuff) * s.width,
                           sy + rng.uniform(0.2, 0.3, n_stuff) * s.height], 1)
            boxes = np.clip(np.concatenate([ob, sb]), 0, [s.width, s.height, s.width, s.height]).astype(np.float32)
            kinds = np.concatenate([obj, -1 - rng.integers(0, NUM_STUFF, n_stuff)])  # >=0 object, <0 stuff
            order = rng.permutation(len(kinds))
            kinds = kinds[order]
            o = np.clip(kinds, 0, None)
            per_image.append((kinds, boxes[order], s.shape[o], s.color[o], s.size[o]))
        kinds = np.concatenate([p[0] for p in per_image])
        shape, color, size = (np.concatenate([p[j] for p in per_image]) for j in (2, 3, 4))
        is_obj = kinds >= 0
        stuff = np.where(is_obj, 0, -1 - kinds)
        # Uniform noise with the variance of N(0, noise^2): drawing uniforms is ~5x faster than normals,
        # which matters at 10,000 images x 2048-d.
        feats = rng.random((len(kinds), self.feat_dim), dtype=np.float32)
        feats -= 0.5
        feats *= self.noise * np.float32(12**0.5)
        # One gather-add per attribute; stuff regions index the stuff rows / an all-zero row.
        zero = np.zeros((1, self.feat_dim), np.float32)
        tables = (np.concatenate([self.shape_emb, self.stuff_emb]), np.concatenate([self.color_emb, zero]),
                  np.concatenate([self.size_emb, zero]))
        index = (np.where(is_obj, shape, len(SHAPES) + stuff), np.where(is_obj, color, len(COLORS)),
                 np.where(is_obj, size, len(SIZES)))
        tmp = np.empty_like(feats)
        for table, idx in zip(tables, index):
            np.take(table, idx, axis=0, out=tmp)
            feats += tmp
        del tmp
        np.maximum(feats, 0, out=feats)  # BUTD features are post-ReLU
        if self.abstraction < 1.0:
            feats *= np.float32(self.abstraction)
            self._add_symbolic(feats, is_obj, shape, color, size, stuff, np.float32(1.0 - self.abstraction))
        probs = self._class_probs(is_obj, shape, stuff, rng)
        # the store keeps float16; torch converts several times faster than numpy
        feats = torch.from_numpy(feats).half().numpy()
        probs = torch.from_numpy(probs).half().numpy()
        start = 0
        for s, p in zip(scenes, per_image):
            end = start + len(p[0])
            yield RegionRecord(str(s.image_id), feats[start:end], p[1], float(s.width), float(s.height), probs[start:end])
            start = end

    def _add_symbolic(self, feats, is_obj, shape, color, size, stuff, weight) -> None:
        """Adds ``weight`` x the word-level code: one coordinate per attribute value (shape, colour,
        size; stuff kind for background regions), at 3x the entangled features' scale.

        Each word of the captions then has a feature coordinate of its own, as if the detector output
        the words' labels: the low-abstraction end of the modality-misalignment knob. Coordinates wrap
        around when ``feat_dim`` < 34 (tests' tiny features)."""
        rows = np.arange(len(feats))
        scale = np.float32(3.0) * weight
        offsets = (0, len(SHAPES), len(SHAPES) + len(COLORS))
        for offset, values in zip(offsets, (shape, color, size)):
            idx = (offset + values[is_obj]) % self.feat_dim
            np.add.at(feats, (rows[is_obj], idx), scale)
        base = len(SHAPES) + len(COLORS) + len(SIZES)
        np.add.at(feats, (rows[~is_obj], (base + stuff[~is_obj]) % self.feat_dim), scale)

    def _class_probs(self, is_obj, shape, stuff, rng) -> np.ndarray:
        n, C = len(is_obj), self.num_classes
        true_cls = np.where(is_obj, 1 + shape, self.stuff_class[stuff])
        peak = rng.uniform(0.5, 0.95, n).astype(np.float32)
        rest = 1.0 - peak
        probs = np.empty((n, C), dtype=np.float32)
        probs[:] = (rest * 0.3 / C)[:, None]  # a floor over every class
        rows = np.arange(n)
        conf = np.where(is_obj[:, None], self.confusers[shape], rng.integers(1, C, (n, 2)))
        np.add.at(probs, (rows, true_cls), peak)
        np.add.at(probs, (rows, conf[:, 0]), rest * 0.45)
        np.add.at(probs, (rows, conf[:, 1]), rest * 0.25)
        probs /= probs.sum(1, keepdims=True)
        return probs


# ------------------------------------------------------------------------------------------- language
def _plural(shape: str) -> str:
    return shape + "es" if shape.endswith("x") else shape + "s"


def _unique(values: np.ndarray, v) -> bool:
    return int((values == v).sum()) == 1


def make_captions(s: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """n captions naming objects by attributes and relations (left/right by x, above/below by y)."""
    k = len(s.shape)
    c = s.centers
    out = []
    templates = rng.permutation(5)
    for t in range(n):
        a, b = rng.permutation(k)[:2]
        kind = templates[t % 5]
        if kind == 0:
            rel = "to the left of" if c[a, 0] < c[b, 0] else "to the right of"
            out.append(f"a {s.name(a, True)} {rel} a {s.name(b)}.")
        elif kind == 1:
            rel = "above" if c[a, 1] < c[b, 1] else "below"
            out.append(f"a {s.name(a)} {rel} a {s.name(b, True)}.")
        elif kind == 2:
            out.append(f"there are {NUMBER_WORDS[k]} objects, including a {s.name(a)} and a {s.name(b)}.")
        elif kind == 3:
            sh = s.shape[a]
            m = int((s.shape == sh).sum())
            thing = SHAPES[sh] if m == 1 else _plural(SHAPES[sh])
            out.append(f"{NUMBER_WORDS[m]} {thing} and a {s.name(b, True)}.")
        else:
            names = ", ".join(f"a {s.name(i)}" for i in rng.permutation(k)[:3])
            out.append(f"a picture of {names}.")
    return out


def _relational_target(s: Scene, rng: np.random.Generator) -> Optional[tuple[int, int, str]]:
    """(a, b, relation) such that a is the ONLY object of its shape on that side of b, another object of
    a's shape exists, and b is unique by colour+shape: 'the <shape a> <relation> the <colour b> <shape b>'."""
    k = len(s.shape)
    cx = s.centers[:, 0]
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    for idx in rng.permutation(len(pairs)):
        a, b = pairs[idx]
        same = np.flatnonzero(s.shape == s.shape[a])
        if len(same) < 2 or not (((s.shape == s.shape[b]) & (s.color == s.color[b])).sum() == 1):
            continue
        for rel, side in (("left of", cx[same] < cx[b]), ("right of", cx[same] > cx[b])):
            if side.sum() == 1 and same[side][0] == a:
                return int(a), int(b), rel
    return None


def make_question(s: Scene, qtype: str, rng: np.random.Generator) -> Optional[tuple[str, str, str]]:
    """(question, answer, answer_type) of ``qtype`` about ``s``, or None when the scene cannot pose it."""
    k = len(s.shape)
    if qtype == "color_of_shape":
        cand = [i for i in range(k) if _unique(s.shape, s.shape[i])]
        if not cand:
            return None
        i = cand[int(rng.integers(len(cand)))]
        return f"what color is the {SHAPES[s.shape[i]]}?", COLORS[s.color[i]], "other"
    if qtype == "shape_of_color":
        cand = [i for i in range(k) if _unique(s.color, s.color[i])]
        if not cand:
            return None
        i = cand[int(rng.integers(len(cand)))]
        return f"what shape is the {COLORS[s.color[i]]} object?", SHAPES[s.shape[i]], "other"
    if qtype in ("count_color", "count_shape"):
        values, names = (s.color, COLORS) if qtype == "count_color" else (s.shape, SHAPES)
        # half the time ask about an attribute in the scene, else any: counts are not all 1
        v = int(values[rng.integers(k)]) if rng.random() < 0.7 else int(rng.integers(len(names)))
        noun = f"{names[v]} objects" if qtype == "count_color" else _plural(names[v])
        return f"how many {noun} are there?", str(int((values == v).sum())), "number"
    if qtype == "exist":
        if rng.random() < 0.5:
            i = int(rng.integers(k))
            sh, co = int(s.shape[i]), int(s.color[i])
        else:
            present = set(zip(s.shape.tolist(), s.color.tolist()))
            while True:
                sh, co = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLORS)))
                if (sh, co) not in present:
                    break
        ans = "yes" if ((s.shape == sh) & (s.color == co)).any() else "no"
        return f"is there a {COLORS[co]} {SHAPES[sh]}?", ans, "yes/no"
    if qtype == "rel_yesno":
        cand = [i for i in range(k) if ((s.shape == s.shape[i]) & (s.color == s.color[i])).sum() == 1]
        if len(cand) < 2:
            return None
        a, b = rng.permutation(cand)[:2]
        rel = "left of" if rng.random() < 0.5 else "right of"
        left = s.centers[a, 0] < s.centers[b, 0]
        ans = "yes" if left == (rel == "left of") else "no"
        return f"is the {s.name(a)} {rel} the {s.name(b)}?", ans, "yes/no"
    if qtype == "count_all":
        return "how many objects are there?", str(k), "number"
    if qtype == "same_color":
        ans = "yes" if len(set(s.color.tolist())) < k else "no"
        return "are any two objects the same color?", ans, "yes/no"
    if qtype == "rel_color":
        t = _relational_target(s, rng)
        if t is None:
            return None
        a, b, rel = t
        return f"what color is the {SHAPES[s.shape[a]]} {rel} the {s.name(b)}?", COLORS[s.color[a]], "other"
    raise ValueError(f"unknown question type {qtype!r}")


def annotate(answer: str, answer_type: str, rng: np.random.Generator, n: int = 10) -> list[str]:
    """n noisy annotators: right with a per-question probability in [0.7, 0.97], else a wrong answer of
    the same type; surface variants ('Two', 'red.', 'Yes') that the official normalisation undoes."""
    p_right = rng.uniform(0.7, 0.97)
    pool = {"yes/no": ["yes", "no"], "number": [str(i) for i in range(7)]}.get(
        answer_type, list(COLORS) if answer in COLORS else list(SHAPES))
    out = []
    for _ in range(n):
        a = answer if rng.random() < p_right else pool[int(rng.integers(len(pool)))]
        r = rng.random()
        if answer_type == "number" and r < 0.2:
            a = NUMBER_WORDS[int(a)]
        elif r < 0.1:
            a = a.capitalize()
        elif r < 0.15:
            a = a + "."
        out.append(a)
    return out


def make_refs(s: Scene, rng: np.random.Generator, max_refs: int = 2) -> list[tuple[int, list[str]]]:
    """(object index, 1-3 expressions) for objects that an expression identifies uniquely."""
    k = len(s.shape)
    refs = []
    rel = _relational_target(s, rng)
    if rel is not None:
        a, b, r = rel
        refs.append((a, [f"the {SHAPES[s.shape[a]]} {r} the {s.name(b)}"]))
    for i in rng.permutation(k):
        if len(refs) >= max_refs:
            break
        if any(i == j for j, _ in refs):
            continue
        sents = []
        same_cs = ((s.shape == s.shape[i]) & (s.color == s.color[i])).sum() == 1
        same_shape = int((s.shape == s.shape[i]).sum())
        if same_cs:
            sents.append(f"the {s.name(i)}")
            sents.append(f"{COLORS[s.color[i]]} {SHAPES[s.shape[i]]}")
        if ((s.shape == s.shape[i]) & (s.color == s.color[i]) & (s.size == s.size[i])).sum() == 1 and same_shape > 1:
            sents.append(f"the {s.name(i, True)}")
        if same_shape == 1:
            sents.append(f"the {SHAPES[s.shape[i]]}")
        if sents:
            refs[len(refs):] = [(int(i), sents[:3])]
    return refs


# ------------------------------------------------------------------------------------------ generate
def generate(
    out_dir: PathLike,
    num_images: int = 1000,
    seed: int = 0,
    feat_dim: int = 2048,
    num_classes: int = 1601,
    questions_per_image: int = 5,
    detector_seed: int = 1234,
    abstraction: float = 1.0,
    noise: float = 0.6,
    clutter: float = 1.0,
    question_types: Optional[tuple[str, ...]] = None,
) -> dict:
    """Writes the synthetic benchmark into ``out_dir`` (layout in the module docstring).

    One writer at a time: ``out_dir`` is locked while it is written (``switchbert.dirlock``), so a
    second ``generate`` into it, from any process, raises ``DirectoryLockedError`` naming the first
    instead of interleaving their files. ``manifest.json`` is removed first and written last
    (atomically): a directory without one is incomplete, whatever else it holds.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``): paths relative to ``out_dir`` and
        statistics, including ``text_only_vqa_accuracy``.
    """
    qtypes = tuple(question_types) if question_types else QUESTION_TYPES
    unknown = [q for q in qtypes if q not in QUESTION_TYPES + EXTRA_QUESTION_TYPES]
    if unknown:
        raise ValueError(f"unknown question types {unknown}; choose from {QUESTION_TYPES + EXTRA_QUESTION_TYPES}")
    if num_images < 10:
        raise ValueError(f"num_images must be at least 10 (to fill every split), got {num_images}")
    out = Path(out_dir)
    with DirectoryLock(out, message=LOCKED_MESSAGE):
        (out / "manifest.json").unlink(missing_ok=True)
        return _write(out, num_images, seed, feat_dim, num_classes, questions_per_image, detector_seed, abstraction,
                      noise, clutter, qtypes)


LOCKED_MESSAGE = ("synthetic data directory {directory} is being written by another process ({holder}); wait for "
                  "it to finish or write to another directory")


MANIFEST_PATHS: dict[str, str] = {
    "features": "features.lmdb",
    "cc_train": "cc/caption_train.json", "cc_valid": "cc/caption_valid.json",
    "vqa_train_questions": "vqa/v2_OpenEnded_mscoco_train2014_questions.json",
    "vqa_val_questions": "vqa/v2_OpenEnded_mscoco_val2014_questions.json",
    "vqa_train_annotations": "vqa/v2_mscoco_train2014_annotations.json",
    "vqa_val_annotations": "vqa/v2_mscoco_val2014_annotations.json",
    "flickr_train": "flickr30k/train.jsonl", "flickr_val": "flickr30k/val.jsonl", "flickr_test": "flickr30k/test.jsonl",
    "refcoco_refs": "refcoco+/refs(unc).p", "refcoco_instances": "refcoco+/instances.json",
}
"""Where each file of the benchmark goes, under the data keys of the experiment configs (``data.<key>``)."""


@dataclass
class _Annotations:
    """Every text annotation of the benchmark, filled scene by scene in the official formats.

    The two random streams are consumed in a fixed order per scene (captions, questions, referring
    expressions), so the same seed gives the same files whatever else changes.
    """

    lang: np.random.Generator  # captions and referring expressions
    ask: np.random.Generator  # questions and their simulated answers
    questions_per_image: int
    qtypes: tuple[str, ...]
    captions: dict = field(default_factory=lambda: {"train": {}, "valid": {}})
    flickr: dict = field(default_factory=lambda: defaultdict(list))
    questions: dict = field(default_factory=lambda: {"train2014": [], "val2014": []})
    annotations: dict = field(default_factory=lambda: {"train2014": [], "val2014": []})
    refs: list = field(default_factory=list)
    instances: list = field(default_factory=list)
    images_meta: list = field(default_factory=list)
    qtype_counts: Counter = field(default_factory=Counter)
    oracle: list = field(default_factory=list)  # VQA accuracy of answering from the scene itself (val)

    def add_scene(self, s: "Scene", sp: str) -> None:
        caps = make_captions(s, self.lang)
        if sp in ("train", "val"):
            self.captions["train" if sp == "train" else "valid"][str(s.image_id)] = caps[0]
        self.flickr[sp].append({"id": str(s.image_id), "sentences": caps, "img_path": f"synth_{s.image_id:06d}.jpg"})
        self._add_questions(s, "train2014" if sp == "train" else "val2014")
        self.images_meta.append({"id": s.image_id, "width": s.width, "height": s.height,
                                 "file_name": f"synth_{s.image_id:06d}.jpg"})
        for i in range(len(s.shape)):
            x1, y1, x2, y2 = (float(v) for v in s.boxes[i])
            self.instances.append({"id": s.image_id * 100 + i, "image_id": s.image_id,
                                   "category_id": int(s.shape[i]) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                   "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        self._add_refs(s, sp)

    def _add_questions(self, s: "Scene", vqa_split: str) -> None:
        for q in range(self.questions_per_image):
            made = None
            for qtype in self.ask.permutation(self.qtypes):  # fall back when a scene cannot pose one
                made = make_question(s, str(qtype), self.ask)
                if made:
                    break
            if made is None:  # no type of the chosen set fits this scene (only with a narrow set)
                continue
            text, answer, atype = made
            qid = s.image_id * 100 + q
            self.qtype_counts[str(qtype)] += 1
            self.questions[vqa_split].append({"image_id": s.image_id, "question": text, "question_id": qid})
            answers = annotate(answer, atype, self.ask)
            if vqa_split == "val2014":
                self.oracle.append(soft_score(answer, answers))
            self.annotations[vqa_split].append({
                "question_id": qid, "image_id": s.image_id, "question_type": str(qtype), "answer_type": atype,
                "multiple_choice_answer": majority_answer(answers),
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                            for j, a in enumerate(answers)],
            })

    def _add_refs(self, s: "Scene", sp: str) -> None:
        for obj, sents in make_refs(s, self.lang):
            ref_split = sp if sp != "test" else ("testA" if s.shape[obj] < 4 else "testB")
            ref_id = len(self.refs)
            self.refs.append({"ref_id": ref_id, "ann_id": s.image_id * 100 + obj, "image_id": s.image_id,
                              "split": ref_split, "category_id": int(s.shape[obj]) + 1,
                              "file_name": f"synth_{s.image_id:06d}_{ref_id}.jpg",
                              "sentences": [{"sent": t, "raw": t, "tokens": t.split(), "sent_id": ref_id * 10 + j}
                                            for j, t in enumerate(sents)],
                              "sent_ids": [ref_id * 10 + j for j in range(len(sents))]})

    def write(self, out: Path) -> None:
        """The files of ``MANIFEST_PATHS`` (all but the feature store), in the official formats."""
        paths = MANIFEST_PATHS
        _dump(out / paths["cc_train"], self.captions["train"])
        _dump(out / paths["cc_valid"], self.captions["valid"])
        for sp in ("train2014", "val2014"):
            short = "train" if sp == "train2014" else "val"
            _dump(out / paths[f"vqa_{short}_questions"], {
                "info": {"description": "switchbert synthetic"}, "task_type": "Open-Ended", "data_type": "mscoco",
                "data_subtype": sp, "questions": self.questions[sp]})
            _dump(out / paths[f"vqa_{short}_annotations"], {
                "info": {"description": "switchbert synthetic"}, "data_type": "mscoco", "data_subtype": sp,
                "annotations": self.annotations[sp]})
        for sp in ("train", "val", "test"):
            with open(out / paths[f"flickr_{sp}"], "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(item) + "\n" for item in self.flickr[sp])
        with open(out / paths["refcoco_refs"], "wb") as fh:
            pickle.dump(self.refs, fh, protocol=2)  # REFER's files are Python 2 pickles
        _dump(out / paths["refcoco_instances"], {
            "images": self.images_meta, "annotations": self.instances,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPES)]})


def _split_images(num_images: int, seed: int) -> np.ndarray:
    """80 / 10 / 10 train / val / test, by a random permutation of the images: (num_images,) of str."""
    perm = np.random.default_rng([seed, 1]).permutation(num_images)
    n_train, n_val = int(num_images * 0.8), int(num_images * 0.1)
    split = np.empty(num_images, dtype=object)
    split[perm[:n_train]], split[perm[n_train:n_train + n_val]], split[perm[n_train + n_val:]] = "train", "val", "test"
    return split


def _write(out: Path, num_images: int, seed: int, feat_dim: int, num_classes: int, questions_per_image: int,
           detector_seed: int, abstraction: float, noise: float, clutter: float, qtypes: tuple[str, ...]) -> dict:
    """``generate``'s body, run under the directory's lock."""
    t0 = time.perf_counter()
    for sub in ("cc", "vqa", "flickr30k", "refcoco+"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(num_images, np.random.default_rng([seed, 0]))
    split = _split_images(num_images, seed)

    detector = Detector(feat_dim, num_classes, detector_seed, noise=noise, abstraction=abstraction, clutter=clutter)
    det_rng = np.random.default_rng([seed, 2])

    def records() -> Iterator[RegionRecord]:
        for start in range(0, num_images, 500):  # chunks bound memory for 2048-d features
            yield from detector.detect(scenes[start:start + 500], det_rng)

    write_store(out / MANIFEST_PATHS["features"], records(), "fast")

    # Questions draw from a stream of their own, so the question mix (``question_types``,
    # ``questions_per_image``) changes the questions alone: the same scenes keep the same captions and refs.
    ann = _Annotations(lang=np.random.default_rng([seed, 3]), ask=np.random.default_rng([seed, 4]),
                       questions_per_image=questions_per_image, qtypes=qtypes)
    for s, sp in zip(scenes, split):
        ann.add_scene(s, sp)
    ann.write(out)
    text_only = text_only_accuracy(ann.annotations["train2014"], ann.annotations["val2014"], ann.questions)
    manifest = {
        "generator": "switchbert.data.synth", "version": 1, "seed": seed, "num_images": num_images,
        "feat_dim": feat_dim, "num_classes": num_classes, "detector_seed": detector_seed,
        "abstraction": abstraction, "noise": noise, "clutter": clutter,
        "question_types": list(qtypes),
        **MANIFEST_PATHS,
        "stats": {
            "splits": {k: int((split == k).sum()) for k in ("train", "val", "test")},
            "question_types": dict(ann.qtype_counts),
            "refs_per_split": dict(Counter(r["split"] for r in ann.refs)),
            "text_only_vqa_accuracy": text_only[0],
            "text_only_vqa_accuracy_by_type": text_only[1],
            "scene_oracle_vqa_accuracy": round(float(np.mean(ann.oracle)), 4) if ann.oracle else 0.0,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    }
    atomic_write_json(out / "manifest.json", manifest)  # last: its presence says the directory is complete
    return manifest


def text_only_accuracy(train_anns: list[dict], val_anns: list[dict], questions: dict) -> tuple[float, dict[str, float]]:
    """VQA accuracy on val of the best text-only rule we can state: answer with the most frequent
    training answer of the exact question string, falling back to the most frequent of its type.

    Returns:
        (overall, {question type: accuracy}), each in [0, 1] rounded to 4 decimals.
    """
    qtext = {q["question_id"]: q["question"] for sp in questions.values() for q in sp}
    by_text: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for a in train_anns:
        ans = a["multiple_choice_answer"]
        by_text[qtext[a["question_id"]]][ans] += 1
        by_type[a["question_type"]][ans] += 1
    scores: dict[str, list[float]] = defaultdict(list)
    for a in val_anns:
        c = by_text.get(qtext[a["question_id"]]) or by_type.get(a["question_type"]) or Counter({"yes": 1})
        scores[a["question_type"]].append(soft_score(c.most_common(1)[0][0], [x["answer"] for x in a["answers"]]))
    if not val_anns:
        return 0.0, {}
    overall = sum(sum(v) for v in scores.values()) / len(val_anns)
    return round(overall, 4), {t: round(sum(v) / len(v), 4) for t, v in sorted(scores.items())}


def _dump(path: Path, obj, indent: Optional[int] = None) -> None:
    # json.dumps uses the C encoder; json.dump to a file falls back to the pure-Python one
    Path(path).write_text(json.dumps(obj, indent=indent), encoding="utf-8")
