import pandas as pd
import pytest

from serm.data.judgments import JUDGMENT_COLUMNS, load_judgments
from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.errors import DataError


def sample():
    return pd.DataFrame({"query_id": ["q1", "q1"], "query": ["nile length", "nile length"], "doc_id": ["d1", "d2"],
                         "doc_title": ["Nile", None], "doc_text": ["The Nile is 6,650 km long.", "Mountains"],
                         "grade": [3, 0], "locale": ["en", "en"]})


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_loads_every_format(tmp_path, ext):
    f = tmp_path / f"j.{ext}"
    df = sample()
    {"parquet": lambda: df.to_parquet(f), "csv": lambda: df.to_csv(f, index=False),
     "jsonl": lambda: df.to_json(f, orient="records", lines=True)}[ext]()
    out = load_judgments(f)
    assert list(out.columns[:7]) == JUDGMENT_COLUMNS and out["grade"].tolist() == [3, 0]
    assert out["doc_title"].tolist() == ["Nile", ""]


def test_missing_column_and_bad_files_are_clear(tmp_path):
    f = tmp_path / "j.csv"
    sample().drop(columns=["locale"]).to_csv(f, index=False)
    with pytest.raises(DataError, match="missing column.*locale"):
        load_judgments(f)
    g = tmp_path / "j.parquet"
    g.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read"):
        load_judgments(g)
    with pytest.raises(DataError, match="not found"):
        load_judgments(tmp_path / "nope.csv")
    bad = tmp_path / "b.csv"
    sample().assign(grade=[3, 9]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="outside 0-3"):
        load_judgments(bad)


def test_xquad_candidate_lists():
    q = load_questions()
    qs = q[q.locale == "es"].head(5)
    c = candidate_lists(qs, load_paragraphs(), hard_negatives=2, random_negatives=3, seed=1)
    per_q = c.groupby("query_id")
    assert (per_q.size() == 6).all()
    assert (per_q["grade"].apply(lambda g: (g == 3).sum()) == 1).all()
    assert (c.locale == "es").all() and c.doc_id.str.startswith("es:").all()
    gold = c[c.grade == 3].set_index("query_id")["doc_title"]
    hard = c[(c.grade == 0)].groupby("query_id").apply(lambda g: (g.doc_title == gold[g.name]).sum(), include_groups=False)
    assert (hard == 2).all(), "two hard negatives from the same article"
