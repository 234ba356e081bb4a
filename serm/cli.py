"""The `serm` command. Heavy libraries are imported inside each command, so `serm --help`
answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serm.errors import SermError


def _policy_path(args) -> Path:
    if args.policy:
        return Path(args.policy)
    return Path(args.workspace) / "policies" / "default.yaml"


def cmd_policy_validate(args) -> int:
    from serm.policy import load_policy

    p = load_policy(args.file)
    print(f"OK: policy {p.name!r} ({p.hash()})")
    return 0


def cmd_init(args) -> int:
    from serm.evolve import init_workspace
    from serm.policy import load_policy
    from serm.workspace import Workspace

    policy_path = _policy_path(args)
    ws = Workspace.at(args.workspace)
    if not (ws.root / "policies").exists() and not args.policy:
        policy_path = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
    policy = load_policy(policy_path)
    with ws.lock(wait=args.wait):
        init_workspace(ws, policy, policy_path)
    print(f"workspace {ws.root} ready; production v{ws.state()['production']}")
    return 0


def cmd_evolve(args) -> int:
    from serm.evolve import evolve

    evolve(args.workspace, _policy_path(args), force=args.force, wait=args.wait)
    return 0


def cmd_status(args) -> int:
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    st, reg = ws.state(), ws.versions()
    print(f"workspace   {ws.root}")
    print(f"production  v{st.get('production')} (round {st.get('production_round')})")
    print(f"rounds done {st.get('rounds_done')}; next stream batch {st.get('next_batch')}")
    staging = sorted((ws.dot / "rounds").glob("r*")) if (ws.dot / "rounds").exists() else []
    for s in staging:
        man = json.loads((s / "manifest.json").read_text()) if (s / "manifest.json").exists() else {}
        done = [k for k, v in man.get("stages", {}).items() if v.get("status") == "done"]
        print(f"in progress {s.name}: stages done {done or 'none'} (`serm evolve` resumes it)")
    print(f"versions    {', '.join('v%d' % v['version'] for v in reg['versions']) or 'none'}")
    return 0


def cmd_versions(args) -> int:
    from serm.workspace import Workspace

    reg = Workspace.at(args.workspace).versions()
    if args.json:
        print(json.dumps(reg, indent=2))
        return 0
    print(f"{'version':<9}{'tag':<18}{'round':>5}  {'static ndcg@4':>13} {'evolving ndcg@4':>16}  {'accuracy':>8}  created")
    for v in reg["versions"]:
        m = v["metrics"]
        mark = " *" if v["version"] == reg["production"] else ""
        print(f"v{v['version']:<8}{v['tag']:<18}{v['round']:>5}  {m['static']['ndcg@4']:>13} "
              f"{m['evolving']['ndcg@4']!s:>10} ({m['evolving']['locale']})  {m['evolving']['accuracy']:>8}  "
              f"{v.get('created', '')}{mark}")
    print("* = production")
    return 0


def cmd_rollback(args) -> int:
    from serm import stages, versioning
    from serm.policy import load_policy
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    policy = load_policy(_policy_path(args))
    version = int(str(args.version).lstrip("v"))
    with ws.lock(wait=args.wait):
        stages.recover(ws)
        sha = versioning.rollback(ws, version, policy.versioning.tag)
    print(f"v{version} is production again (commit {sha[:10]}); data/ and data/model restored from its tag")
    return 0


def cmd_pipeline_compile(args) -> int:
    from pipelines.evolution import compile_pipeline

    out = compile_pipeline(args.out)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serm", description="Self-evolving search relevance models.")
    sub = p.add_subparsers(dest="command", required=True)

    def ws_args(sp, policy=True):
        sp.add_argument("--workspace", "-w", default=".", help="workspace folder (default: .)")
        if policy:
            sp.add_argument("--policy", "-p", help="policy YAML (default: WORKSPACE/policies/default.yaml)")
        sp.add_argument("--wait", action="store_true", help="wait for the workspace lock instead of refusing")

    sp = sub.add_parser("init", help="make a workspace (git + DVC + Feast) and train the seed model v0")
    ws_args(sp)
    sp.set_defaults(fn=cmd_init)
    sp = sub.add_parser("evolve", help="run one evolution round on the next stream batch")
    ws_args(sp)
    sp.add_argument("--force", action="store_true", help="run the pipeline even if the drift trigger does not fire")
    sp.set_defaults(fn=cmd_evolve)
    sp = sub.add_parser("status", help="production version, rounds done, rounds in progress")
    ws_args(sp, policy=False)
    sp.set_defaults(fn=cmd_status)
    sp = sub.add_parser("versions", help="list model versions with their metrics")
    ws_args(sp, policy=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_versions)
    sp = sub.add_parser("rollback", help="make an earlier version production again (forward-only commit)")
    ws_args(sp)
    sp.add_argument("version", help="version number, e.g. 1 or v1")
    sp.set_defaults(fn=cmd_rollback)

    pol = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_cmd", required=True)
    sp = pol.add_parser("validate", help="validate a policy file: prints OK or every error")
    sp.add_argument("file")
    sp.set_defaults(fn=cmd_policy_validate)

    pipe = sub.add_parser("pipeline", help="Kubeflow pipeline tools").add_subparsers(dest="pipeline_cmd", required=True)
    sp = pipe.add_parser("compile", help="write the pipeline's IR YAML")
    sp.add_argument("--out", default="pipelines/evolution.yaml")
    sp.set_defaults(fn=cmd_pipeline_compile)
    sp = pipe.add_parser("run", help="same as `serm evolve`: one round through kfp.local")
    ws_args(sp)
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(fn=cmd_evolve)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    # Library deprecation chatter (evidently, dvc, feast) is not the user's business.
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        return args.fn(args)
    except SermError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; `serm evolve` resumes the round", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
