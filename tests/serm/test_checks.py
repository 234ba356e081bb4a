"""The Great Expectations gate on annotated labels (serm.checks)."""

import json

import pandas as pd
import pytest

from serm.checks import CheckReport, check_labels
from serm.errors import CheckFailed
from serm.policy import ChecksSpec

Q, D = {"q1", "q2", "q3", "q4"}, {"d1", "d2", "d3", "d4"}


def labels() -> pd.DataFrame:
    return pd.DataFrame({
        "query_id": ["q1", "q2", "q3", "q4"],
        "doc_id": ["d1", "d2", "d3", "d4"],
        "grade": pd.array([3, 0, 1, 2], dtype="int64"),
        "agreement": [1.0, 0.67, 1.0, 0.67],
        "status": ["accepted", "human", "accepted", "accepted"],
        "round": 1,
        "policy_hash": "abc123",
    })


def with_(**cells):
    """labels() with cells replaced: with_(grade={0: 7}) sets row 0's grade to 7."""
    df = labels()
    for col, rows in cells.items():
        if any(v is None for v in rows.values()):
            df[col] = df[col].astype(object)
        for row, val in rows.items():
            df.at[row, col] = val
    return df


def failed_message(report: CheckReport) -> str:
    assert not report.success
    with pytest.raises(CheckFailed) as exc:
        report.raise_for_failure()
    msg = str(exc.value)
    assert msg.rstrip().endswith("the round stopped before training, production is unchanged")
    return msg


def test_valid_labels_pass_and_the_report_json_is_written(tmp_path):
    out = tmp_path / "round-1" / "label_checks.json"
    r = check_labels(labels(), Q, D, ChecksSpec(), escalated=1, out_path=out)
    assert r.success, r.to_dict()
    r.raise_for_failure()  # no exception
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(r.to_dict()))
    assert saved["success"] is True and saved["labels"] == 4 and saved["escalated"] == 1
    assert len(saved["results"]) == 13  # 12 GE expectations + the escalated-share gate
    for res in saved["results"]:
        assert {"expectation", "column", "success", "observed", "unexpected_examples"} <= set(res)
    assert [p.name for p in out.parent.iterdir()] == ["label_checks.json"]  # no temp file left


DEFECTS = {
    "grade 7": (dict(grade={0: 7}), "grade in {0,1,2,3}: 1 unexpected value, e.g. [7]"),
    "two bad grades": (dict(grade={0: 7, 2: -1}), "grade in {0,1,2,3}: 2 unexpected values, e.g. [7, -1]"),
    "null grade": (dict(grade={1: None}), "grade not null: 1 null value"),
    "duplicate pair": (dict(query_id={1: "q1"}, doc_id={1: "d1"}),
                       "(query_id, doc_id) unique: 2 rows sharing a duplicated pair, e.g. [('q1', 'd1')]"),
    "unknown query id": (dict(query_id={2: "q-unknown"}), "query_id in known query ids (4): 1 unexpected value, "
                                                          "e.g. ['q-unknown']"),
    "unknown doc id": (dict(doc_id={3: "d-unknown"}), "doc_id in known doc ids (4)"),
    "agreement 1.5": (dict(agreement={0: 1.5}), "agreement between 0 and 1: 1 unexpected value, e.g. [1.5]"),
    "low mean agreement": (dict(agreement={0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1}), "mean agreement >= 0.5: observed 0.1"),
    "escalated row": (dict(status={1: "escalated"}), "status in {accepted,human}: 1 unexpected value, "
                                                     "e.g. ['escalated']"),
    "null status": (dict(status={1: None}), "status not null: 1 null value"),
}


@pytest.mark.parametrize("name", list(DEFECTS))
def test_each_defect_alone_stops_the_round_naming_the_problem(name, tmp_path):
    cells, needle = DEFECTS[name]
    out = tmp_path / "label_checks.json"
    r = check_labels(with_(**cells), Q, D, ChecksSpec(min_agreement=0.5), out_path=out)
    msg = failed_message(r)
    assert needle in msg, msg
    assert f"inspect {out}" in msg
    # only the defect fails (a duplicate pair is one defect; everything else still holds)
    failed = [x["expectation"] for x in r.results if not x["success"]]
    assert len(failed) == 1, failed
    assert json.loads(out.read_text())["success"] is False


def test_too_many_escalated_fails_the_computed_gate():
    r = check_labels(labels(), Q, D, ChecksSpec(max_escalated_share=0.5), escalated=10)
    msg = failed_message(r)
    assert "escalated share <= 0.5: 10 of 14 candidates (71%) escalated and unresolved" in msg
    assert [x["expectation"] for x in r.failures()] == ["escalated share <= 0.5"]
    # at the limit it passes
    assert check_labels(labels(), Q, D, ChecksSpec(max_escalated_share=0.5), escalated=4).success


def test_empty_frame_fails_with_a_clear_reason(tmp_path):
    out = tmp_path / "label_checks.json"
    r = check_labels(labels().iloc[0:0], Q, D, ChecksSpec(), out_path=out)
    msg = failed_message(r)
    assert "no trainable labels" in msg and "no trainable labels" in r.results[0]["observed"]
    assert json.loads(out.read_text())["labels"] == 0


def test_ids_are_checked_against_the_whole_known_set():
    # the value_set GE sees is cut down to the known ids present in the frame: an empty
    # intersection must still fail every row, and a huge known set must still pass
    r = check_labels(labels(), set(), D, ChecksSpec())
    assert "query_id in known query ids (0): 4 unexpected values" in failed_message(r)
    many = {f"x{i}" for i in range(20_000)}
    assert check_labels(labels(), Q | many, D | many, ChecksSpec()).success


def test_missing_column_fails_readably():
    msg = failed_message(check_labels(labels().drop(columns=["agreement"]), Q, D, ChecksSpec()))
    assert "missing column(s) ['agreement']" in msg


def test_no_progress_bars_on_a_round_sized_frame(capfd):
    # a round-sized frame against corpus-sized id sets; speed is not asserted here (no timed tests)
    n = 2000
    big = pd.DataFrame({
        "query_id": [f"q{i}" for i in range(n)], "doc_id": [f"d{i % 500}" for i in range(n)],
        "grade": [i % 4 for i in range(n)], "agreement": [0.67 + (i % 3) * 0.1 for i in range(n)],
        "status": ["accepted" if i % 5 else "human" for i in range(n)], "round": 2, "policy_hash": "h",
    })
    known_q, known_d = {f"q{i}" for i in range(10_000)}, {f"d{i}" for i in range(3_000)}
    r = check_labels(big, known_q, known_d, ChecksSpec(), escalated=30)
    assert r.success, [x for x in r.results if not x["success"]]
    assert "Calculating Metrics" not in capfd.readouterr().err


def test_a_round_whose_grades_break_from_history_fails_the_distribution_check():
    history = [0] * 500 + [3] * 100                     # mostly negatives, as candidate lists are
    all_relevant = labels().assign(grade=3)
    r = check_labels(all_relevant, Q, D, ChecksSpec(max_grade_kl=1.0), history_grades=history)
    msg = failed_message(r)
    assert "grade distribution KL" in msg and "observed" in msg
    mixed = labels().assign(grade=[0, 0, 3, 0])
    assert check_labels(mixed, Q, D, ChecksSpec(max_grade_kl=1.0), history_grades=history).success
    # Too little history to compare against: the check is not run.
    assert check_labels(all_relevant, Q, D, ChecksSpec(min_history_labels=1000), history_grades=history).success


def test_an_agent_abstaining_beyond_its_bound_fails_the_gate():
    spec = ChecksSpec(max_abstention=0.5, max_abstention_per_agent={"click_evidence": 0.9})
    ok = {"lexical": 0.1, "click_evidence": 0.8, "human": 1.0}      # human abstains by design
    assert check_labels(labels(), Q, D, spec, abstention=ok).success
    r = check_labels(labels(), Q, D, spec, abstention={"lexical": 0.7, "click_evidence": 0.8})
    msg = failed_message(r)
    assert "lexical abstained on 70% of pairs (bound 50%)" in msg and "click_evidence abstained" not in msg
