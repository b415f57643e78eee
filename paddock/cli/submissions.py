"""Submission commands: submit, status, list, run, stress, deactivate, redeploy, teardown."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table
from rich.text import Text

from paddock.cli import api_mode, app, err, fail, out, print_json
from paddock.cli.backend import Backend, open_backend
from paddock.errors import Rejected
from paddock.params import parse_params

if TYPE_CHECKING:  # the database layer is imported only where the database answers
    from paddock.cli.local import Local
    from paddock.timeline import StatusReport

Json = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="hub id (org/name), s3://bucket/dir, or a path")],
    revision: Annotated[str | None, typer.Option(help="branch, tag or commit")] = None,
    name: Annotated[str | None, typer.Option(help="display name (default: from source)")] = None,
    developer: Annotated[
        str | None, typer.Option(help="who submits (database only; default: you)")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="k=v")] = None,
    formatter: Annotated[
        Path | None, typer.Option(help="prompt formatter templates, a JSON file")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="validate and show; record nothing")] = False,
    wait: Annotated[bool, typer.Option(help="follow the run; exit 0 only once deployed")] = False,
    as_json: Json = False,
) -> None:
    """Submit a model; prints its id (with --wait, follows its run to the end)."""
    if source.startswith(("./", "../", "~")) or source in (".", ".."):
        # The platform takes local sources as absolute paths; a person types relative ones.
        source = str(Path(source).expanduser().resolve())
    body: dict[str, Any] = {"source": source, "generation_params": parse_params(param or [])}
    if revision:
        body["revision"] = revision
    if name:
        body["name"] = name
    if formatter:
        body["prompt_formatter"] = _read_object(formatter)
    if dry_run:
        body["dry_run"] = True
    with open_backend(developer=developer) as backend:
        result = backend.submit(body)
        if dry_run or not wait:
            if as_json:
                print_json(result)
            elif dry_run:
                out.print(json.dumps(result, indent=2), highlight=False)
            else:
                out.print(result["id"])
            return
        where = "" if api_mode() else f" (log: {_flow_log(result['id'])})"
        err.print(f"submission [bold]{result['id']}[/]: {source}{where}", highlight=False)
        _follow(backend, result["id"], as_json=as_json)


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Rejected(f"cannot read the prompt formatter {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise Rejected(f"the prompt formatter {path} must be a JSON object of templates")
    return data


def _flow_log(submission_id: str) -> Path:
    from paddock.runner import flow_log_path

    return flow_log_path(submission_id)


def _follow(backend: Backend, submission_id: str, *, as_json: bool) -> None:
    """Show progress until the run settles; exit 1 unless the model is deployed.

    Ctrl-C stops the watching, not the run: runs are detached.
    """
    try:
        if api_mode():
            _poll(backend, submission_id)
        else:  # the database answers: a run this process started is watched to its end
            from paddock.progress import watch

            local = cast("Local", backend)
            watch(submission_id, alive=lambda: local.alive(submission_id), console=err)
            local.wait(submission_id)
    except KeyboardInterrupt:
        err.print(f"stopped watching; the run goes on (`paddock status {submission_id}`)")
        raise typer.Exit(130) from None
    report = backend.status(submission_id)
    if as_json:
        print_json(report)
    else:
        _show(report)
    from paddock.models import Status

    if report["status"] != Status.deployed:
        raise typer.Exit(1)


def _poll(backend: Backend, submission_id: str, interval: float = 1.0) -> None:
    """One line per stage change, from the API (no database here to watch)."""
    from paddock.lifecycle import SETTLED  # statuses a run does not move on from by itself

    settled = {str(s) for s in SETTLED}
    seen: set[tuple[str, str]] = set()
    while True:
        report = backend.status(submission_id)
        for s in report["stages"]:
            if (s["name"], s["status"]) not in seen:
                seen.add((s["name"], s["status"]))
                took = f" in {s['seconds']:.1f} s" if s["status"] != "running" else ""
                err.print(f"[{submission_id}] {s['name']}: {s['status']}{took}", markup=False)
        if report["status"] in settled:
            return
        time.sleep(interval)


def _report(data: dict[str, Any]) -> StatusReport:
    """The timeline's dataclass back from its JSON, for the same tables in both modes."""
    from paddock.timeline import StageSummary, StatusReport

    names = {f.name for f in fields(StatusReport)}
    values = {k: v for k, v in data.items() if k in names}
    values["stages"] = [StageSummary(**s) for s in data.get("stages", [])]
    return StatusReport(**values)


def _show(data: dict[str, Any]) -> None:
    from paddock.progress import artifacts_table, render, stress_table

    report = _report(data)
    out.print(render(report))
    if report.artifacts:
        out.print(artifacts_table(report.artifacts))
    if report.stress:
        out.print(stress_table(report.stress))


@app.command()
def status(
    submission_id: Annotated[str | None, typer.Argument()] = None,
    as_json: Json = False,
) -> None:
    """Show a submission's stages, timings, artifacts and endpoint (default: the newest)."""
    with open_backend() as backend:
        if submission_id is None:
            latest = backend.list_submissions(limit=1)
            if not latest:
                fail("no submissions yet")
            submission_id = str(latest[0]["id"])
        report = backend.status(submission_id)
    if as_json:
        print_json(report)
    else:
        _show(report)


@app.command(name="list")
def list_(
    developer: Annotated[str | None, typer.Option(help="only theirs (database only)")] = None,
    as_json: Json = False,
) -> None:
    """List submissions, newest first (through the API: yours)."""
    with open_backend(developer=developer) as backend:
        subs = backend.list_submissions()
    if as_json:
        print_json(subs)
        return
    table = Table("id", "name", "developer", "status", "endpoint", "created")
    for s in subs:
        table.add_row(
            s["id"],
            Text(s["name"]),
            s["developer"],
            s["status"],
            s["endpoint"] or "",
            str(s["created_at"])[:19].replace("T", " "),
        )
    out.print(table)


def _database_only(command: str) -> None:
    if api_mode():
        fail(
            f"`paddock {command}` runs a flow on this machine against the database; "
            "unset PADDOCK_API_URL on the operator's machine to use it"
        )


@app.command()
def run(submission_id: str) -> None:
    """Run (or resume) a submission's flow and follow it; finished stages are skipped."""
    from paddock import crud
    from paddock.cli.local import Local
    from paddock.dispatch import start_run

    _database_only("run")
    crud.require_submission(submission_id=submission_id)
    backend = Local()
    backend.runs[submission_id] = start_run(submission_id)
    _follow(backend, submission_id, as_json=False)


@app.command()
def stress(
    submission_id: str,
    profile: Annotated[str, typer.Option(help="preset: smoke, cpu, gpu")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stress-test a deployed model again (a `stress` flow run with its artifacts)."""
    from paddock import crud, timeline
    from paddock.dispatch import run_stress
    from paddock.models import Status
    from paddock.progress import stress_table
    from paddock.runner import log_path

    _database_only("stress")
    sub = crud.get_submission(submission_id=submission_id)
    if sub is None or sub.status != Status.deployed or not sub.endpoint:
        fail(f"{submission_id} is not deployed; only a live model can be stress-tested")
    before = crud.latest_stress_run(submission_id=submission_id)
    log_name = f"{submission_id}.stress.log"
    code = run_stress(
        submission_id=submission_id,
        endpoint=sub.endpoint,
        model=sub.display_name,
        profile=profile,
        log_name=log_name,
    )
    run_ = crud.latest_stress_run(submission_id=submission_id)
    if run_ is None or (before is not None and run_.id == before.id):
        fail(f"the stress run did not finish (exit {code}); see {log_path(log_name)}")
    headline = timeline.build(submission_id).stress or {}
    if as_json:
        print_json(run_.metrics)
    else:
        out.print(stress_table(headline))
    if not run_.passed:
        raise typer.Exit(1)


def _stopped(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        note = " (server stopped)" if result["server_stopped"] else ""
        out.print(f"{result['id']}: {result['status']}{note}", highlight=False)


@app.command()
def deactivate(submission_id: str, as_json: Json = False) -> None:
    """Stop sending users to a model and stop its server (it can be redeployed)."""
    with open_backend() as backend:
        _stopped(backend.deactivate(submission_id), as_json=as_json)


@app.command()
def teardown(submission_id: str, as_json: Json = False) -> None:
    """Stop a model's server for good."""
    with open_backend() as backend:
        _stopped(backend.teardown(submission_id), as_json=as_json)


@app.command()
def redeploy(
    submission_id: str,
    wait: Annotated[bool, typer.Option(help="follow the run; exit 0 only once deployed")] = False,
    as_json: Json = False,
) -> None:
    """Serve an inactive or torn-down model again from its stored bundle."""
    with open_backend() as backend:
        result = backend.redeploy(submission_id)
        if wait:
            _follow(backend, submission_id, as_json=as_json)
        elif as_json:
            print_json(result)
        else:
            out.print(f"{submission_id}: {result['status']} (run started)", highlight=False)
