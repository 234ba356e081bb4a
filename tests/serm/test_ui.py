"""The Evidently UI of a workspace: the dashboard sync (real Evidently workspace), `serm ui` (a
real `evidently ui` process on 127.0.0.1) and the dashboard rendered by headless Chromium.

The workspace has two committed rounds built from the files a round writes (see
drift_workspaces.py): batch 1 (es) promoted v1, batch 2 (de) kept v1. The screenshot is kept
at tests/artifacts/dashboard.png."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from monitoring.dashboard import evidently_path, project_name, sync
from serm.schema import RoundManifest
from serm.workspace import Workspace

from tests.conftest import ROOT
from tests.drift_workspaces import two_round_workspace

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
PANELS = ["Production model version", "Drift share of the latest batch", "Drift share per batch",
          "Per-detector drift score per batch", "NDCG@4 per model version", "Accuracy per model version",
          "Mined / accepted / escalated per round", "Candidate vs production NDCG@4 per round",
          "Production marker per model version", "Production version after each round"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The two-round workspace, before any dashboard sync (the drift snapshots are there)."""
    return two_round_workspace(tmp_path_factory.mktemp("two_rounds") / "shop")


def copy_of(ws: Workspace, dest: Path) -> Workspace:
    shutil.copytree(ws.root, dest)
    return Workspace.at(dest)


def snapshots(ws: Workspace) -> dict:
    """{(kind, key): (SnapshotModel, tags, metadata)} read back through Evidently's own API."""
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    index = json.loads((evidently_path(ws) / "serm-index.json").read_text())
    ews = EvidentlyWorkspace(str(evidently_path(ws)))
    out = {}
    for sid in ews.list_runs(index["project_id"]):
        entry = index["snapshots"][str(sid)]
        out[(entry["kind"], entry["key"])] = ews.get_run(index["project_id"], sid)
    return out


def values(snapshot) -> dict:
    """Column -> value of the MeanValue results of a summary snapshot."""
    return {r.metric_value_location.metric.params["column"]: r.value for r in snapshot.metric_results.values()}


# --------------------------------------------------------------------------- sync
def test_sync_logs_every_round_and_version(built, tmp_path):
    ws = copy_of(built, tmp_path / "ws")
    first = sync(ws)
    assert (first["added"], first["removed"], first["snapshots"]) == (5, 0, 7)  # 2 rounds, 2 versions, state
    snaps = snapshots(ws)
    assert set(snaps) == {("drift", "1"), ("drift", "2"), ("round", "1"), ("round", "2"),
                          ("version", "0"), ("version", "1"), ("state", "production")}
    r1, r2 = values(snaps[("round", "1")]), values(snaps[("round", "2")])
    man = json.loads((ws.round_dir(1) / "manifest.json").read_text())
    dets = man["stages"]["drift"]["result"]["detectors"]
    assert r1["drift_share"] == pytest.approx(sum(d["drifted"] for d in dets) / len(dets))
    assert r1["drift_locale_mix"] == pytest.approx(dets[1]["value"])
    assert (r1["mined"], r1["accepted"], r1["escalated"], r1["production_version"]) == (155, 110, 31, 1)
    assert (r2["mined"], r2["promoted"], r2["production_version"]) == (160, 0, 1)
    v0, v1 = values(snaps[("version", "0")]), values(snaps[("version", "1")])
    assert (v0["static_ndcg@4"], v0["evolving_ndcg@4"], v0["is_production"]) == (0.72, 0.61, 0)
    assert (v1["static_ndcg@4"], v1["evolving_ndcg@4"], v1["is_production"]) == (0.73, 0.70, 1)
    assert v1["evolving_accuracy"] == pytest.approx(0.82 - 0.05)
    assert values(snaps[("state", "production")])["production_version"] == 1
    assert "serm-round" in snaps[("round", "1")].tags and snaps[("round", "1")].metadata["locale"] == "es"
    assert snaps[("drift", "2")].metadata["locale"] == "de"
    assert sync(ws)["added"] == 0  # nothing changed: nothing rewritten

    # a rollback to v0 undoes round 2's lineage: its summary and drift snapshots go, v0 is marked production
    shutil.rmtree(ws.round_dir(2))
    reg = json.loads(ws.versions_path.read_text())
    reg["production"] = 0
    ws.versions_path.write_text(json.dumps(reg))
    ws.state_path.write_text(json.dumps({"rounds_done": 0, "next_batch": 1, "production": 0}))
    shutil.rmtree(ws.round_dir(1))
    again = sync(ws)
    snaps = snapshots(ws)
    assert ("round", "1") not in snaps and ("round", "2") not in snaps and ("drift", "2") not in snaps
    assert ("drift", "1") in snaps  # round 1 is the next round: its rerun replaces this one
    assert values(snaps[("version", "0")])["is_production"] == 1 and values(snaps[("state", "production")])["production_version"] == 0
    assert again["removed"] == 6 and again["added"] == 3


def test_dashboard_panels_are_defined(built, tmp_path):
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    ws = copy_of(built, tmp_path / "ws")
    info = sync(ws)
    model = EvidentlyWorkspace(str(evidently_path(ws))).get_project(info["project_id"]).dashboard.model()
    titles = [p.title for p in model.panels]
    assert titles[0] == "SERM workspace ws: production v1 (serm-model@v1.0.0)" and titles[1:] == PANELS
    per_detector = next(p for p in model.panels if p.title == "Per-detector drift score per batch")
    assert [v.metric_labels["column"] for v in per_detector.values] == [
        "drift_query_descriptors", "drift_locale_mix", "drift_score", "drift_engagement", "drift_embedding"]
    assert per_detector.values[2].legend == "score: p<0.1" and per_detector.values[4].legend == "embedding: p<0.05"
    assert len(model.tabs) == 1 and len(model.tabs[0].panels) == len(model.panels)
    # the project keeps the identity it got in the folder "shop" (the index), even in this copy
    assert EvidentlyWorkspace(str(evidently_path(ws))).get_project(info["project_id"]).name == "SERM shop"
    assert project_name(ws) == "SERM ws"


# --------------------------------------------------------------------------- serm ui + Chromium
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def non_loopback_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.fail("headless Chromium is not installed (/usr/bin/chromium); `bash scripts/setup.sh test` "
                    "installs it (apt-get install chromium)")
    return path


def get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def ui(built, tmp_path_factory):
    """`serm ui` on a free port of 127.0.0.1; stopped by PID (its process group) afterwards."""
    ws = copy_of(built, tmp_path_factory.mktemp("ui") / "shop")
    port = free_port()
    log = ws.root / "ui.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serm.cli", "ui", "--workspace", str(ws.root), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                get(f"http://127.0.0.1:{port}/api/version", 2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"serm ui did not come up (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield ws, port, proc, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def render(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM after Chromium ran the page's scripts for a virtual 20 s (panels load their data)."""
    args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,3300",
            "--virtual-time-budget=20000"]
    if screenshot:
        args.append(f"--screenshot={screenshot}")
    else:
        args.append("--dump-dom")
    res = subprocess.run([*args, url], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def panel_segments(dom: str) -> dict[str, str]:
    """Title -> the DOM between that panel's title and the next one's."""
    spans = [(t, dom.index(f">{t}<")) for t in PANELS]
    spans.sort(key=lambda s: s[1])
    return {t: dom[i:(spans[k + 1][1] if k + 1 < len(spans) else len(dom))] for k, (t, i) in enumerate(spans)}


def test_serm_ui_serves_the_workspace_on_localhost(ui):
    ws, port, proc, log = ui
    text = log.read_text()
    url = re.search(r"Evidently UI for .*: (http://127\.0\.0\.1:\d+/projects/[0-9a-f-]+)", text)
    assert url, text
    projects = get(f"http://127.0.0.1:{port}/api/projects")
    assert [p["name"] for p in projects] == [project_name(ws)]
    assert url.group(1).endswith(projects[0]["id"])
    # the server is this very process (serm ui execs evidently ui), bound to 127.0.0.1 only
    cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"evidently.cli" in cmd and cmd[cmd.index(b"--host") + 1] == b"127.0.0.1"
    other = non_loopback_address()
    if other:  # not reachable through this machine's other address
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()
    busy = subprocess.run([sys.executable, "-m", "serm.cli", "ui", "--workspace", str(ws.root), "--port", str(port)],
                          capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "--port" in busy.stderr


def test_dashboard_renders_panels_with_data_in_chromium(ui, tmp_path):
    ws, port, proc, log = ui
    project = get(f"http://127.0.0.1:{port}/api/projects")[0]["id"]
    url = f"http://127.0.0.1:{port}/projects/{project}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    render(url, tmp_path / "profile-shot", shot)
    assert shot.exists() and shot.stat().st_size > 100_000, "the screenshot of a rendered dashboard is large"
    print(f"dashboard screenshot: {shot}")

    dom = render(url, tmp_path / "profile-dom")
    assert f">SERM workspace {ws.root.name}: production v1 (serm-model@v1.0.0)<" in dom
    seg = panel_segments(dom)
    marks = {t: s.count("MuiMarkElement-root") for t, s in seg.items()}
    bars = {t: s.count("MuiBarElement-root") for t, s in seg.items()}
    # one point per batch (2) or per version (2) for every series of the panel
    assert marks["Drift share per batch"] == 3 * 2, marks
    assert marks["Per-detector drift score per batch"] == 5 * 2, marks
    assert marks["NDCG@4 per model version"] == 2 * 2 and marks["Accuracy per model version"] == 2 * 2, marks
    assert marks["Candidate vs production NDCG@4 per round"] == 3 * 2, marks
    assert marks["Production version after each round"] == 2, marks
    assert bars["Mined / accepted / escalated per round"] == 4 * 2, bars
    assert bars["Production marker per model version"] == 2, bars
    for legend in ("mined pairs", "accepted labels", "escalated to people", "static test", "evolving test",
                   "locale_mix: JS&gt;=0.1", "embedding: p&lt;0.05", "production = v1"):
        assert legend in dom, legend
    counter = seg["Production model version"]
    assert re.search(r">1<", counter) and "production = v1" in counter
    # axis ticks carry the measured values: NDCG@4 between 0.6 and 0.74
    assert re.search(r">0\.7[0-4]?<", seg["NDCG@4 per model version"])


def test_a_new_round_reaches_the_running_ui(ui):
    """The end of a round syncs the dashboard; the running UI picks the new snapshots up."""
    ws, port, proc, log = ui
    project = get(f"http://127.0.0.1:{port}/api/projects")[0]["id"]
    before = len(get(f"http://127.0.0.1:{port}/api/projects/{project}/snapshots"))
    r3 = ws.round_dir(3)
    shutil.copytree(ws.round_dir(2), r3)
    man = RoundManifest.load(r3)
    man.round, man.finished = 3, time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    man.save()
    state = json.loads(ws.state_path.read_text())
    ws.state_path.write_text(json.dumps({**state, "rounds_done": 3, "next_batch": 4}))
    assert sync(ws)["added"] == 2  # round 3 + the state (rounds_done changed)
    deadline = time.time() + 30  # the UI's file watcher applies the deletion and the two additions
    while True:
        after = get(f"http://127.0.0.1:{port}/api/projects/{project}/snapshots")
        kinds = sorted((s["metadata"].get("kind", "drift"), s["metadata"].get("round")) for s in after)
        if ("round", "3") in kinds and len(after) == before + 1 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert ("round", "3") in kinds and len(after) == before + 1, kinds  # + round 3; the state was replaced
