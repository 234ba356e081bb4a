"""Readers of a workspace's committed history: labels so far, what production was trained on,
earlier model versions, human audits. The round runner gathers a stage's inputs with these and
hands them to the pure stage functions in `serm.stages`; nothing here writes.

Each reader is bounded by what it needs: the committed rounds up to production's round, the
label files, the round folders' own artifacts (named in `serm.schema`).
"""

from __future__ import annotations

from pathlib import Path

from serm import schema
from serm.data import pair_keys
from serm.files import read_parquet


def all_labels(ws):
    """Every trainable label committed so far (accepted + human-resolved), oldest round first."""
    import pandas as pd

    files = ws.layout.label_files()
    if not files:
        return pd.DataFrame(columns=["query_id", "doc_id", "grade", "round"])
    return pd.concat([read_parquet(f) for f in files], ignore_index=True)


def labelled_pairs(ws) -> set:
    return pair_keys(all_labels(ws))


def seed_set(ws):
    return read_parquet(ws.layout.seed_train)


def test_sets(ws):
    return read_parquet(ws.layout.tests)


def evolving_tests(ws, locale: str | None = None):
    """Reviewed test labels (a `files` source's evolving test set), of one locale if given."""
    from serm.annotation.escalations import read_test_labels

    tests = read_test_labels(ws.data)
    return tests[tests.locale == locale].reset_index(drop=True) if locale is not None else tests


def test_query_ids(ws) -> set:
    """Every query of a test set (fixed or reviewed, or requested for review): never trained on."""
    from serm.annotation.escalations import read_queue

    queue = read_queue(ws.data)
    ids = set(test_sets(ws)["query_id"]) | set(evolving_tests(ws)["query_id"])
    return ids | set(queue.loc[queue.purpose == schema.TEST, "query_id"])


def documents(ws, fallback=None):
    """The workspace's document catalogue (`data/documents.parquet`); `fallback()` for a
    workspace made before the catalogue was kept there."""
    path = ws.layout.documents
    if path.exists() or fallback is None:
        return read_parquet(path)
    return fallback()


def grade_history(ws):
    """Every grade trained on so far (seed set + committed labels): the label checks' reference
    distribution."""
    import pandas as pd

    parts = [g for g in (seed_set(ws)["grade"], all_labels(ws)["grade"]) if len(g)]  # concat of empties is deprecated
    return pd.concat(parts, ignore_index=True).dropna().astype(int) if parts else pd.Series(dtype="int64")


def reference_frame(ws):
    """The drift reference: per-query frames of what the production model was trained on, the
    seed stream plus every committed batch up to production's round."""
    import pandas as pd

    lay = ws.layout
    prod_round = ws.state().get("production_round", 0)
    frames = [read_parquet(lay.seed_query_frame)]
    for r in range(1, prod_round + 1):
        f = lay.round(r).kept(schema.QUERY_FRAME)
        if f.exists():
            frames.append(read_parquet(f))
    return pd.concat(frames, ignore_index=True)


def training_queries(ws) -> list[str]:
    """Queries the production model was trained on: the seed set's and those of labels from
    rounds up to production's round (text from each round's mined candidates)."""
    lay = ws.layout
    prod_round = ws.state().get("production_round", 0)
    queries = set(seed_set(ws)["query"])
    labels = all_labels(ws)
    for r in sorted({int(r) for r in labels["round"]} if len(labels) else ()):
        f = lay.round(r).kept(schema.CANDIDATES)
        if r <= prod_round and f.exists():
            cands = read_parquet(f)[["query_id", "query"]]
            queries.update(cands.loc[cands.query_id.isin(set(labels.loc[labels["round"] == r, "query_id"])), "query"])
    return sorted(queries)


def round_history(ws) -> list[dict]:
    """Committed rounds, oldest first: {round, finished (ISO time or None), evolved (the
    pipeline ran: mining onward), promoted}, from their committed manifests (the trigger's
    cooldown and rounds-per-period read it)."""
    out = []
    for rl in ws.layout.committed_rounds():
        man = schema.RoundManifest.load(rl.committed_manifest)
        out.append({"round": man.round, "finished": man.finished or man.entry("promote").at,
                    "evolved": man.evolved, "promoted": bool(man.promoted)})
    return out


def load_model(path: Path, policy):
    from serm.model.cross_encoder import RelevanceModel

    return RelevanceModel.load(path, policy.model, device=policy.training.device)


def version_model_dir(ws, version: int, tag: str) -> Path:
    """An earlier version's model directory, restored once from DVC (the tag's `data/model`)
    into `.serm/models/vN` (derived state, outside versions)."""
    import shutil

    from dvc.api import DVCFileSystem

    out = ws.dot / "models" / f"v{version}"
    if not (out / schema.MODEL_CONFIG).exists():
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        fs = DVCFileSystem(str(ws.root), rev=tag)
        try:
            fs.get("data/model", str(tmp), recursive=True)
        finally:
            fs.close()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def model_versions(ws, policy):
    """Every recorded model version, loadable on demand; production from `data/model`."""
    from serm.mining.base import ModelVersions

    production = ws.state()["production"]
    loaders = {production: lambda: load_model(ws.model_dir, policy)}
    for entry in ws.versions()["versions"]:
        v, tag = entry["version"], entry.get("tag")
        if v != production and tag and not entry.get("removed"):   # `serm gc` took a removed one's files
            loaders[v] = lambda v=v, tag=tag: load_model(version_model_dir(ws, v, tag), policy)
    return ModelVersions(production=production, loaders=loaders)


def model_loader(ws, policy):
    """`ref -> RelevanceModel` for agents that grade with a model (the teacher): a workspace
    version (`v3`), or a model directory (relative paths from the workspace). Each model is
    loaded once."""
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.refs import model_source

    loaded: dict = {}

    def load(ref: str):
        if ref not in loaded:
            where = ws.root / ref
            with model_source(str(where) if where.is_dir() else ref, ws.root) as src:
                loaded[ref] = RelevanceModel.load(src.path, src.spec(policy.model), device=policy.training.device)
        return loaded[ref]

    return load


def audit_frame(ws, intra_min_share: float):
    """Every earlier level-1 grade of a pair a human graded: agent, grade, human_grade. The
    `weighted` vote's `human_audit` reliabilities are measured on it."""
    import pandas as pd

    from serm.annotation.agreement import level1

    frames = []
    for rl in ws.layout.round_folders():
        vf, lf = rl.kept(schema.VOTES), rl.kept(schema.LABELS)
        if not (vf.exists() and lf.exists()):
            continue
        labels = read_parquet(lf)
        humans = labels.loc[labels.status == schema.LabelStatus.HUMAN, ["query_id", "doc_id", "grade"]].rename(
            columns={"grade": "human_grade"})
        if len(humans):
            l1 = level1(read_parquet(vf), intra_min_share)
            frames.append(l1[l1.agent != "human"].merge(humans, on=["query_id", "doc_id"])[["agent", "grade", "human_grade"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["agent", "grade", "human_grade"])
