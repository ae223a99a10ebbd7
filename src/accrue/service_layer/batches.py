"""Payment batch files: one code path for the API body, ``accrue payments import`` and the inbox.

1. ``register_file``: the file (already on local disk: a spooled request body, a CLI argument, an
   inbox file) is hashed, copied once into the blob store under its SHA-256 and recorded as a batch.
   The same file again finds the same batch and creates nothing.
2. ``ingest``: the stored file is streamed line by line (never read whole). Each row is validated on
   its own; good rows become payments. Every ``chunk_rows`` rows, one transaction inserts the
   payments, their queue messages and audit entries, records the rejected and duplicate lines and
   moves the batch's resume point (byte offset, line) on. A crash loses at most the chunk in flight,
   which the next run (``accrue serve`` resumes unfinished batches at start) redoes from the
   recorded offset: every row ends accepted once or rejected, never lost or doubled.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from accrue.domain.audit import SYSTEM_ACTOR
from accrue.domain.errors import InvalidInput, NotFound
from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue.domain.payments import (
    CSV_FIELDS,
    BatchRowIssue,
    BatchStatus,
    CsvLayout,
    PaymentBatch,
    PaymentBatchCompleted,
    PaymentRow,
    parse_header,
    parse_row,
    rows_digest,
)
from accrue.ports import BlobStore, UnitOfWork
from accrue.service_layer.payments import MESSAGE_PAYMENTS, PAYMENTS_QUEUE, audit, queue_body, require_members

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]  # (bytes done, bytes in the file)

BLOB_PREFIX = "payment-batches"
# A payment row is a few dozen bytes; a "line" longer than this is not one (and is not buffered).
MAX_LINE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 1 << 20


def blob_key(batch_id: str) -> str:
    return f"{BLOB_PREFIX}/{batch_id}.csv"


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(READ_CHUNK_BYTES), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(READ_CHUNK_BYTES), b"")


def iter_lines(chunks: Iterable[bytes]) -> Iterator[tuple[bytes | None, int]]:
    """Each line without its newline (None when longer than MAX_LINE_BYTES) and the byte offset
    just after it. Memory stays bounded whatever the file holds."""
    offset = 0
    tail = b""
    overlong = False
    for chunk in chunks:
        data = tail + chunk if tail else chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        for part in parts:
            offset += len(part) + 1
            if overlong:
                overlong = False
                yield None, offset
            else:
                yield (part if len(part) <= MAX_LINE_BYTES else None), offset
        if len(tail) > MAX_LINE_BYTES:
            offset += len(tail)
            tail = b""
            overlong = True
    if tail or overlong:
        offset += len(tail)
        yield (None if overlong or len(tail) > MAX_LINE_BYTES else tail), offset


def read_header(chunks: Iterable[bytes]) -> CsvLayout:
    """Parse the first line only (refuse a file before storing anything)."""
    for line, _ in iter_lines(chunks):
        if line is None:
            raise InvalidInput("header", "the first line is not a CSV header")
        try:
            text = line.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("header", "is not valid UTF-8 text") from None
        return parse_header(text)
    raise InvalidInput("body", "the file is empty; the first line must be the header payment_id,amount,currency")


@dataclass(frozen=True, slots=True)
class Registered:
    batch: PaymentBatch
    created: bool


class BatchTakenOver(Exception):
    """Another ingester (a second process) moved this batch on; this one stops."""


@dataclass
class _Chunk:
    rows: list[PaymentRow] = field(default_factory=list)
    issues: list[BatchRowIssue] = field(default_factory=list)
    end_offset: int = 0
    end_line: int = 0

    def __len__(self) -> int:
        return len(self.rows) + len(self.issues)


class PaymentBatches:
    def __init__(
        self,
        uow_factory: Callable[..., UnitOfWork],
        blobs: BlobStore,
        clock: Clock,
        *,
        chunk_rows: int = 20_000,
    ) -> None:
        self.uow_factory = uow_factory
        self.blobs = blobs
        self.clock = clock
        self.chunk_rows = chunk_rows

    # -- intake ---------------------------------------------------------------------------------

    def register_file(
        self,
        path: Path,
        *,
        source: str,
        actor: str = SYSTEM_ACTOR,
        file_name: str | None = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        check_header: bool = True,
    ) -> Registered:
        """Record the file as a batch (or find the batch it already is). With ``check_header``, a
        file without a valid header is refused with InvalidInput and nothing is stored."""
        if check_header:
            read_header(_file_chunks(path))
        if sha256 is None or size_bytes is None:
            sha256, size_bytes = file_sha256(path)
        existing = self.get(sha256)
        if existing is not None:
            return Registered(existing, created=False)
        key = blob_key(sha256)
        if not self.blobs.exists(key):
            self.blobs.put_stream(key, _file_chunks(path), content_type="text/csv")
        now = self.clock()
        batch = PaymentBatch(
            batch_id=sha256,
            status=BatchStatus.PROCESSING,
            source=source,
            file_name=file_name,
            blob_key=key,
            size_bytes=size_bytes,
            actor=actor or SYSTEM_ACTOR,
            created_at=now,
            updated_at=now,
        )
        with self.uow_factory() as uow:
            created = uow.payment_batches.add(batch)
            if created:
                audit(
                    uow,
                    batch.actor,
                    "batch.received",
                    "batch",
                    sha256,
                    now,
                    {"source": source, "fileName": file_name, "sizeBytes": size_bytes},
                )
                uow.commit()
            else:
                uow.rollback()
        if not created:  # another process registered it between our look and our insert
            found = self.get(sha256)
            assert found is not None
            return Registered(found, created=False)
        return Registered(batch, created=True)

    def get(self, batch_id: str) -> PaymentBatch | None:
        with self.uow_factory(readonly=True) as uow:
            return uow.payment_batches.get(batch_id)

    def unfinished(self) -> list[str]:
        with self.uow_factory(readonly=True) as uow:
            return uow.payment_batches.unfinished()

    # -- ingestion ------------------------------------------------------------------------------

    def ingest(
        self, batch_id: str, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> PaymentBatch:
        """Stream the batch's file from its resume point to the end; returns the final batch.

        When ``stop`` is set the batch is left ``processing`` after the current chunk: the next
        start resumes it where it stopped."""
        batch = self.get(batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found", details={"field": "batchId"})
        if batch.status is not BatchStatus.PROCESSING:
            return batch
        try:
            chunks = self.blobs.iter_chunks(batch.blob_key)
            lines = iter_lines(chunks)
            layout = self._header(lines)
        except KeyError:
            return self._fail(batch, f"the stored file {batch.blob_key} is missing")
        except InvalidInput as exc:
            return self._fail(batch, str(exc))
        try:
            return self._ingest_rows(batch, layout, lines, progress, stop)
        except BatchTakenOver:
            log.info("batch %s: another ingester is ahead; leaving it to that one", batch_id)
            current = self.get(batch_id)
            assert current is not None
            return current

    @staticmethod
    def _header(lines: Iterator[tuple[bytes | None, int]]) -> CsvLayout:
        for line, _ in lines:
            if line is None:
                raise InvalidInput("header", "the first line is not a CSV header")
            try:
                return parse_header(line.decode("utf-8-sig"))
            except UnicodeDecodeError:
                raise InvalidInput("header", "is not valid UTF-8 text") from None
        raise InvalidInput("body", "the file is empty; the first line must be the header payment_id,amount,currency")

    def _ingest_rows(
        self,
        batch: PaymentBatch,
        layout: CsvLayout,
        lines: Iterator[tuple[bytes | None, int]],
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> PaymentBatch:
        resume_at = batch.byte_offset
        line_no = 1  # the header
        chunk = _Chunk(end_offset=resume_at, end_line=batch.line_number)
        rows, issues = chunk.rows, chunk.issues
        chunk_rows = self.chunk_rows
        pending = 0
        last_end, last_line = resume_at, batch.line_number
        for raw, end in lines:
            line_no += 1
            if end <= resume_at:
                continue  # done by an earlier, interrupted run
            if raw is None:
                issues.append(BatchRowIssue(line_no, "invalid", f"line is longer than {MAX_LINE_BYTES} bytes"))
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    issues.append(BatchRowIssue(line_no, "invalid", "row is not valid UTF-8 text"))
                else:
                    if text.endswith("\r"):
                        text = text[:-1]
                    parsed = parse_row(layout, text, line_no)
                    if type(parsed) is PaymentRow:
                        rows.append(parsed)
                    elif text.strip():
                        issues.append(BatchRowIssue(line_no, "invalid", parsed[1]))
                    else:
                        pending -= 1  # a blank line is not a row
            pending += 1
            last_end, last_line = end, line_no
            if pending >= chunk_rows:
                chunk.end_offset, chunk.end_line = last_end, last_line
                batch = self._flush(batch, chunk, final=False)
                chunk = _Chunk(end_offset=batch.byte_offset, end_line=batch.line_number)
                rows, issues, pending = chunk.rows, chunk.issues, 0
                if progress is not None:
                    progress(batch.byte_offset, batch.size_bytes)
                if stop is not None and stop.is_set():
                    return batch
        if last_line > chunk.end_line:
            chunk.end_offset, chunk.end_line = last_end, last_line
        batch = self._flush(batch, chunk, final=True)
        if progress is not None:
            progress(batch.size_bytes, batch.size_bytes)
        return batch

    def _flush(self, batch: PaymentBatch, chunk: _Chunk, *, final: bool) -> PaymentBatch:
        """One transaction: the chunk's payments, messages, audit entries, issues and progress."""
        expected_offset = batch.byte_offset
        with self.uow_factory() as uow:
            now = self.clock()
            issues = list(chunk.issues)
            accepted_rows = self._accept(uow, batch, chunk.rows, issues, now)
            accepted = len(accepted_rows)
            digest = rows_digest(accepted_rows)
            issues.sort(key=lambda issue: issue.line)
            if issues:
                uow.payment_batches.add_issues(batch.batch_id, issues)
            rejected = sum(1 for i in issues if i.kind == "invalid")
            duplicates = len(issues) - rejected
            updated = PaymentBatch(
                batch_id=batch.batch_id,
                status=BatchStatus.COMPLETED if final else BatchStatus.PROCESSING,
                source=batch.source,
                file_name=batch.file_name,
                blob_key=batch.blob_key,
                size_bytes=batch.size_bytes,
                actor=batch.actor,
                created_at=batch.created_at,
                updated_at=now,
                byte_offset=chunk.end_offset,
                line_number=chunk.end_line,
                total_rows=batch.total_rows + accepted + len(issues),
                accepted_rows=batch.accepted_rows + accepted,
                rejected_rows=batch.rejected_rows + rejected,
                duplicate_rows=batch.duplicate_rows + duplicates,
                completed_at=now if final else None,
            )
            if len(chunk):
                audit(
                    uow,
                    batch.actor,
                    "batch.rows_accepted",
                    "batch",
                    batch.batch_id,
                    now,
                    {
                        "source": batch.source,
                        "firstLine": max(batch.line_number, 1) + 1,  # line 1 is the header
                        "lastLine": chunk.end_line,
                        "accepted": accepted,
                        "rejected": rejected,
                        "duplicates": duplicates,
                        "rowsSha256": digest,
                    },
                )
            if final:
                audit(
                    uow,
                    batch.actor,
                    "batch.completed",
                    "batch",
                    batch.batch_id,
                    now,
                    {
                        "totalRows": updated.total_rows,
                        "acceptedRows": updated.accepted_rows,
                        "rejectedRows": updated.rejected_rows,
                        "duplicateRows": updated.duplicate_rows,
                    },
                )
                uow.emit(
                    PaymentBatchCompleted(
                        batch_id=batch.batch_id,
                        status=str(updated.status),
                        total_rows=updated.total_rows,
                        accepted_rows=updated.accepted_rows,
                        rejected_rows=updated.rejected_rows,
                        duplicate_rows=updated.duplicate_rows,
                    )
                )
            if not uow.payment_batches.advance(updated, expected_offset):
                raise BatchTakenOver(batch.batch_id)
            uow.commit()
        return updated

    def _accept(
        self, uow: UnitOfWork, batch: PaymentBatch, rows: list[PaymentRow], issues: list[BatchRowIssue], now: datetime
    ) -> list[PaymentRow]:
        """Insert the chunk's new payments and their queue messages; duplicates and unknown members
        become issues. Returns the rows that became payments (the chunk's audit entry vouches for
        them with a SHA-256 over exactly these rows)."""
        if not rows:
            return []
        batch_id = batch.batch_id
        if any(r.user_id is not None for r in rows):
            unknown = require_members(uow, {r.user_id for r in rows if r.user_id is not None}, CSV_FIELDS)
            if unknown:
                issues.extend(
                    BatchRowIssue(r.line, "invalid", f"user_id: no member {r.user_id}")
                    for r in rows
                    if r.user_id in unknown
                )
                rows = [r for r in rows if r.user_id not in unknown]
        skipped = uow.payments.add_batch_rows(rows, batch_id=batch_id, now=now, workflow_step=PAYMENT_WORKFLOW.start)
        if skipped:
            for row in rows:
                origin = skipped.get(row.line)
                if origin is None:
                    continue
                if origin[0] == batch_id and origin[1] is not None and origin[1] < row.line:
                    reason = f"payment_id: {row.payment_id} duplicates line {origin[1]}"
                else:
                    reason = f"payment_id: {row.payment_id} already exists"
                issues.append(BatchRowIssue(row.line, "duplicate", reason))
            rows = [r for r in rows if r.line not in skipped]
        ids = [r.payment_id for r in rows]
        uow.queues.send_batch(
            PAYMENTS_QUEUE,
            [queue_body(ids[start : start + MESSAGE_PAYMENTS]) for start in range(0, len(ids), MESSAGE_PAYMENTS)],
        )
        return rows

    def _fail(self, batch: PaymentBatch, error: str) -> PaymentBatch:
        with self.uow_factory() as uow:
            now = self.clock()
            batch.status = BatchStatus.FAILED
            batch.error = error
            batch.updated_at = now
            batch.completed_at = now
            if not uow.payment_batches.advance(batch, batch.byte_offset):
                uow.rollback()
                current = self.get(batch.batch_id)
                assert current is not None
                return current
            audit(uow, batch.actor, "batch.failed", "batch", batch.batch_id, now, {"error": error})
            uow.emit(
                PaymentBatchCompleted(
                    batch_id=batch.batch_id,
                    status=str(batch.status),
                    total_rows=batch.total_rows,
                    accepted_rows=batch.accepted_rows,
                    rejected_rows=batch.rejected_rows,
                    duplicate_rows=batch.duplicate_rows,
                )
            )
            uow.commit()
        return batch

    # -- one entry for local files --------------------------------------------------------------

    def ingest_path(
        self,
        path: Path,
        *,
        source: str,
        actor: str = SYSTEM_ACTOR,
        check_header: bool = True,
        progress: Progress | None = None,
    ) -> tuple[PaymentBatch, bool]:
        """Register and ingest a local file (CLI, inbox); (batch, whether it was new)."""
        registered = self.register_file(
            path, source=source, actor=actor, file_name=path.name, check_header=check_header
        )
        batch = registered.batch
        if batch.status is BatchStatus.PROCESSING:
            batch = self.ingest(batch.batch_id, progress)
        return batch, registered.created


class BatchWorker:
    """Background ingestion for ``accrue serve``: API uploads, unfinished batches, the inbox folder.

    The inbox (``var/inbox/*.csv``) is the local stand-in for S3 ``ObjectCreated``: a file is taken
    once it has not changed for a poll interval, ingested like any other, then moved to ``done/``.
    """

    def __init__(
        self,
        batches: PaymentBatches,
        *,
        inbox_dir: Path | None,
        poll_seconds: float = 2.0,
        settle_seconds: float = 1.0,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.batches = batches
        self.inbox_dir = inbox_dir
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self.wall_clock = wall_clock or time.time
        self._pending: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, batch_id: str) -> None:
        with self._lock:
            if batch_id in self._queued:
                return
            self._queued.add(batch_id)
        self._pending.put(batch_id)
        self._wake.set()

    def run_pending(self) -> int:
        """Ingest every submitted batch now (tests; also the thread's own work)."""
        done = 0
        while True:
            try:
                batch_id = self._pending.get_nowait()
            except queue.Empty:
                return done
            try:
                self.batches.ingest(batch_id, stop=self._stop)
            except Exception:  # the batch stays 'processing' and is resumed at the next start
                log.exception("batch %s: ingestion failed", batch_id)
            finally:
                with self._lock:
                    self._queued.discard(batch_id)
            done += 1

    def scan_inbox(self) -> list[str]:
        """Ingest every settled ``*.csv`` in the inbox; returns their batch ids."""
        if self.inbox_dir is None or not self.inbox_dir.is_dir():
            return []
        found: list[str] = []
        now = self.wall_clock()
        for path in sorted(self.inbox_dir.glob("*.csv")):
            try:
                if now - path.stat().st_mtime < self.settle_seconds:
                    continue  # still being written
                batch, _ = self.batches.ingest_path(path, source="inbox", check_header=False)
            except FileNotFoundError:
                continue
            except Exception:
                log.exception("inbox file %s: ingestion failed; will retry", path.name)
                continue
            self._move_done(path, batch.batch_id)
            found.append(batch.batch_id)
        return found

    def _move_done(self, path: Path, batch_id: str) -> None:
        done = path.parent / "done"
        done.mkdir(exist_ok=True)
        target = done / path.name
        if target.exists():
            target = done / f"{path.stem}.{batch_id[:12]}{path.suffix}"
        shutil.move(str(path), str(target))

    def start(self) -> None:
        if self._thread is not None:
            return
        for batch_id in self.batches.unfinished():
            self.submit(batch_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="payment-batches", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
                self.scan_inbox()
            except Exception:  # pragma: no cover - keep watching; the next round retries
                log.exception("batch worker round failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
