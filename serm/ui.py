"""`serm ui`: the Evidently UI on a workspace's Evidently project (WORKSPACE/.serm/evidently).

The dashboard is first brought up to date with the committed rounds and versions
(`monitoring.dashboard.sync`), then this process becomes `evidently ui` (exec: same PID,
Ctrl-C stops it). It binds to 127.0.0.1 unless told otherwise; the Evidently UI has no
authentication, so another host exposes it to whoever can reach that address.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from serm.errors import ServiceError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Not 8000: that is where vLLM, llama.cpp's server and most OpenAI-compatible servers the LLM
# judges talk to listen by default.
DEFAULT_PORT = 8765


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or a host that cannot be bound) before starting anything."""
    if not 1 <= port <= 65535:
        raise ServiceError(f"--port {port}: not a TCP port; use 1-65535 (default {DEFAULT_PORT})")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                               f"pass another --port (e.g. --port {port + 1}) or stop what holds it") from None


def command(evidently_workspace: Path, host: str, port: int) -> list[str]:
    """The `evidently ui` command line (the venv's own Python runs it)."""
    return [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(evidently_workspace),
            "--host", host, "--port", str(port)]


def url(host: str, port: int, project_id: str | None = None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}" + (f"/projects/{project_id}" if project_id else "")


def serve(ws, host: str = "127.0.0.1", port: int = DEFAULT_PORT, log=print) -> None:
    """Sync the dashboard, print the URL, then exec `evidently ui` (does not return)."""
    from monitoring.dashboard import evidently_path, sync
    from serm.errors import WorkspaceError

    if not ws.state_path.exists():
        raise WorkspaceError(f"{ws.root} is not an initialised SERM workspace (no data/state.json); "
                             "run `serm init` or `serm evolve` there first, or pass --workspace")
    check_port(host, port)
    info = sync(ws, log)
    if host not in LOCAL_HOSTS:
        log(f"warning: --host {host} exposes the Evidently UI (no authentication) beyond this machine")
    log(f"Evidently UI for {ws.root}: {url(host, port, info['project_id'])}  (Ctrl-C stops it)")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = command(evidently_path(ws), host, port)
    os.execv(argv[0], argv)
