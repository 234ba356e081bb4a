"""What the mining stage hands its agents from a real workspace (git + DVC in a temp dir): earlier
model versions restored from their tags, and the production model's training queries."""

import json

import pandas as pd

from serm import history, versioning
from serm.files import atomic_write_json, write_parquet
from serm.workspace import Workspace


def test_earlier_versions_come_back_from_their_dvc_tags_and_training_queries_follow_production(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    versioning.init_repo(ws, ".dvc-remote")
    versioning.git(ws, "add", "-A")
    versioning.git(ws, "commit", "-q", "-m", "new workspace")
    write_parquet(pd.DataFrame({"query_id": ["s1"], "query": ["seed question"]}), ws.data / "seed" / "train.parquet")
    for v in (0, 1):
        atomic_write_json(ws.model_dir / "config.json", {"version": v})
        atomic_write_json(ws.state_path, {"rounds_done": v, "next_batch": v + 1, "production": v, "production_round": v})
        versioning.record_version(ws, {"version": v, "tag": f"serm-model@v{v}.0.0", "round": v})
        versioning.commit_version(ws, f"v{v}", f"serm-model@v{v}.0.0")

    restored = history.version_model_dir(ws, 0, "serm-model@v0.0.0")
    assert restored == ws.dot / "models" / "v0"
    assert json.loads((restored / "config.json").read_text()) == {"version": 0}
    assert json.loads((ws.model_dir / "config.json").read_text()) == {"version": 1}, "data/ is untouched"

    class Policy:  # model_versions only passes the policy on to load_model
        pass

    mv = history.model_versions(ws, Policy())
    assert mv.production == 1 and sorted(mv.loaders) == [0, 1] and mv.resolve(["production", "previous"]) == [1, 0]

    # Labels of round 1 trained production (round 1); round 2's did not yet.
    for r, (qid, text) in ((1, ("q1", "first stream question")), (2, ("q2", "second stream question"))):
        write_parquet(pd.DataFrame({"query_id": [qid, "qx"], "doc_id": ["d", "d"], "query": [text, "unlabelled"]}),
                      ws.round_dir(r) / "candidates.parquet")
        write_parquet(pd.DataFrame({"query_id": [qid], "doc_id": ["d"], "grade": [3], "round": [r]}),
                      ws.data / "labels" / f"r{r:04d}.parquet")
    assert history.training_queries(ws) == ["first stream question", "seed question"]
