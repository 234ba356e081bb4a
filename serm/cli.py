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


def _policy_or_default(args):
    """--policy, else the workspace's default policy, else the project's."""
    from serm.policy import load_policy

    if args.policy:
        return load_policy(args.policy)
    path = _policy_path(args)
    if not path.exists():
        path = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
    return load_policy(path)


def _override(spec, **flags):
    """`spec` (a policy section) with command-line values, validated like the policy itself.
    `flags` maps a field to (flag, value); a value of None keeps the policy's."""
    from pydantic import ValidationError

    from serm.errors import DataError

    changes = {field: value for field, (_, value) in flags.items() if value is not None}
    try:
        return type(spec).model_validate({**spec.model_dump(), **changes})
    except ValidationError as exc:
        msgs = [f"{flags[e['loc'][0]][0]} {e.get('input')!r}: {e['msg']}" for e in exc.errors()]
        raise DataError("; ".join(msgs)) from None


def cmd_evaluate(args) -> int:
    import time

    from serm.data.judgments import load_judgments
    from serm.errors import DataError
    from serm.evaluation import evaluate, metrics_table
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.refs import model_source
    from serm.model.training import set_seed

    policy = _policy_or_default(args)
    judgments = load_judgments(args.data)
    if judgments.empty:
        raise DataError(f"{args.data}: no judgments to evaluate")
    ks = tuple(policy.evaluation.k)
    training = _override(policy.training, device=("--device", args.device))
    with model_source(args.model, args.workspace) as src:
        set_seed(policy.seed)  # a bare base encoder gets the same untrained head every run
        model = RelevanceModel.load(src.path, src.spec(policy.model), device=training.device)
        t0 = time.perf_counter()
        from serm import progress

        with progress.stage("evaluate"):
            proba = model.score_frame(judgments)
            result = evaluate(model, judgments, ks, proba=proba)
        seconds = round(time.perf_counter() - t0, 1)
    print(f"model {src.describe()} on {args.data}: {len(judgments)} pairs scored in {seconds}s on {model.device}")
    print(metrics_table(result, ks))
    versus = _baselines_versus(judgments, model.expected_grade(proba), ks[0]) if args.baselines else None
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {"model": src.ref, "version": src.version, "data": str(args.data), **result["overall"],
                  "per_locale": result["per_locale"], "seconds": seconds, "device": model.device,
                  **({"baselines": versus} if versus is not None else {})}
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _baselines_versus(judgments, scores, k: int) -> dict:
    """BM25 and the bi-encoder on the same judgments (IDF over the file's own documents), each
    against the model by per-query NDCG@k: paired randomization test and bootstrap CI."""
    from serm.baselines import SCORERS
    from serm.stats import compare_rankings

    model = judgments.assign(score=scores)
    out = {}
    print(f"the model against reference rankers on the same candidates (ndcg@{k}, paired over queries):")
    for name, scorer in SCORERS.items():
        c = compare_rankings(model, judgments.assign(score=scorer(judgments)), k)
        out[name] = {f"ndcg@{k}": round(c.mean_b, 4), "model_minus_baseline": c.to_dict()}
        print(f"  {name:<11} ndcg@{k} {c.mean_b:.4f}; model - {name}: {c.describe()}")
    return out


def cmd_score(args) -> int:
    import time

    from serm.serving import load_model, read_pairs, write_table
    from serm.workspace import Workspace

    documents = args.documents
    catalogue = Workspace.at(args.workspace).layout.documents
    if documents is None and catalogue.exists():
        documents = catalogue   # the workspace's catalogue
    pairs = read_pairs(args.data, documents)
    model = load_model(args.workspace, args.model, device=args.device or "auto")
    t0 = time.perf_counter()
    from serm import progress

    with progress.stage("score"):
        scored = model.score_frame(pairs, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    write_table(scored, args.out)
    summary = {"model": args.model, "version": model.version, "data": str(args.data), "out": str(args.out),
               "pairs": len(scored), "seconds": round(seconds, 2), "pairs_per_s": round(len(scored) / max(seconds, 1e-9), 1),
               "device": model.model.device, "grades": {str(g): int((scored["grade"] == g).sum()) for g in range(4)},
               "columns_added": ["p0", "p1", "p2", "p3", "grade", "score"]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        shown = f"v{model.version}" if model.version is not None else args.model
        counts = ", ".join(f"{g}: {n}" for g, n in summary["grades"].items())
        print(f"scored {len(scored)} pairs with {shown} in {seconds:.1f}s on {model.model.device} "
              f"({summary['pairs_per_s']} pairs/s); grades {counts}")
        print(f"wrote {args.out} (p0..p3, grade, score = expected grade)")
    return 0


def cmd_export(args) -> int:
    from serm.export import default_check_pairs, export_model
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.refs import model_source
    from serm.policy import ModelSpec
    from serm.workspace import Workspace

    check = None
    if args.format == "onnx":
        check = default_check_pairs(Workspace.at(args.workspace), args.check_data, args.check_pairs)
    with model_source(args.model, args.workspace) as src:
        model = RelevanceModel.load(src.path, src.spec(ModelSpec()), device="cpu")
        report = export_model(model, Path(args.out), args.format, src.ref, src.version, Path(src.path),
                              check_pairs=check, overwrite=args.overwrite, log=print)
    shown = f"v{src.version}" if src.version is not None else src.ref
    print(f"exported {shown} as {args.format} to {args.out}: {', '.join(report['files'])}")
    return 0


def cmd_train(args) -> int:
    from serm.data.judgments import load_judgments
    from serm.model.fit import fit
    from serm.model.refs import model_source

    policy = _policy_or_default(args)
    training = _override(policy.training, epochs=("--epochs", args.epochs), lr=("--lr", args.lr),
                         batch_size=("--batch-size", args.batch_size),
                         validation_share=("--val-share", args.val_share), device=("--device", args.device))
    judgments = load_judgments(args.data)
    out = Path(args.out) if args.out else Path("models") / Path(args.data).name.split(".")[0]
    seed = policy.seed if args.seed is None else args.seed
    with model_source(args.base or policy.model.base_model, args.workspace) as src:
        spec = _override(src.spec(policy.model), max_length=("--max-length", args.max_length))
        metrics = fit(judgments, src, spec, training, out, seed=seed, max_pairs=args.max_pairs, policy=policy,
                      data_path=args.data, ks=tuple(policy.evaluation.k), overwrite=args.overwrite)
    val = metrics["validation"]
    if val:
        shown = ", ".join(f"{k} {val[k]}" for k in val if k.startswith("ndcg@") or k == "accuracy")
        print(f"saved {out}: on {val['queries']} held-out validation queries {shown}")
    else:
        print(f"saved {out}: no validation queries (--val-share 0 or a single query), last epoch kept")
    return 0


def cmd_policy_validate(args) -> int:
    from serm.policy import load_policy

    p = load_policy(args.file)
    print(f"OK: policy {p.name!r} ({p.hash()})")
    return 0


def cmd_policy_schema(args) -> int:
    from serm.policy_schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} (JSON Schema of a SERM policy; point your editor's YAML schema setting at it)")
    else:
        sys.stdout.write(text)
    return 0


def cmd_policy_show(args) -> int:
    import yaml

    from serm.policy import load_policy

    p = load_policy(args.file)
    data = p.model_dump(mode="json", exclude_unset=not args.resolved)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# policy {p.name!r} ({p.hash()}){', every default filled in' if args.resolved else ''}")
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
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

    from pipelines.evolution import run_local  # the orchestrator is the CLI's choice, not the core's

    evolve(args.workspace, _policy_path(args), force=args.force, wait=args.wait,
           run_pipeline=None if args.in_process else run_local)
    return 0


def cmd_ingest(args) -> int:
    from serm import ingest
    from serm.errors import DataError
    from serm.evolve import init_workspace
    from serm.policy import load_policy
    from serm.workspace import Workspace

    if not args.files and not args.documents:
        raise DataError("nothing to ingest: name event files (and/or --documents FILE)")
    policy_path = _policy_path(args)
    policy = load_policy(policy_path)
    ws = Workspace.at(args.workspace)
    with ws.lock(wait=args.wait):
        init_workspace(ws, policy, policy_path)
        result = ingest.ingest(ws, policy, [Path(f) for f in args.files], Path(args.documents) if args.documents else None)
    pending = ingest.pending_batches(ws)
    print(f"{len(result['files'])} file(s) ingested, {result['skipped']} already ingested, "
          f"{len(result['refused'])} refused; {len(pending)} batch(es) waiting for `serm evolve`"
          + (f" ({', '.join(map(str, pending))})" if pending else ""))
    return 2 if result["refused"] else 0


def cmd_watch(args) -> int:
    from serm.policy_schema import parse_duration
    from serm.watch import watch

    from pipelines.evolution import run_local

    interval = parse_duration(args.interval)
    return watch(args.workspace, _policy_path(args), inbox=args.inbox, interval=interval,
                 run_pipeline=None if args.in_process else run_local, force=args.force, once=args.once)


def cmd_drift(args) -> int:
    from monitoring.preview import format_preview, preview
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    policy = _policy_or_default(args)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print   # stdout: the JSON alone
    result, record, info = preview(ws, policy, log)
    if args.json:
        print(json.dumps({"batch": info, "report": str(result.html_path), **record}, indent=2, default=str))
    else:
        print(format_preview(result, record, info, policy))
    return 0


def cmd_ui(args) -> int:
    from serm.ui import serve
    from serm.workspace import Workspace

    serve(Workspace.at(args.workspace), host=args.host, port=args.port)
    return 0


def workspace_status(ws) -> dict:
    """What `serm status` reports, as data: production, rounds, the source's waiting batches,
    rounds in progress and the versions."""
    from serm import versioning
    from serm.schema import RoundManifest, WorkspaceLayout

    reg, st, interrupted = versioning.production_view(ws)
    lay = WorkspaceLayout(ws.root)
    out = {"workspace": str(ws.root), "production": reg.get("production", st.get("production")),
           "production_round": st.get("production_round"), "rounds_done": st.get("rounds_done"),
           "next_batch": st.get("next_batch"), "source": st.get("source", "simulated"),
           "in_progress": [], "versions": [v["version"] for v in reg["versions"]], "interrupted": interrupted}
    if out["source"] == "files":
        from serm import ingest

        out["files_ingested"] = len(ingest.read_index(lay)["files"])
        out["batches_waiting"] = ingest.pending_batches(ws)
    for r in lay.staged_rounds():
        man = RoundManifest.maybe(lay.round(r).manifest)
        out["in_progress"].append({"round": r, "stages_done": man.done_stages() if man else []})
    return out


def cmd_status(args) -> int:
    from serm.schema import round_name
    from serm.workspace import Workspace

    s = workspace_status(Workspace.at(args.workspace))
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"workspace   {s['workspace']}")
    print(f"production  v{s['production']} (round {s['production_round']}, committed)")
    if s["interrupted"]:
        print(f"interrupted {s['interrupted']['message']}")
    print(f"rounds done {s['rounds_done']}; next stream batch {s['next_batch']}")
    if s["source"] == "files":
        waiting = s["batches_waiting"]
        print(f"source      files: {s['files_ingested']} file(s) ingested, {len(waiting)} batch(es) waiting"
              + (f" ({', '.join(map(str, waiting))}; `serm evolve` runs them)" if waiting else ""))
    for r in s["in_progress"]:
        print(f"in progress {round_name(r['round'])}: stages done {r['stages_done'] or 'none'} "
              "(`serm evolve` resumes it)")
    print(f"versions    {', '.join('v%d' % v for v in s['versions']) or 'none'}")
    return 0


def _shown(value):
    """A metric for a table: "-" where the test set had no queries."""
    return "-" if value is None else value


def cmd_versions(args) -> int:
    from serm.schema import EVOLVING, STATIC, Metrics
    from serm.workspace import Workspace

    from serm import versioning

    ws = Workspace.at(args.workspace)
    reg, _, interrupted = versioning.production_view(ws)
    first_tag = reg["versions"][0].get("tag") if reg["versions"] and (ws.root / ".git").exists() else None
    gto = {"production": versioning.stage_version_tag(ws, first_tag) if first_tag else None,
           "assignment": versioning.latest_assignment(ws, first_tag) if first_tag else None}
    if args.json:
        print(json.dumps({**reg, "gto": gto, "interrupted": interrupted}, indent=2))
        return 0
    print(f"{'version':<9}{'tag':<20}{'round':>5}  {'static ndcg@4':>13} {'evolving ndcg@4':>16}  {'accuracy':>8}  created")
    for v in reg["versions"]:
        m = Metrics.from_dict(v["metrics"])
        mark = " *" if v["version"] == reg["production"] else ""
        print(f"v{v['version']:<8}{v['tag']:<20}{v['round']:>5}  {_shown(m.get(STATIC, 'ndcg@4'))!s:>13} "
              f"{_shown(m.get(EVOLVING, 'ndcg@4'))!s:>10} ({m.locale(EVOLVING)})  {_shown(m.get(EVOLVING, 'accuracy'))!s:>8}  "
              f"{v.get('created', '')}{mark}" + ("  (files removed by gc)" if v.get("removed") else ""))
    print("* = production" + (f"; GTO: {gto['assignment']} -> {gto['production']} (`gto show` reads the same tags)"
                              if gto["assignment"] else ""))
    if interrupted:
        print(f"interrupted: {interrupted['message']}")
    return 0


def _version_number(text: str) -> int:
    from serm.errors import DataError

    try:
        return int(str(text).strip().lstrip("v"))
    except ValueError:
        raise DataError(f"{text!r} is not a version: use a number such as 1 or v1 (`serm versions` lists them)") from None


def _sync_dashboard(ws) -> None:
    """The Evidently dashboard follows production (derived state: never fails the command)."""
    from monitoring.dashboard import update_dashboard

    update_dashboard(ws, log=lambda line: None)


def cmd_gc(args) -> int:
    from serm import retention, round as rounds
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    ws.require()
    policy = _policy_or_default(args)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    with ws.lock(wait=args.wait):
        if not args.dry_run:
            rounds.recover(ws, log)
        p = retention.gc(ws, policy, dry_run=args.dry_run, log=log)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **p.as_dict()}, indent=2))
    else:
        print(retention.format_plan(p, args.dry_run))
    return 0


def cmd_rollback(args) -> int:
    from serm import round as rounds, versioning
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    ws.require()
    version = _version_number(args.version)
    with ws.lock(wait=args.wait):
        rounds.recover(ws)
        sha = versioning.rollback(ws, version, data=args.data, reason=args.reason)
        _sync_dashboard(ws)
    stage = versioning.latest_assignment(ws, ws.versions()["versions"][0]["tag"])
    if args.data:
        print(f"v{version} is production again (commit {sha[:10]}, {stage}); data/ and data/model restored from its "
              "tag: what came after it is out of the working data (still in git and DVC history)")
    else:
        print(f"v{version} is production again (commit {sha[:10]}, {stage}); data/model restored from its tag, "
              "every label, review and escalation since kept: the next round trains from it with all of them")
    return 0


def cmd_promote(args) -> int:
    from serm import round as rounds, versioning
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    ws.require()
    version = _version_number(args.version)
    with ws.lock(wait=args.wait):
        rounds.recover(ws)
        sha = versioning.promote(ws, version, args.reason)
        _sync_dashboard(ws)
    stage = versioning.latest_assignment(ws, ws.versions()["versions"][0]["tag"])
    print(f"v{version} promoted to production by hand (commit {sha[:10]}, {stage}): {args.reason.strip()}")
    return 0


def cmd_escalations_list(args) -> int:
    from serm import schema
    from serm.annotation import escalations
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    queue, resolved = escalations.read_queue(ws.data), escalations.read_resolved(ws.data)
    waiting = escalations.pending(resolved)
    tests = int((queue.purpose == schema.TEST).sum())
    if args.json:
        shown = queue.head(args.show)[[c for c in ("query_id", "doc_id", "round", "purpose", "why", "agents", "query",
                                                   "doc_title", "locale") if c in queue.columns]]
        print(json.dumps({"open": int(len(queue) - tests), "test_requests_open": tests, "resolved": int(len(resolved)),
                          "resolved_not_trained": int(len(waiting)),
                          "open_by_round": {str(r): int(n) for r, n in queue.groupby("round").size().items()},
                          "items": json.loads(shown.to_json(orient="records", force_ascii=False))}, indent=2,
                         ensure_ascii=False))
        return 0
    asked = f", {tests} test request(s) open" if tests else ""
    print(f"{len(queue) - tests} escalation(s) open{asked}, {len(resolved)} resolved "
          f"({len(waiting)} not trained on yet)")
    if len(queue):
        by_round = queue.groupby("round").size().to_dict()
        print("open by round: " + ", ".join(f"r{r}: {n}" for r, n in sorted(by_round.items())))
        for r in queue.head(args.show).itertuples(index=False):
            print(f"  {r.query_id} / {r.doc_id} (round {r.round}, {r.purpose}): {r.why} [{r.agents}]")
    return 0


def cmd_escalations_export(args) -> int:
    from serm.annotation import escalations
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    queue = escalations.read_queue(ws.data)
    ext = {"csv": "csv", "labelstudio": "json", "argilla": "json"}[args.format]
    out = Path(args.out) if args.out else Path(f"escalations-{args.format}.{ext}")
    written = escalations.export(queue, args.format, out)
    print(f"{len(queue)} open escalation(s) written to {', '.join(map(str, written))}")
    if not len(queue):
        print("the queue is empty: nothing waits for review")
    return 0


def cmd_escalations_import(args) -> int:
    from serm import round as rounds, versioning
    from serm.annotation import escalations
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    ws.require()
    with ws.lock(wait=args.wait):
        rounds.recover(ws)
        resolutions, still_open = escalations.parse_resolutions(Path(args.file), escalations.read_queue(ws.data))
        result = escalations.apply_resolutions(ws.data, resolutions, Path(args.file).name)
        sha = versioning.commit_version(ws, f"serm: {result['resolved']} escalation(s) and {result['test_labels']} "
                                            f"test label(s) from reviewers ({Path(args.file).name})")
    print(f"imported {result['resolved'] + result['test_labels']} grade(s) from {args.file} ({still_open} left "
          f"blank): {result['resolved']} escalation(s), which the next round trains on, and {result['test_labels']} "
          f"test label(s), which join the evolving test set; {result['queue_left']} escalation(s) still open; commit {sha[:10]}")
    return 0


def cmd_bench(args) -> int:
    from serm.bench import bench

    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else None
    datasets = tuple(d.strip() for d in args.datasets.split(","))
    bench(datasets, quick=args.quick, rounds=args.rounds, seeds=args.seeds, strategies=strategies,
          homedepot_path=args.homedepot, out_dir=args.out, preset=args.preset)
    return 0


def cmd_pipeline_compile(args) -> int:
    if args.cluster:
        from pipelines.cluster import compile_pipeline

        out = compile_pipeline(args.out or "pipelines/evolution-cluster.yaml", args.shards)
    else:
        from pipelines.evolution import compile_pipeline

        out = compile_pipeline(args.out or "pipelines/evolution.yaml")
    print(f"wrote {out}")
    return 0


def cmd_pipeline_submit(args) -> int:
    """Start the cluster pipeline on a KFP backend for the workspace's pushed HEAD."""
    from pipelines.cluster import submit
    from serm import versioning
    from serm.errors import PipelineError
    from serm.workspace import Workspace

    ws = Workspace.at(args.workspace)
    ws.require()
    repo = args.repo or versioning.git(ws, "remote", "get-url", "origin", check=False)
    if not repo:
        raise PipelineError(f"{ws.root} has no git remote `origin` and no --repo was given: the cluster's steps "
                            "clone the workspace from a git server; push it there and pass --repo URL")
    dvc_remote = args.dvc_remote
    if not dvc_remote:
        conf = versioning.dvc_repo(ws).config
        dvc_remote = conf["remote"].get(conf["core"].get("remote", ""), {}).get("url", "")
    if not args.dvc_remote and "://" not in dvc_remote:
        raise PipelineError(f"the workspace's DVC remote {dvc_remote or '(none)'} is a local folder, which the "
                            "cluster's steps cannot read; pass --dvc-remote s3://bucket/serm (or gs://, azure://, "
                            "http(s)://) after `dvc push` to it")
    for what, url in (("git remote", repo), ("DVC remote", dvc_remote)):
        if _has_credentials(url):   # a run's parameters are stored and shown by the KFP backend
            raise PipelineError(f"the {what} URL carries credentials (user:password@); they would be stored in "
                                "the run's parameters and shown in the KFP UI. Use a URL without them and give "
                                "the steps access through a credential helper, a Kubernetes secret or the pod's "
                                "service account")
    rev = args.rev or versioning.git(ws, "rev-parse", "HEAD")
    branch = args.branch or versioning.git(ws, "rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":
        raise PipelineError(f"{ws.root} is on a detached HEAD: pass --branch NAME, the branch the round's commit "
                            "is pushed to")
    policy_path = args.policy_path or "policies/default.yaml"
    arguments = {"repo": repo, "rev": rev, "branch": branch, "policy_path": policy_path,
                 "dvc_remote": dvc_remote, "force": bool(args.force)}
    run_id = submit(args.host, arguments, shards=args.shards, experiment=args.experiment, run_name=args.run_name,
                    namespace=args.namespace)
    print(f"submitted serm-evolution-cluster to {args.host}: run {run_id} ({repo}@{rev[:10]}, branch {branch}, "
          f"{args.shards} mining shards)")
    return 0


def _has_credentials(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.password or (parts.username and parts.scheme in ("http", "https")))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("serm")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serm", description="Self-evolving search relevance models.")
    p.add_argument("--version", action="version", version=f"serm {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def ws_args(sp, policy=True, wait=True):
        sp.add_argument("--workspace", "-w", default=".", help="workspace folder (default: .)")
        if policy:
            sp.add_argument("--policy", "-p", help="policy YAML (default: WORKSPACE/policies/default.yaml)")
        if wait:
            sp.add_argument("--wait", action="store_true", help="wait for the workspace lock instead of refusing")

    sp = sub.add_parser("init", help="make a workspace (git + DVC + Feast) and train the seed model v0")
    ws_args(sp)
    sp.set_defaults(fn=cmd_init)
    sp = sub.add_parser("evolve", help="run an evolution round on the next stream batch (files source: one round "
                        "per ingested batch waiting)")
    ws_args(sp)
    sp.add_argument("--force", action="store_true", help="run the pipeline even if the drift trigger does not fire")
    sp.add_argument("--in-process", action="store_true", help="run the round's stages in this process instead of "
                    "through kfp.local (the same stages and artifacts, no pipeline run)")
    sp.set_defaults(fn=cmd_evolve)
    sp = sub.add_parser("ingest", help="validate log files (events) and documents into a files workspace: "
                        "bad rows quarantined, each file one batch (or cut by ts), a new data version")
    sp.add_argument("files", nargs="*", metavar="FILE", help="event files: .parquet, .csv or .jsonl with columns "
                    "event_id, ts, query_id, query, locale, doc_id, position, clicked, dwell_s "
                    "(+ optional session_id, served_score)")
    sp.add_argument("--documents", metavar="FILE", help="documents to add or update (doc_id, title, text, locale "
                    "+ any columns), ingested before the events")
    ws_args(sp)
    sp.set_defaults(fn=cmd_ingest)
    sp = sub.add_parser("watch", help="run by itself: new inbox files -> ingest -> drift -> trigger -> round, "
                        "until SIGTERM/Ctrl-C")
    ws_args(sp, wait=False)
    sp.add_argument("--inbox", help="folder to watch (default: the policy's data.inbox, else WORKSPACE/inbox)")
    sp.add_argument("--interval", default="60s", help="pause between looks at the inbox (90s, 5m, 1h; default 60s)")
    sp.add_argument("--once", action="store_true", help="one pass (ingest what is there, run its rounds), then exit")
    sp.add_argument("--force", action="store_true", help="run every round's pipeline even if drift does not trigger")
    sp.add_argument("--in-process", action="store_true", help="run the rounds' stages in this process instead of "
                    "through kfp.local")
    sp.set_defaults(fn=cmd_watch)
    sp = sub.add_parser("drift", help="drift of the next batch vs the reference and the trigger decision "
                        "(starts no round, writes nothing to data/)")
    ws_args(sp, wait=False)
    sp.add_argument("--json", action="store_true", help="print the verdicts and the trigger decision as JSON")
    sp.set_defaults(fn=cmd_drift)
    sp = sub.add_parser("ui", help="start the Evidently UI (dashboard of rounds, drift, versions) and print its URL")
    ws_args(sp, policy=False, wait=False)
    from serm.ui import DEFAULT_PORT

    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT}; not 8000, "
                    "where most OpenAI-compatible model servers listen)")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sp.set_defaults(fn=cmd_ui)
    sp = sub.add_parser("status", help="production version, rounds done, rounds in progress")
    ws_args(sp, policy=False)
    sp.add_argument("--json", action="store_true", help="print the status as JSON (for scripts and deploy jobs)")
    sp.set_defaults(fn=cmd_status)
    sp = sub.add_parser("versions", help="list model versions with their metrics")
    ws_args(sp, policy=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_versions)
    sp = sub.add_parser("rollback", help="make an earlier version's model production again, keeping every label "
                        "and review since (forward-only commit)")
    ws_args(sp)
    sp.add_argument("version", help="version number, e.g. 1 or v1")
    sp.add_argument("--data", action="store_true", help="also restore the version's whole data/ (labels, reviews "
                    "and stream position as they were then); default: the model only")
    sp.add_argument("--reason", help="why, recorded in versions.json, the commit and the GTO assignment")
    sp.set_defaults(fn=cmd_rollback)
    sp = sub.add_parser("gc", help="remove the files of versions versioning.retention lets go from the DVC cache "
                        "and remote (never production, never one the policy names)")
    ws_args(sp)
    sp.add_argument("--dry-run", "-n", action="store_true", help="list what would be kept and freed; remove nothing")
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")
    sp.set_defaults(fn=cmd_gc)
    sp = sub.add_parser("promote", help="make a version production by hand, with a recorded reason")
    ws_args(sp)
    sp.add_argument("version", help="version number, e.g. 2 or v2")
    sp.add_argument("--reason", "-r", required=True, help="why (recorded with the promotion)")
    sp.set_defaults(fn=cmd_promote)

    from serm.model.refs import HELP as MODEL_HELP

    sp = sub.add_parser("evaluate", help="score a judgments file with a model: NDCG@k, accuracy, per locale")
    sp.add_argument("--model", "-m", required=True, help=MODEL_HELP)
    sp.add_argument("--data", "-d", required=True, help="judgments file (.parquet, .csv, .jsonl) with columns "
                    "query_id, query, doc_id, doc_title, doc_text, grade (0-3), locale")
    sp.add_argument("--json", metavar="OUT", help="also write the metrics as JSON to OUT")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the policy's training.device")
    sp.add_argument("--baselines", action="store_true", help="also rank the same candidates with BM25 and the "
                    "off-the-shelf MiniLM bi-encoder, and test the model against each (paired over queries)")
    ws_args(sp, wait=False)
    sp.set_defaults(fn=cmd_evaluate)
    sp = sub.add_parser("score", help="score (query, document) pairs with a model: grade probabilities, grade, "
                        "expected-grade score")
    sp.add_argument("--model", "-m", default="production", help=f"{MODEL_HELP} (default: production)")
    sp.add_argument("--data", "-d", required=True, help="pairs (.parquet, .csv, .jsonl): query plus doc_text "
                    "(or text) and optional doc_title (or title); or doc_id, with the text from --documents")
    sp.add_argument("--out", "-o", required=True, help="file to write (.parquet, .csv, .jsonl): the input columns "
                    "plus p0..p3, grade, score")
    sp.add_argument("--documents", help="documents (doc_id, title, text) for pairs given by doc_id "
                    "(default: the workspace's catalogue)")
    sp.add_argument("--batch-size", type=int, help="pairs per forward pass (default: the model's)")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto (the GPU when present)")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    ws_args(sp, policy=False, wait=False)
    sp.set_defaults(fn=cmd_score)
    sp = sub.add_parser("export", help="write a model as a self-contained directory: hf (transformers / "
                        "sentence-transformers) or onnx (onnxruntime, no SERM needed)")
    sp.add_argument("--model", "-m", default="production", help=f"{MODEL_HELP} (default: production)")
    sp.add_argument("--format", "-f", choices=["hf", "onnx"], default="hf")
    sp.add_argument("--out", "-o", required=True, help="directory to write")
    sp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    sp.add_argument("--check-data", help="onnx: judgments or pairs to check the graph against torch on "
                    "(default: the workspace's static test set, else shipped XQuAD pairs)")
    sp.add_argument("--check-pairs", type=int, default=256, help="onnx: pairs checked (default 256)")
    ws_args(sp, policy=False, wait=False)
    sp.set_defaults(fn=cmd_export)
    sp = sub.add_parser("train", help="fine-tune a model on a judgments file (held-out queries for early stopping)")
    sp.add_argument("--data", "-d", required=True, help="judgments file (.parquet, .csv, .jsonl)")
    sp.add_argument("--base", "-b", help=f"model to start from: {MODEL_HELP} (default: the policy's model.base_model)")
    sp.add_argument("--out", "-o", help="model directory to write (default: models/<data file name>)")
    sp.add_argument("--overwrite", action="store_true", help="replace a model already saved at --out")
    sp.add_argument("--epochs", type=int, help="default: the policy's training.epochs")
    sp.add_argument("--lr", type=float, help="default: the policy's training.lr")
    sp.add_argument("--batch-size", type=int, help="default: the policy's training.batch_size")
    sp.add_argument("--max-length", type=int, help="tokens per (query, document) pair; default: model.max_length")
    sp.add_argument("--val-share", type=float,
                    help="share of queries held out for early stopping (default: training.validation_share)")
    sp.add_argument("--max-pairs", type=int, help="train on a seeded sample of whole queries up to N pairs")
    sp.add_argument("--seed", type=int, help="default: the policy's seed")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the policy's training.device")
    ws_args(sp, wait=False)
    sp.set_defaults(fn=cmd_train)

    pol = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_cmd", required=True)
    sp = pol.add_parser("validate", help="validate a policy file: prints OK or every error")
    sp.add_argument("file")
    sp.set_defaults(fn=cmd_policy_validate)
    sp = pol.add_parser("schema", help="the policy's JSON Schema (for editors: YAML language servers)")
    sp.add_argument("--out", "-o", help="file to write (default: stdout)")
    sp.set_defaults(fn=cmd_policy_schema)
    sp = pol.add_parser("show", help="a policy as SERM reads it (validated); --resolved fills in every default")
    sp.add_argument("file")
    sp.add_argument("--resolved", action="store_true", help="every field, defaults included")
    sp.add_argument("--json", action="store_true", help="JSON instead of YAML")
    sp.set_defaults(fn=cmd_policy_show)

    esc = sub.add_parser("escalations", help="the human review queue: list, export, import").add_subparsers(
        dest="escalations_cmd", required=True)
    sp = esc.add_parser("list", help="open and resolved escalations")
    sp.add_argument("--show", type=int, default=10, help="open escalations to print (default 10)")
    sp.add_argument("--json", action="store_true", help="counts and the first --show open items as JSON")
    ws_args(sp, policy=False, wait=False)
    sp.set_defaults(fn=cmd_escalations_list)
    sp = esc.add_parser("export", help="write the open escalations for reviewers")
    sp.add_argument("--format", choices=["csv", "labelstudio", "argilla"], default="csv")
    sp.add_argument("--out", "-o", help="file to write (default: escalations-FORMAT.csv|json)")
    ws_args(sp, policy=False, wait=False)
    sp.set_defaults(fn=cmd_escalations_export)
    sp = esc.add_parser("import", help="read reviewers' grades (CSV, Label Studio export, Argilla records)")
    sp.add_argument("file")
    ws_args(sp, policy=False)
    sp.set_defaults(fn=cmd_escalations_import)

    sp = sub.add_parser("bench", help="SERM vs self-training and ablations over rounds, on XQuAD and Home Depot")
    sp.add_argument("--quick", action="store_true", help="the quick preset: a smoke run, 1 seed, too small to tell "
                    "strategies apart")
    sp.add_argument("--preset", choices=["quick", "cpu", "full"], help="sizes: quick (smoke), cpu (300 test queries "
                    "per XQuAD language, 500 per Home Depot period, 3 seeds, 2 CPU cores), full (a GPU: 300 and 800, budget 200); default full")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--seeds", type=int, help="default: 1 with --quick, else 3")
    sp.add_argument("--datasets", default="xquad,homedepot", help="comma-separated: xquad, homedepot")
    sp.add_argument("--strategies", help="comma-separated subset of: serm, self_training, random, "
                    "uncertainty_only, gold, no_new_labels (default: all; with --preset cpu the four the "
                    "paper's findings compare: serm, self_training, gold, no_new_labels)")
    sp.add_argument("--homedepot", help="Home Depot judgments (default: ../shared/data/homedepot/judgments.parquet)")
    sp.add_argument("--out", help="results folder (default: benchmarks/results)")
    sp.set_defaults(fn=cmd_bench)

    pipe = sub.add_parser("pipeline", help="Kubeflow pipeline tools").add_subparsers(dest="pipeline_cmd", required=True)
    sp = pipe.add_parser("compile", help="write the pipeline's IR YAML")
    sp.add_argument("--out", help="default: pipelines/evolution.yaml (--cluster: pipelines/evolution-cluster.yaml)")
    sp.add_argument("--cluster", action="store_true",
                    help="the cluster variant: no shared filesystem, GPU training step, sharded mining")
    sp.add_argument("--shards", type=int, default=4, help="mining shards of the cluster variant (default 4)")
    sp.set_defaults(fn=cmd_pipeline_compile)
    sp = pipe.add_parser("submit", help="run the cluster variant on a Kubeflow Pipelines backend (kfp.Client)")
    sp.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://127.0.0.1:8888")
    sp.add_argument("--repo", help="git URL the steps clone (default: the workspace's `origin`)")
    sp.add_argument("--rev", help="commit to evolve from (default: HEAD; push it first)")
    sp.add_argument("--branch", help="branch the round's commit is pushed to (default: the current branch)")
    sp.add_argument("--policy-path", help="policy file inside the repository (default: policies/default.yaml)")
    sp.add_argument("--dvc-remote", help="DVC remote the steps pull from and push to (object storage)")
    sp.add_argument("--shards", type=int, default=4, help="mining shards (default 4)")
    sp.add_argument("--experiment", default="serm", help="KFP experiment (default: serm)")
    sp.add_argument("--run-name", help="default: the pipeline file's name and the time")
    sp.add_argument("--namespace", help="Kubernetes namespace of a multi-user deployment")
    sp.add_argument("--force", action="store_true", help="run the round even if the drift trigger does not fire")
    ws_args(sp, policy=False, wait=False)
    sp.set_defaults(fn=cmd_pipeline_submit)
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
