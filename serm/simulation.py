"""The simulated worlds of a `simulated` source: which queries are the seed set, the test sets
and each stream batch, and the hidden truth. Everything the pipeline sees of a world goes
through the stream contract; hidden grades reach only the seed set, the test sets, the click
model and the budgeted (simulated) human reviewer.

Two worlds: the shipped XQuAD (`data.judgments` unset: candidate lists built from paragraphs,
the stream shifting by locale) and any judgments file (a query's candidates are its judged
documents; the stream shifts by locale, by a column's values, or in file order).

Queries fall into groups (`group` on every test row): the seed group trains v0; each stream
group arrives in batches, in turn (batch b brings group `stream_locales[(b-1) % L]`, chunk
`(b-1) // L` of its queries); held-out queries of each group are that group's test set and
are never trained on.
"""

from __future__ import annotations

from serm.errors import DataError

ORDER_GROUPS = ("seed", "stream")   # the groups of `shift: order`: the file's first queries, then the rest


def batch_plan(policy, batch_no: int) -> tuple[str, int]:
    """(group, chunk) of stream batch `batch_no`."""
    groups = stream_groups(policy)
    return groups[(batch_no - 1) % len(groups)], (batch_no - 1) // len(groups)


def seed_group(policy) -> str:
    return ORDER_GROUPS[0] if policy.data.shift == "order" else policy.data.seed_locale


def stream_groups(policy) -> list[str]:
    return [ORDER_GROUPS[1]] if policy.data.shift == "order" else list(policy.data.stream_locales)


_WORLDS: dict = {}


def world(policy):
    """The policy's world, built once per process and policy (the stages of a round share it)."""
    key = (policy.hash(), str(policy.resolve(policy.data.judgments)))
    if key not in _WORLDS:
        if len(_WORLDS) >= 4:
            _WORLDS.clear()
        _WORLDS[key] = XQuADWorld(policy) if policy.data.xquad else JudgmentsWorld(policy)
    return _WORLDS[key]


class XQuADWorld:
    """The shipped XQuAD: a question's source paragraph is grade 3, every other one grade 0."""

    def __init__(self, policy):
        from serm.data import xquad

        d = self.spec = policy.data
        self.policy = policy
        self.questions, self.paragraphs = xquad.load_questions(), xquad.load_paragraphs()
        self.split = xquad.split_question_ids(policy.seed, d.test_queries, d.seed_queries)
        self._gold = set(zip(self.questions.query_id, self.questions.doc_id))

    def _lists(self, qs):
        from serm.data import xquad

        c = self.spec.candidates
        return xquad.candidate_lists(qs, self.paragraphs, c.hard_negatives, c.random_negatives, self.policy.seed)

    def documents(self):
        from serm.data import xquad

        return xquad.documents()

    def seed_set(self):
        q = self.questions
        return self._lists(q[(q.locale == self.spec.seed_locale) & q.question_id.isin(self.split["seed"])])

    def test_sets(self):
        """Held-out test questions in the seed locale and every stream locale (`group` = locale)."""
        q = self.questions
        locales = [self.spec.seed_locale, *self.spec.stream_locales]
        tests = self._lists(q[q.locale.isin(locales) & q.question_id.isin(self.split["test"])])
        return tests.assign(group=tests["locale"])

    def batch_candidates(self, batch_no: int):
        locale, chunk = batch_plan(self.policy, batch_no)
        ids = self.split["stream"]
        q = self.questions
        qs = q[(q.locale == locale) & q.question_id.isin(ids)]
        present = set(qs.question_id)
        qs = qs.set_index("question_id").loc[[i for i in ids if i in present]].reset_index()
        n = self.spec.queries_per_batch
        qs = qs.iloc[chunk * n:(chunk + 1) * n]
        return None if qs.empty else self._lists(qs)

    def grade(self, query_id: str, doc_id: str) -> int:
        return 3 if (query_id, doc_id) in self._gold else 0


class JudgmentsWorld:
    """A judgments file replayed as a stream: each query's candidates are its judged documents,
    the judged grade is the hidden truth (a pair nobody judged is grade 0)."""

    def __init__(self, policy):
        import numpy as np

        from serm.data.judgments import load_judgments

        d = self.spec = policy.data
        self.policy = policy
        path = policy.resolve(d.judgments)
        j = load_judgments(path)
        if j.empty:
            raise DataError(f"data.judgments: {path} holds no judgments")
        queries = j.drop_duplicates("query_id")["query_id"].tolist()   # file order
        if d.shift == "order":
            head = d.seed_queries + d.test_queries
            group = {q: ORDER_GROUPS[0] if i < head else ORDER_GROUPS[1] for i, q in enumerate(queries)}
        else:
            col = "locale" if d.shift == "locale" else d.shift_column
            if col not in j.columns:
                raise DataError(f"data.shift_column: {path} has no column {col!r}; its columns: {', '.join(j.columns)}")
            group = dict(zip(j["query_id"], j[col].astype(str)))
        j["group"] = j["query_id"].map(group)
        self.judgments = j
        found = sorted(set(group.values()))
        field = "data.seed_locale / data.stream_locales" if d.shift != "order" else "data.shift"
        rng = np.random.default_rng(policy.seed)
        self.tests, self.seed_ids, self.streams = set(), [], {}
        for g in [seed_group(policy), *stream_groups(policy)]:
            qs = [q for q in queries if group[q] == g]
            if len(qs) <= d.test_queries:
                raise DataError(f"{field}: group {g!r} has {len(qs)} queries in {path}; it needs more than "
                                f"data.test_queries={d.test_queries} (groups found: {', '.join(found[:20])})")
            held = set(rng.choice(qs, d.test_queries, replace=False).tolist())
            self.tests |= held
            rest = [q for q in qs if q not in held]
            if g == seed_group(policy):
                self.seed_ids = rest[:d.seed_queries]
            else:
                self.streams[g] = rest
        self._truth = dict(zip(zip(j.query_id, j.doc_id), j.grade.astype(int)))

    def _of(self, query_ids):
        from serm.schema import JUDGMENT_COLUMNS

        j = self.judgments
        return j[j.query_id.isin(set(query_ids))][[*JUDGMENT_COLUMNS, "group"]].reset_index(drop=True)

    def documents(self):
        docs = self.judgments.drop_duplicates("doc_id")
        return docs.rename(columns={"doc_title": "title", "doc_text": "text"})[["doc_id", "title", "text", "locale"]]

    def seed_set(self):
        return self._of(self.seed_ids).drop(columns="group")

    def test_sets(self):
        return self._of(self.tests)

    def batch_candidates(self, batch_no: int):
        group, chunk = batch_plan(self.policy, batch_no)
        n = self.spec.queries_per_batch
        ids = self.streams[group][chunk * n:(chunk + 1) * n]
        return self._of(ids).drop(columns="group") if ids else None

    def grade(self, query_id: str, doc_id: str) -> int:
        return self._truth.get((query_id, doc_id), 0)
