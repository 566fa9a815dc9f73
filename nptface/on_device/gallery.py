"""The CLI's gallery: one template per enrolled person in an ``.npz`` beside the user's files.

A template is the mean of a person's unit-length embeddings, kept with its image count so later
enrolments extend it exactly; scores are cosines (:func:`nptface.core.verification.cosine_scores`
normalises the mean). Templates from different models are not comparable, so the gallery records
the checkpoint hash, bundle and variant that made it, and refuses to be used with another model.
Read with ``allow_pickle=False``; written atomically.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nptface.core.atomic import atomic_write_bytes
from nptface.core.verification import cosine_scores

logger = logging.getLogger(__name__)

FORMAT = "nptface-gallery"
VERSION = 1


class GalleryError(ValueError):
    """A gallery file that is unreadable, of another model, or asked about an unknown person."""


@dataclass(frozen=True)
class Match:
    name: str
    score: float


@dataclass
class Gallery:
    model_sha256: str
    bundle: str
    variant: str
    names: list[str] = field(default_factory=list)
    templates: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    counts: list[int] = field(default_factory=list)

    def check_model(self, model_sha256: str, variant: str, where: str) -> None:
        if model_sha256 != self.model_sha256:
            raise GalleryError(
                f"{where}: made with model {self.model_sha256[:12]}… (bundle {self.bundle}), not "
                f"{model_sha256[:12]}…; templates of different models are not comparable"
            )
        if variant != self.variant:
            logger.warning(
                "%s: enrolled with variant %s, now scoring with %s (same model, parity-gated)",
                where,
                self.variant,
                variant,
            )

    def enroll(self, name: str, embeddings: np.ndarray) -> int:
        """Add unit ``embeddings`` to ``name``'s template (created if new); returns its image count."""
        if not name.strip():
            raise GalleryError("enroll: the person's name is empty")
        embeddings = self._checked(np.asarray(embeddings, np.float32), 2)
        if name in self.names:
            i = self.names.index(name)
            total = self.counts[i] + len(embeddings)
            self.templates[i] = (self.templates[i] * self.counts[i] + embeddings.sum(0)) / total
            self.counts[i] = total
            return total
        mean = embeddings.mean(0, keepdims=True)
        self.templates = mean if not self.names else np.concatenate([self.templates, mean])
        self.names.append(name)
        self.counts.append(len(embeddings))
        return len(embeddings)

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """Cosine of ``embedding`` with every template, in gallery order."""
        if not self.names:
            raise GalleryError("the gallery is empty; enroll someone first")
        embedding = self._checked(np.asarray(embedding, np.float32), 1)
        return cosine_scores(self.templates, np.broadcast_to(embedding, self.templates.shape))

    def _checked(self, embeddings: np.ndarray, ndim: int) -> np.ndarray:
        """``embeddings`` (``ndim`` 1: one, 2: a batch) if they have the templates' size, else a clear error."""
        if embeddings.ndim != ndim or (ndim == 2 and not len(embeddings)):
            shape = "[size]" if ndim == 1 else "[images, size] with at least one image"
            raise GalleryError(f"expected embeddings of shape {shape}, got {embeddings.shape}")
        if self.names and embeddings.shape[-1] != self.templates.shape[1]:
            raise GalleryError(
                f"embeddings of size {embeddings.shape[-1]} do not match the gallery's templates of "
                f"size {self.templates.shape[1]}: they come from another model"
            )
        return embeddings

    def score(self, name: str, embedding: np.ndarray) -> float:
        if name not in self.names:
            raise GalleryError(f"{name!r} is not enrolled; the gallery holds {sorted(self.names)}")
        return float(self.scores(embedding)[self.names.index(name)])

    def top(self, embedding: np.ndarray, k: int = 5) -> list[Match]:
        scores = self.scores(embedding)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Match(self.names[i], float(scores[i])) for i in order]


def save_gallery(gallery: Gallery, path: str | Path) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(FORMAT),
        version=np.array(VERSION),
        model_sha256=np.array(gallery.model_sha256),
        bundle=np.array(gallery.bundle),
        variant=np.array(gallery.variant),
        names=np.array(gallery.names, dtype=str),
        templates=gallery.templates.astype(np.float32),
        counts=np.array(gallery.counts, np.int64),
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_gallery(path: str | Path) -> Gallery:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no gallery file (create one with nptface enroll --bundle B --gallery {path})")
    if not zipfile.is_zipfile(path):
        raise GalleryError(
            f"{path}: not a gallery (an {FORMAT} .npz, which is a zip archive, written by nptface enroll)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except (ValueError, OSError) as error:
        raise GalleryError(f"{path}: not a readable gallery .npz: {error}") from error
    expected = ("format", "version", "model_sha256", "bundle", "variant", "names", "templates", "counts")
    missing = [key for key in expected if key not in fields]
    if missing:
        raise GalleryError(f"{path}: missing fields {missing}; expected an {FORMAT} file")
    if str(fields["format"]) != FORMAT or int(fields["version"]) != VERSION:
        raise GalleryError(f"{path}: format {fields['format']!s} v{fields['version']!s}; expected {FORMAT} v{VERSION}")
    names = [str(n) for n in fields["names"]]
    templates = np.asarray(fields["templates"], np.float32)
    counts = [int(c) for c in fields["counts"]]
    if names and (templates.ndim != 2 or len(templates) != len(names) or len(counts) != len(names)):
        raise GalleryError(
            f"{path}: {len(names)} names, templates of shape {templates.shape} and {len(counts)} counts do not line up"
        )
    return Gallery(str(fields["model_sha256"]), str(fields["bundle"]), str(fields["variant"]), names, templates, counts)
