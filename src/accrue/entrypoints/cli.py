"""The ``accrue`` command line: serve, token, ledger, points, dead-letters ..."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accrue.config import DEVELOPMENT_JWT_SECRET, Settings

cli = typer.Typer(help="accrue: loyalty, rewards, referrals and payments.", no_args_is_help=True)
ledger_cli = typer.Typer(help="Inspect the points ledger.", no_args_is_help=True)
points_cli = typer.Typer(help="Bulk point operations.", no_args_is_help=True)
dead_cli = typer.Typer(help="Inspect and re-drive dead letters (event outbox and queues).", no_args_is_help=True)
cli.add_typer(ledger_cli, name="ledger")
cli.add_typer(points_cli, name="points")
cli.add_typer(dead_cli, name="dead-letters")
payouts_cli = typer.Typer(help="Monthly referral payout runs.", no_args_is_help=True)
cli.add_typer(payouts_cli, name="payouts")
payments_cli = typer.Typer(help="Payments: batch files.", no_args_is_help=True)
cli.add_typer(payments_cli, name="payments")
audit_cli = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")

console = Console(stderr=True)
DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite file (default: ACCRUE_DB or var/accrue.db)")]


def load_settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def build(db: Path | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    from accrue.bootstrap import bootstrap

    return bootstrap(load_settings(db=db, **overrides))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one)")] = None,
    db: DbOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP API, with the workers and the scheduler; the API's writes and the event
    pipeline run in a writer process beside it (ACCRUE_WRITER_PROCESS=false: all in this one)."""
    import uvicorn

    from accrue.entrypoints.api.app import create_app
    from accrue.entrypoints.api.security import Role, issue_token

    application = build(db=db, host=host, port=port)
    settings = application.settings
    app = create_app(application, run_background=True, writer_process=settings.writer_process)
    url = f"http://{settings.host}:{settings.port}"
    if settings.env != "production":
        token = issue_token(settings.jwt_secret, sub="admin", role=Role.ADMIN, ttl_seconds=7 * 86_400)
        dev_note = " (built-in development secret)" if settings.jwt_secret == DEVELOPMENT_JWT_SECRET else ""
        print(f"accrue serving {url}  database {settings.db}", flush=True)
        print(f"API docs: {url}/docs   OpenAPI: {url}/openapi.json", flush=True)
        print(f"Development admin token{dev_note}, valid 7 days:\n{token}", flush=True)
    tune_for_serving()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
    )


def tune_for_serving() -> None:
    """Interpreter settings for a latency-sensitive server (measured by bench/api_bench.py).

    What was built at start (modules, the app, its schemas) lives as long as the process: frozen,
    it is left out of the cyclic garbage collector's full passes, whose pauses otherwise made the
    p99 latency. A shorter GIL switch interval hands the interpreter over sooner between the event
    loop and the request threads (the default 5 ms convoys writers queued on the database).
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.001)


@cli.command()
def token(
    role: Annotated[str, typer.Option(help="admin | service | member")],
    sub: Annotated[str, typer.Option(help="Subject: a user id for members, a client name otherwise")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds")] = 3600,
) -> None:
    """Print a signed JWT (uses ACCRUE_JWT_SECRET)."""
    from accrue.entrypoints.api.security import Role, issue_token

    if role not in {r.value for r in Role}:
        console.print(f"[red]role must be one of admin, service, member, not {role!r}[/red]")
        raise typer.Exit(2)
    settings = load_settings()
    print(issue_token(settings.jwt_secret, sub=sub, role=role, ttl_seconds=ttl))


@ledger_cli.command("check")
def ledger_check(db: DbOption = None) -> None:
    """Verify every stored balance equals the sum of its postings and the ledger balances."""
    application = build(db=db)
    problems = application.bus.query(lambda uow: uow.ledger.check() + uow.campaigns.check())
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        raise typer.Exit(1)
    print(
        "ledger OK: every balance equals the sum of its postings; all accounts sum to zero; "
        "no campaign paid over its budget"
    )


@points_cli.command("import")
def points_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    db: DbOption = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per transaction", min=1)] = 20_000,
) -> None:
    """Award points in bulk from a CSV (userId,points,reason); resumable and idempotent per file."""
    from accrue.service_layer.imports import import_points

    application = build(db=db)
    total = _count_lines(file)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("import", total=total)
        report = import_points(
            application.bus.uow_factory,
            file,
            application.clock,
            chunk_size=chunk_size,
            progress=lambda rows: progress.update(task, completed=rows),
        )
    application.worker.drain()
    print(
        json.dumps(
            {
                "file": str(file),
                "sha256": report.file_sha256,
                "alreadyCompleted": report.already_completed,
                "rows": report.rows,
                "awarded": report.awarded,
                "skipped": report.skipped,
                "rejected": [{"line": line, "reason": reason} for line, reason in report.rejected],
            }
        )
    )


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return max(sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)


@dead_cli.command("list")
def dead_letters_list(db: DbOption = None, limit: int = 100) -> None:
    """List dead letters from every source."""
    from accrue.service_layer import dead_letters

    application = build(db=db)
    items = dead_letters.list_all(application, limit)
    table = Table("id", "name", "handler", "attempts", "last error")
    for item in items:
        table.add_row(item.id, item.name, item.handler or "", str(item.attempts), (item.last_error or "")[:80])
    Console().print(table)


@dead_cli.command("redrive")
def dead_letters_redrive(dead_letter_id: Annotated[str, typer.Argument(metavar="ID")], db: DbOption = None) -> None:
    """Put a dead letter back for another attempt."""
    from accrue.service_layer import dead_letters

    application = build(db=db)
    if not dead_letters.redrive(application, dead_letter_id):
        console.print(f"[red]no dead letter {dead_letter_id}[/red]")
        raise typer.Exit(1)
    application.worker.drain()
    print(f"redriven {dead_letter_id}")


def _payout_run_json(run: Any) -> dict[str, Any]:
    from accrue.domain.money import format_minor_units

    return {
        "runId": run.run_id,
        "month": str(run.month),
        "status": str(run.status),
        "phase": str(run.phase),
        "referrers": run.referrers,
        "rewards": run.rewards,
        "totalAmount": format_minor_units(run.total_cents, "USD"),
        "reportKey": run.report_key,
        "reportLocation": run.report_location,
        "attempts": run.attempts,
        "lastError": run.last_error,
    }


@payouts_cli.command("run")
def payouts_run(
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: the previous month)")] = None,
    db: DbOption = None,
    chunk_size: Annotated[int | None, typer.Option(help="Rewards per transaction")] = None,
) -> None:
    """Pay a month's pending referral rewards; re-running a month returns its run or resumes it."""
    from accrue.domain.errors import DomainError
    from accrue.domain.payouts import month_before
    from accrue.service_layer.payouts import run_payout

    application = build(db=db)
    if application.blobs is None:  # pragma: no cover - bootstrap always provides one
        raise typer.Exit(2)
    chosen = month or str(month_before(application.clock()))
    try:
        run = run_payout(
            application.bus.uow_factory,
            application.blobs,
            application.clock,
            chosen,
            chunk_size=chunk_size or application.settings.payout_chunk_size,
        )
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    application.worker.drain()
    print(json.dumps(_payout_run_json(run)))


@payouts_cli.command("list")
def payouts_list(db: DbOption = None, limit: int = 24) -> None:
    """Payout runs, newest month first."""
    from accrue.service_layer.payouts import list_runs

    application = build(db=db)
    page = application.bus.query(list_runs, limit, None)
    table = Table("month", "status", "phase", "referrers", "rewards", "total", "report")
    for run in page.items:
        info = _payout_run_json(run)
        table.add_row(
            info["month"],
            info["status"],
            info["phase"],
            str(run.referrers),
            str(run.rewards),
            info["totalAmount"],
            run.report_key or "",
        )
    Console().print(table)


@payouts_cli.command("show")
def payouts_show(month: Annotated[str, typer.Argument(help="YYYY-MM")], db: DbOption = None) -> None:
    """One month's run as JSON."""
    from accrue.domain.errors import DomainError
    from accrue.service_layer.payouts import get_run

    application = build(db=db)
    try:
        run = application.bus.query(get_run, month)
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    print(json.dumps(_payout_run_json(run)))


@payouts_cli.command("report")
def payouts_report(month: Annotated[str, typer.Argument(help="YYYY-MM")], db: DbOption = None) -> None:
    """Write a month's CSV report to standard output."""
    from accrue.domain.errors import DomainError
    from accrue.service_layer.payouts import open_report

    application = build(db=db)
    if application.blobs is None:  # pragma: no cover - bootstrap always provides one
        raise typer.Exit(2)
    try:
        for chunk in open_report(application.bus.uow_factory, application.blobs, month):
            sys.stdout.buffer.write(chunk)
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    sys.stdout.flush()


@payments_cli.command("import")
def payments_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    db: DbOption = None,
    actor: Annotated[str, typer.Option(help="Who to name in the audit log")] = "system",
    process: Annotated[bool, typer.Option(help="Also run the payments through the workflow now")] = False,
    show_errors: Annotated[int, typer.Option(help="How many rejected or duplicate rows to print")] = 100,
) -> None:
    """Import a CSV batch (payment_id,amount,currency[,user_id]); the same file twice creates nothing.

    Streams the file in large transactions and resumes where an interrupted run stopped. A running
    ``accrue serve`` processes the new payments; without one, pass --process.
    """
    from rich.progress import DownloadColumn

    from accrue.domain.errors import DomainError

    application = build(db=db)
    parts = application.services["payments"]
    try:
        with Progress(
            TextColumn("importing payments"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task("import", total=file.stat().st_size)
            batch, created = parts.batches.ingest_path(
                file,
                source="cli",
                actor=actor,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        if process:
            parts.worker.drain(until_idle_seconds=application.settings.payment_retry_interval_seconds * 16 + 1)
        issues = application.bus.query(lambda uow: uow.payment_batches.issues(batch.batch_id, None, show_errors, None))
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    finally:
        application.close()
    print(
        json.dumps(
            {
                "batchId": batch.batch_id,
                "status": str(batch.status),
                "created": created,
                "totalRows": batch.total_rows,
                "acceptedRows": batch.accepted_rows,
                "rejectedRows": batch.rejected_rows,
                "duplicateRows": batch.duplicate_rows,
                "error": batch.error,
                "errors": [{"line": i.line, "kind": i.kind, "reason": i.reason} for i in issues.items],
                "moreErrors": issues.next_cursor is not None,
            }
        )
    )
    if str(batch.status) != "completed":
        raise typer.Exit(1)


@audit_cli.command("verify")
def audit_verify(db: DbOption = None) -> None:
    """Walk the hash chain from the first entry; report the first broken link (exit 1)."""
    from accrue.service_layer.payments import verify_audit_log

    application = build(db=db)
    try:
        result = application.bus.query(verify_audit_log)
    finally:
        application.close()
    report = result.chain
    if report.broken is not None:
        console.print(f"[red]audit log broken at entry {report.broken.seq}: {report.broken.problem}[/red]")
        print(
            f"audit log BROKEN at entry {report.broken.seq}: {report.broken.problem} "
            f"({report.checked} entries before it are intact)"
        )
    for problem in result.changed_rows:
        print(f"audit log BROKEN: {problem}")
    if not result.ok:
        raise typer.Exit(1)
    print(f"audit log OK: {report.checked} entries, each linked to the one before; head {report.head_hash}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
