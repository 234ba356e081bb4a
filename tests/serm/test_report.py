"""The round report: one HTML page per round linking the drift report, the mining report,
annotation statistics, the metrics table and a PNG of metrics across versions."""

import json
import shutil
from html.parser import HTMLParser

import pytest

from serm.report import write_round_report
from serm.schema import RoundManifest
from serm.workspace import Workspace

from tests.drift_workspaces import two_round_workspace


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.cells, self.headings, self.rows = [], [], [], [], []
        self._cell = self._h = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and not attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "td":
            self._cell = ""
        if tag == "tr":
            self.rows.append([])
        if tag == "h2":
            self._h = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._h is not None:
            self._h += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self.rows[-1].append(self._cell)
            self._cell = None
        if tag == "h2":
            self.headings.append(self._h)
            self._h = None


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return two_round_workspace(tmp_path_factory.mktemp("report") / "shop")


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def test_round_report_links_every_artifact_and_shows_the_numbers(ws):
    rdir = ws.round_dir(1)
    out = write_round_report(ws, 1, rdir)
    page = parse(out)
    assert page.headings == ["Summary", "Drift and trigger", "Mining", "Annotation statistics",
                             "Metrics: candidate vs production", "Metrics across versions", "More"]
    for name in ("drift.html", "drift.json", "mining_report.json", "annotation_report.json", "metrics.json",
                 "manifest.json"):
        assert name in page.links, name
    for href in page.links:  # every link resolves inside the round's folder
        assert (rdir / href).is_file(), href
    assert (rdir / "drift.html").stat().st_size > 10_000  # the real Evidently report
    # drift: every detector with its value and rule; the trigger decision and why
    drift = json.loads((rdir / "manifest.json").read_text())["stages"]["drift"]["result"]
    for d in drift["detectors"]:
        assert d["type"] in page.cells
    assert "< 0.05" in page.cells and ">= 0.1" in page.cells
    text = out.read_text()
    assert "<b>Trigger:</b> fired" in text and "drift in " in text
    # mining + annotation statistics
    assert "user_feedback" in page.cells and "80" in page.cells
    cells = {r[0]: r[1] for r in page.rows if len(r) == 2}
    assert cells["accepted (two-level agreement)"] == "110" and cells["escalated in all"] == "31"
    assert cells["resolved by a person"] == "20"
    assert cells["escalated share of candidates"] == "0.2" and cells["accepted share of candidates (agreement rate)"] == "0.71"
    agents = {r[0]: r[1:] for r in page.rows if len(r) == 4}
    assert agents["lexical"] == ["0", "0.8733", "150"] and agents["click_evidence"] == ["0.4", "0.9556", "90"]
    # metrics table: production vs candidate on both tests, with the difference
    assert "evolving (es)" in page.cells and "0.7" in page.cells and "0.61" in page.cells
    assert "promoted serm-model@v1.0.0" in text
    # the plot of metrics across versions
    assert page.images == ["metrics_by_version.png"]
    import matplotlib.image

    img = matplotlib.image.imread(rdir / "metrics_by_version.png")
    assert img.shape[:2] == (340, 900)
    assert "v1 (production)" in page.cells and "v0" in page.cells


def test_a_round_that_did_not_evolve_says_so(ws, tmp_path):
    w = Workspace.at(shutil.copytree(ws.root, tmp_path / "ws"))
    rdir = w.round_dir(2)
    for name in ("mining_report.json", "annotation_report.json", "metrics.json"):
        (rdir / name).unlink()
    man = RoundManifest.load(rdir)
    man.promoted, man.reason = False, "no trigger: only 5 new pairs < min_new_pairs 500"
    man.decision = {"run_pipeline": False, "reason": "only 5 new pairs < min_new_pairs 500"}
    man.save()
    text = write_round_report(w, 2, rdir).read_text()
    assert "nothing mined this round" in text and "nothing annotated this round" in text
    assert "no candidate was trained this round" in text
    assert "<b>Pipeline:</b> did not run — only 5 new pairs" in text
    page = parse(rdir / "report.html")
    assert "drift.html" in page.links
    assert not {"mining_report.json", "annotation_report.json", "metrics.json"} & set(page.links)
