"""`serm pipeline submit` through the real kfp.Client, against a protocol peer: an HTTP server on
127.0.0.1 that speaks the KFP v2beta1 API routes the client uses (healthz, experiments, runs;
404 for anything else) and records each request. No cluster can run here; the peer shows what
a backend would receive: the compiled cluster pipeline and the run's arguments. An unreachable
host and a workspace without a reachable remote fail with messages that say what to do."""

import json
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serm.cli import main

from tests.reliability_workspaces import git


class KfpPeer(BaseHTTPRequestHandler):
    requests: list = []
    experiments: dict = {}

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        path, _, query = self.path.partition("?")
        self.requests.append({"method": self.command, "path": path, "query": query, "body": body})
        if (self.command, path) == ("GET", "/apis/v2beta1/healthz"):
            return self._reply(200, {"multi_user": False})
        if (self.command, path) == ("GET", "/apis/v2beta1/experiments"):
            return self._reply(200, {"experiments": list(self.experiments.values()), "total_size": len(self.experiments)})
        if (self.command, path) == ("POST", "/apis/v2beta1/experiments"):
            exp = {"experiment_id": f"exp-{len(self.experiments) + 1}", "display_name": body["display_name"]}
            self.experiments[exp["experiment_id"]] = exp
            return self._reply(200, exp)
        if (self.command, path) == ("POST", "/apis/v2beta1/runs"):
            if body.get("experiment_id") not in self.experiments or "pipeline_spec" not in body:
                return self._reply(400, {"error": "a run needs a known experiment_id and a pipeline_spec"})
            return self._reply(200, {"run_id": "run-0001", "display_name": body["display_name"],
                                     "experiment_id": body["experiment_id"], "state": "PENDING"})
        return self._reply(404, {"error": f"no route {self.command} {path}"})

    do_GET = do_POST = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def peer():
    KfpPeer.requests, KfpPeer.experiments = [], {}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), KfpPeer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", KfpPeer
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def workspace(tmp_path):
    """A git repository shaped like a workspace (git + .dvc/config), with an `origin`."""
    ws = tmp_path / "ws"
    (ws / ".dvc").mkdir(parents=True)
    (ws / ".dvc" / "config").write_text("[core]\n    remote = local\n['remote \"local\"']\n    url = ../.dvc-remote\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(ws)], check=True)
    (ws / "README").write_text("x\n")
    git(ws, "add", "README")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    git(ws, "remote", "add", "origin", "https://git.example.invalid/serm-workspace.git")
    return ws


def test_submit_sends_the_cluster_pipeline_and_its_arguments(peer, workspace, capsys):
    host, server = peer
    rc = main(["pipeline", "submit", "--host", host, "--workspace", str(workspace), "--shards", "2",
               "--dvc-remote", "s3://bucket/serm", "--policy-path", "policies/tiny.yaml", "--run-name", "round-7"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "run run-0001" in out and "2 mining shards" in out
    routes = [(r["method"], r["path"]) for r in server.requests]
    assert routes == [("GET", "/apis/v2beta1/healthz"), ("GET", "/apis/v2beta1/experiments"),
                      ("POST", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/runs")], routes
    assert "serm" in server.requests[1]["query"]
    run = server.requests[-1]["body"]
    assert run["display_name"] == "round-7" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "serm-evolution-cluster"
    train = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert train["image"] == "serm:0.1.0" and train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    loop = next(t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()
                if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1]"
    assert run["runtime_config"]["parameters"] == {
        "repo": "https://git.example.invalid/serm-workspace.git", "rev": git(workspace, "rev-parse", "HEAD"),
        "branch": "main", "policy_path": "policies/tiny.yaml", "dvc_remote": "s3://bucket/serm", "force": False}


def test_unreachable_host_is_a_clear_error(workspace, capsys):
    with socket.socket() as s:       # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["pipeline", "submit", "--host", f"http://127.0.0.1:{port}", "--workspace", str(workspace),
               "--dvc-remote", "s3://bucket/serm"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: could not submit serm-evolution-cluster to the Kubeflow Pipelines API "
                                      f"at http://127.0.0.1:{port}"), err
    assert "check --host" in err and "Traceback" not in err


def test_a_local_dvc_remote_or_no_origin_is_refused_before_any_request(peer, workspace, capsys):
    host, server = peer
    assert main(["pipeline", "submit", "--host", host, "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert f"DVC remote {workspace / '.dvc-remote'} is a local folder" in err and "--dvc-remote s3://" in err
    git(workspace, "checkout", "-q", "--detach")
    assert main(["pipeline", "submit", "--host", host, "--workspace", str(workspace), "--dvc-remote", "s3://b/s"]) == 2
    assert "detached HEAD: pass --branch" in capsys.readouterr().err
    git(workspace, "remote", "remove", "origin")
    assert main(["pipeline", "submit", "--host", host, "--workspace", str(workspace), "--dvc-remote", "s3://b/s"]) == 2
    assert "no git remote `origin`" in capsys.readouterr().err
    assert server.requests == [], "nothing reached the backend"


def test_urls_with_credentials_are_refused_before_they_reach_the_run_parameters():
    from serm.cli import _has_credentials

    assert _has_credentials("https://ana:ghp_SECRET@git.example.com/team/ws.git")
    assert _has_credentials("https://ghp_SECRET@git.example.com/team/ws.git")   # a token as the user name
    assert _has_credentials("s3://AKIA:secret@bucket/serm")
    for fine in ("https://git.example.com/team/ws.git", "ssh://git@git.example.com/team/ws.git",
                 "git@git.example.com:team/ws.git", "s3://bucket/serm", "/srv/git/ws.git"):
        assert not _has_credentials(fine), fine
