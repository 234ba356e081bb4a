"""A vote cache keyed by (agent configuration, pair): nothing is annotated twice.

The key of an agent is its name plus the parameters that can change its grades (an agent lists
the ones that cannot, such as timeouts or concurrency, in `cache_ignore`); the key of a pair is
its ids plus a hash of the text the agent reads, so an edited document is judged afresh. Votes
an agent marks as transient (`base.is_transient`: a transport failure, not a judgment) are not
stored, so the next round asks again.

The cache is one SQLite file in the workspace's derived state (`.serm/cache/votes.sqlite`):
it saves work, it is not a record. Every vote a round used, cached or not, is written to the
round's `votes.parquet`, which is versioned.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from serm.annotation.base import VOTE_COLUMNS, is_transient

_SCHEMA = """CREATE TABLE IF NOT EXISTS votes (
    agent_key TEXT NOT NULL, query_id TEXT NOT NULL, doc_id TEXT NOT NULL, content TEXT NOT NULL,
    votes TEXT NOT NULL, created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (agent_key, query_id, doc_id, content))"""


def agent_key(agent, token: str = "") -> str:
    """Name + the grade-relevant parameters (+ the agent's `cache_token`), hashed."""
    params = {k: v for k, v in agent.params.model_dump(mode="json").items() if k not in agent.cache_ignore}
    blob = json.dumps({"agent": agent.name, "params": params, "token": token}, sort_keys=True, default=str)
    return f"{agent.name}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def content_hash(query: str, title: str, text: str) -> str:
    h = hashlib.sha256()
    for part in (query, title, text):
        h.update(str(part).encode("utf-8", "backslashreplace"))
        h.update(b"\x1f")
    return h.hexdigest()[:16]


class VoteCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _keys(pairs) -> list[tuple[str, str, str]]:
        return [(str(q), str(d), content_hash(qt, t, x)) for q, d, qt, t, x in
                zip(pairs.query_id, pairs.doc_id, pairs["query"], pairs.doc_title, pairs.doc_text)]

    def lookup(self, key: str, pairs):
        """(votes frame of the cached pairs, boolean mask of `pairs` rows that were cached)."""
        import numpy as np
        import pandas as pd

        from serm.annotation.base import votes_frame

        keys = self._keys(pairs)
        hit = np.zeros(len(keys), dtype=bool)
        rows = []
        for i, (q, d, c) in enumerate(keys):
            found = self._db.execute("SELECT votes FROM votes WHERE agent_key=? AND query_id=? AND doc_id=? AND content=?",
                                     (key, q, d, c)).fetchone()
            if found:
                hit[i] = True
                rows.extend(tuple(v[c_] for c_ in VOTE_COLUMNS) for v in json.loads(found[0]))
        return (votes_frame(rows) if rows else pd.DataFrame(columns=VOTE_COLUMNS)), hit

    def store(self, key: str, pairs, votes) -> int:
        """Store each pair's votes unless any of them is transient. Returns pairs stored."""
        if not len(votes):
            return 0
        by_pair = {k: g for k, g in votes.groupby(["query_id", "doc_id"], sort=False)}
        stored = 0
        for (q, d, c) in self._keys(pairs):
            g = by_pair.get((q, d))
            if g is None or any(is_transient(r) for r in g["rationale"]):
                continue
            payload = json.dumps([{col: _plain(v) for col, v in zip(VOTE_COLUMNS, row)}
                                  for row in g[VOTE_COLUMNS].itertuples(index=False)])
            self._db.execute("INSERT OR REPLACE INTO votes (agent_key, query_id, doc_id, content, votes) "
                             "VALUES (?, ?, ?, ?, ?)", (key, q, d, c, payload))
            stored += 1
        self._db.commit()
        return stored


def _plain(v):
    if v is None:
        return None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v
