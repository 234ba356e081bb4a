"""Feast with Redis as the online store, by configuration only: a real `redis-server` on
127.0.0.1 (a free port, no persistence), the workspace's feature repo selected with
SERM_FEATURE_STORE_YAML=feature_store.redis.yaml and SERM_REDIS=127.0.0.1:PORT. Features are
materialized into Redis and read back online; a workspace that ran on SQLite switches to Redis
and finds its history there. The server is stopped by its PID.

`redis-server` comes from the Debian package (scripts/setup.sh installs it for the test run).
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from serm import featurestore as fs
from serm.errors import DataError

from tests.conftest import ROOT

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `bash scripts/setup.sh test` (it installs the Debian "
                    "package redis-server) or `apt-get install redis-server`")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    log = workdir / "redis.log"   # a file, not a pipe nobody reads (a full pipe would stall the server)
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--protected-mode", "yes", "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on 127.0.0.1:{port}: "
                            f"{log.read_text()[-2000:] if log.exists() else '(no log)'}")
            time.sleep(0.1)
    yield {"port": port, "pid": proc.pid, "client": client}
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


@pytest.fixture
def redis_config(redis_server, monkeypatch):
    redis_server["client"].flushall()
    monkeypatch.setenv(fs.CONFIG_ENV, "feature_store.redis.yaml")
    monkeypatch.setenv("SERM_REDIS", f"127.0.0.1:{redis_server['port']}")
    return redis_server


def _workspace(tmp_path):
    shutil.copytree(ROOT / "features", tmp_path / "features", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _documents():
    return pd.DataFrame({"doc_id": ["d1", "d2", "d3"], "title": ["Nile", "Alps", "Rhine"],
                         "text": ["the nile is long", "the alps are high", "the rhine flows north"], "locale": "en"})


def _events(ts):
    rows = [("e1", "q1", "how long is the nile", "d1", 1, True, 30.0), ("e2", "q1", "how long is the nile", "d2", 2, False, 0.0),
            ("e3", "q1", "how long is the nile", "d1", 2, True, 10.0), ("e4", "q2", "high alps", "d2", 1, False, 0.0)]
    return pd.DataFrame([(e, ts, q, text, "en", d, p, c, w) for e, q, text, d, p, c, w in rows],
                        columns=list(fs.EVENT_COLUMNS))


def test_materializes_into_redis_and_reads_online(tmp_path, redis_config):
    ws = _workspace(tmp_path)
    assert fs.ingest_documents(ws, _documents(), T0) == 3
    counts = fs.ingest_events(ws, _events(T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    assert counts == {"queries": 2, "pairs": 3, "documents_known": 3}
    assert not (ws / ".serm" / "feast" / "online.db").exists(), "nothing went to the SQLite store"
    client = redis_config["client"]
    assert client.dbsize() >= 2 + 3 + 3, "query, pair and document rows are keys in Redis"

    pairs = fs.online_features(ws, "pair_features", pd.DataFrame({"query_id": ["q1", "q1", "q2"],
                                                                  "doc_id": ["d1", "d2", "d2"]}))
    assert pairs["impressions"].tolist() == [2, 1, 1] and pairs["clicks"].tolist() == [2, 0, 0]
    assert pairs["mean_position"].tolist() == [1.5, 2.0, 1.0] and pairs["mean_dwell_s"].tolist() == [20.0, 0.0, 0.0]
    docs = fs.online_features(ws, "document_features", pd.DataFrame({"doc_id": ["d3", "d1"]}))
    assert docs["title"].tolist() == ["Rhine", "Nile"] and docs["text_chars"].tolist() == [21, 16]

    client.flushall()     # the online rows really come from Redis: gone there, gone online
    gone = fs.online_features(ws, "document_features", pd.DataFrame({"doc_id": ["d1"]}))
    assert gone["title"].isna().all()


def test_a_sqlite_workspace_switches_to_redis_by_configuration(tmp_path, redis_config, monkeypatch):
    ws = _workspace(tmp_path)
    monkeypatch.delenv(fs.CONFIG_ENV)
    fs.ingest_documents(ws, _documents(), T0)
    fs.ingest_events(ws, _events(T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    assert (ws / ".serm" / "feast" / "online.db").exists()
    assert redis_config["client"].dbsize() == 0

    monkeypatch.setenv(fs.CONFIG_ENV, "feature_store.redis.yaml")
    assert fs.apply(ws) is True, "a changed store configuration re-applies"
    assert redis_config["client"].dbsize() > 0, "the history was materialized into Redis"
    q = fs.online_features(ws, "query_features", pd.DataFrame({"query_id": ["q2", "q1"]}))
    assert q["query"].tolist() == ["high alps", "how long is the nile"] and q["impressions"].tolist() == [1, 3]
    assert fs.apply(ws) is False


def test_unset_connection_variable_is_named(tmp_path, monkeypatch):
    ws = _workspace(tmp_path)
    monkeypatch.setenv(fs.CONFIG_ENV, "feature_store.redis.yaml")
    monkeypatch.delenv("SERM_REDIS", raising=False)
    with pytest.raises(DataError, match="SERM_REDIS, which are not set"):
        fs.open_store(ws)
    monkeypatch.setenv(fs.CONFIG_ENV, "nope.yaml")
    with pytest.raises(DataError, match="SERM_FEATURE_STORE_YAML"):
        fs.open_store(ws)
