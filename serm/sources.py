"""Where a workspace's data comes from: the policy's `data.source`.

    simulated   a world of judged queries (`serm.simulation`: the shipped XQuAD or a judgments
                file) served by the production model, clicks drawn from a click model on the
                hidden grades, a simulated reviewer holding the same truth
    files       a team's own data: a document catalogue, judged seed pairs, a static test set,
                and impression/click logs ingested from files (`serm ingest`, `serm watch`);
                nothing is hidden: people's grades come only from imported reviews

The round runner asks a source the same questions whichever it is (`open_source(policy)`):
the first data (documents, seed set, test sets, the seed queries as served), each stream
batch as production served it, the round's test sets, and the hidden truth and simulated
reviewer (None for `files`). Everything a source hands on follows `serm.schema`'s contracts.
"""

from __future__ import annotations

from dataclasses import dataclass

from serm import schema, stages
from serm.errors import DataError


@dataclass
class FirstData:
    """What a workspace starts from: written to `data/` by `serm init`."""

    documents: "object"     # DOCUMENT_COLUMNS (+ the source's own columns)
    seed: "object"          # judgments the seed model v0 trains on
    tests: "object"         # fixed test judgments, with the test `group` of each row


def open_source(policy):
    return FilesSource(policy) if policy.data.source == "files" else SimulatedSource(policy)


def batch_locale(events) -> str:
    """The locale most of a batch's queries are in (its evolving test set's locale)."""
    per_query = events.drop_duplicates("query_id")["locale"]
    return str(per_query.mode().sort_values().iloc[0]) if len(per_query) else "unknown"


class SimulatedSource:
    kind = "simulated"
    simulated = True

    def __init__(self, policy):
        from serm import simulation

        self.policy = policy
        self.world = simulation.world(policy)
        self.static_group = simulation.seed_group(policy)

    def first_data(self) -> FirstData:
        return FirstData(self.world.documents(), self.world.seed_set(), self.world.test_sets())

    def documents(self):
        return self.world.documents()

    def first_group(self, seed) -> str:
        """The evolving test group v0 is first measured on: the stream's first group."""
        from serm import simulation

        return simulation.stream_groups(self.policy)[0]

    def seed_events(self, seed, score, now):
        """The seed queries as v0 serves them, clicks from the click model (batch 0)."""
        from serm.data.stream import simulate_clicks

        return simulate_clicks(seed, score, self.policy.data.clicks, 0, self.policy.seed, now)

    def batch(self, ws, batch_no: int, model, documents, now):
        """(Served, group) of stream batch `batch_no`: production ranks the batch's candidates,
        the click model answers."""
        from serm import simulation

        cands = self.world.batch_candidates(batch_no)
        if cands is None:
            raise DataError(f"the stream is exhausted: batch {batch_no} has no queries left; "
                            "add locales to data.stream_locales or lower data.queries_per_batch")
        group, _ = simulation.batch_plan(self.policy, batch_no)
        served = stages.serve(model, cands, self.policy.data.clicks, batch_no, self.policy.seed, now,
                              set(documents.doc_id))
        return served, group

    def pending(self, ws) -> list[int]:
        """A simulated stream always has a next batch (until it is exhausted)."""
        return [ws.state()["next_batch"]]

    def round_tests(self, ws, group: str):
        from serm import history

        return stages.round_tests(history.test_sets(ws), self.static_group, group)

    def truth(self):
        return self.world.grade

    def reviewer(self, budget: int):
        from serm.annotation.human import SimulatedHuman

        return SimulatedHuman(budget, self.world.grade)


class FilesSource:
    kind = "files"
    simulated = False

    def __init__(self, policy):
        self.policy = policy
        self.static_group = schema.STATIC

    def first_data(self) -> FirstData:
        """The documents, seed and static test files the policy names, validated. A judged
        document missing from the catalogue joins it with its judgment's text."""
        import pandas as pd

        from serm.data.documents import load_documents
        from serm.data.judgments import load_judgments

        d = self.policy.data
        docs = load_documents(self.policy.resolve(d.documents), field="data.documents")
        seed = _judgments(load_judgments, self.policy.resolve(d.seed_judgments), "data.seed_judgments")
        tests = _judgments(load_judgments, self.policy.resolve(d.static_test), "data.static_test")
        shared = set(seed.query_id) & set(tests.query_id)
        if shared:
            raise DataError(f"data.static_test shares {len(shared)} query id(s) with data.seed_judgments "
                            f"(e.g. {sorted(shared)[0]}): a test query must never be trained on")
        judged = pd.concat([seed, tests], ignore_index=True).drop_duplicates("doc_id")
        missing = judged[~judged.doc_id.isin(set(docs.doc_id))]
        blank = missing[(missing.doc_title == "") & (missing.doc_text == "")]
        if len(blank):
            raise DataError(f"judged document {blank.doc_id.iloc[0]!r} ({len(blank)} such) is neither in "
                            "data.documents nor given a doc_title/doc_text in its judgments; add it to the catalogue")
        if len(missing):
            extra = missing.rename(columns={"doc_title": "title", "doc_text": "text"})[list(schema.DOCUMENT_COLUMNS)]
            docs = pd.concat([docs, extra], ignore_index=True)
        return FirstData(docs, _with_text(seed, docs), _with_text(tests, docs).assign(group=schema.STATIC))

    def documents(self):
        from serm.data.documents import load_documents

        return load_documents(self.policy.resolve(self.policy.data.documents), field="data.documents")

    def first_group(self, seed) -> str:
        """The locale of the evolving test v0 is first measured on: the seed's (nothing is
        reviewed yet, so that set is empty until reviewers answer)."""
        return batch_locale(seed)

    def seed_events(self, seed, score, now):
        """The seed queries as v0 ranks them, without clicks: nobody clicked on a judged set."""
        import pandas as pd

        ranked = seed.assign(score=score).sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
        return pd.DataFrame({
            "event_id": [f"seed-{i:07d}" for i in range(len(ranked))], "ts": pd.Timestamp(now),
            "query_id": ranked["query_id"].to_numpy(), "query": ranked["query"].to_numpy(),
            "locale": ranked["locale"].to_numpy(), "doc_id": ranked["doc_id"].to_numpy(),
            "position": (ranked.groupby("query_id").cumcount() + 1).to_numpy(), "clicked": False, "dwell_s": 0.0})

    def batch(self, ws, batch_no: int, model, documents, now):
        """(Served, locale) of ingested batch `batch_no`: its logged events, the production
        model's score of every impressed pair."""
        from serm import ingest

        events, quarantine, info = ingest.read_batch(ws, batch_no)
        served = stages.serve_logged(model, events, documents, quarantine, info["counts"])
        return served, batch_locale(events)

    def pending(self, ws) -> list[int]:
        from serm import ingest

        return ingest.pending_batches(ws)

    def round_tests(self, ws, locale: str):
        """static: the team's static test file; evolving: the reviewed test labels of the
        batch's locale gathered so far (`serm escalations import` of test requests)."""
        from serm import history

        sets = {schema.STATIC: history.test_sets(ws), schema.EVOLVING: history.evolving_tests(ws, locale)}
        static_locales = sorted(set(sets[schema.STATIC].locale))
        return sets, {schema.STATIC: ",".join(static_locales), schema.EVOLVING: locale}

    def truth(self):
        return None

    def reviewer(self, budget: int):
        return None


def _with_text(judgments, documents):
    """A judgment that leaves doc_text empty takes its document's title and text from the
    catalogue (a judgments file may name documents by id, or by id and title)."""
    docs = documents.set_index("doc_id")
    blank = (judgments.doc_text == "") & judgments.doc_id.isin(docs.index)
    out = judgments.copy()
    out.loc[blank, "doc_title"] = out.loc[blank, "doc_id"].map(docs["title"]).to_numpy()
    out.loc[blank, "doc_text"] = out.loc[blank, "doc_id"].map(docs["text"]).to_numpy()
    return out


def _judgments(load, path, field: str):
    try:
        j = load(path)
    except DataError as exc:
        raise DataError(f"{field}: {exc}") from None
    if j.empty:
        raise DataError(f"{field}: {path} holds no judgments")
    return j
