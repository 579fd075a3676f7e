"""AuditLog(writer="process"): the event loop hands its records to a writer process
(kms/audit/writer_process.py), on a real SQLite database: one chain with no gap, callers
from other threads ride along with the loop's batches, an invalid or unsendable event
fails alone, and a writer process that dies or stops answering fails its batches closed
and is replaced."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms import helper_channel
from kms.audit import log as log_mod
from kms.audit import writer_process as wp
from kms.audit.commit import encode_event
from kms.audit.event import AuditEvent, cli_actor
from kms.audit.log import AuditLog
from kms.audit.record import (
    Actor,
    ActorKind,
    Operation,
    Outcome,
    RequestMetadata,
    decode,
    encode_values,
)
from kms.cli import serve_cmd
from kms.clock import system_clock
from kms.errors import DependencyTimeoutError
from tests.audit.test_log_append import PEM, _check_log, _engine, _event
from tests.audit.test_record_fast_encoding import _T as FAST_TIME
from tests.audit.test_record_fast_encoding import _fields as FAST_FIELDS
from tests.audit.timers import record_append_timers

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
U = TypeVar("U")


def _plog(tmp_path: Path, batches: list[tuple[int, int]] | None = None) -> AuditLog:
    def on_batch(size: int, _seconds: float) -> None:
        if batches is not None:
            batches.append((size, threading.get_ident()))

    return AuditLog(_engine(tmp_path), system_clock, origin="test/audit",
                    key_name="test/audit", public_key_pem=PEM, sign=lambda _m: b"",
                    on_batch=on_batch, writer="process")


def _serve(log: AuditLog, body: Callable[[], Awaitable[T]]) -> T:
    """Run ``body`` on a fresh loop attached to ``log`` (as kms serve's lifespan does),
    then close the log on that loop (as the lifespan's shutdown does)."""
    async def main() -> T:
        log.attach_loop()
        try:
            return await body()
        finally:
            log.close()

    return asyncio.run(main())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_loop_appends_commit_in_the_writer_process_as_one_chain(tmp_path: Path) -> None:
    batches: list[tuple[int, int]] = []
    log = _plog(tmp_path, batches)
    bad = AuditEvent(op=Operation.KEY_REVOKE, outcome=Outcome.OK, actor=cli_actor(),
                     key_version=0)  # versions start at 1: the record is rejected
    pids: list[int | None] = []

    async def body() -> list[int | BaseException]:
        assert log._channel is not None
        pids.append(log._channel.pid)
        results = []
        for wave in range(4):  # several loop iterations: several batches, pipelined
            results += await asyncio.gather(
                *(log.append_async(bad if (wave, i) == (2, 7) else _event(wave * 100 + i))
                  for i in range(50)), return_exceptions=True)
        return results

    loop_thread = threading.get_ident()
    results = _serve(log, body)
    ok = [r for r in results if isinstance(r, int)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert sorted(ok) == list(range(199))
    assert len(errors) == 1 and isinstance(errors[0], DependencyTimeoutError)
    assert "not valid" in str(errors[0])
    _check_log(log, 199)
    # Answers were handled on the loop itself (no thread hop), for batches of many records.
    assert batches and {tid for _, tid in batches} == {loop_thread}
    assert sum(n for n, _ in batches) == 200 and max(n for n, _ in batches) > 1
    # The writer process was started by attach_loop and has exited after close.
    assert pids[0] is not None and not _alive(pids[0])


def test_callers_on_other_threads_go_through_the_loop_to_the_writer_process(
        tmp_path: Path) -> None:
    """Sync ``append`` and ``submit`` from worker threads while a loop is attached: their
    records ride with the loop's batches (one writer for the process), and the writer
    thread's own database connection is never used."""
    batches: list[tuple[int, int]] = []
    log = _plog(tmp_path, batches)
    used: list[bool] = []
    real = log._committer.commit

    def spy(*args: object, **kwargs: object) -> list[int]:
        used.append(True)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    log._committer.commit = spy  # type: ignore[method-assign]

    async def body() -> list[int]:
        loop = asyncio.get_running_loop()

        def worker(i: int) -> int:
            e = _event(1000 + i)
            return log.append(e) if i % 2 else log.submit(e).result(timeout=10)

        from_threads = asyncio.gather(*(loop.run_in_executor(None, worker, i)
                                        for i in range(20)))
        from_loop = asyncio.gather(*(log.append_async(_event(i)) for i in range(20)))
        a, b = await asyncio.gather(from_threads, from_loop)
        return list(a) + list(b)

    seqs = _serve(log, body)
    assert sorted(seqs) == list(range(40))
    bodies = _check_log(log, 40)
    ids = {decode(b).request.kmsRequestId for b in bodies}  # type: ignore[union-attr]
    assert ids == {f"r-{i}" for i in range(20)} | {f"r-{1000 + i}" for i in range(20)}
    assert used == []


def test_an_event_that_cannot_be_sent_fails_alone(tmp_path: Path) -> None:
    log = _plog(tmp_path)
    unsendable = AuditEvent(op=Operation.KEY_CREATE, outcome=Outcome.OK, actor=cli_actor(),
                            detail={"x": lambda: 0})  # type: ignore[dict-item]

    async def body() -> list[int | BaseException]:
        return list(await asyncio.gather(
            log.append_async(_event(0)), log.append_async(unsendable),
            log.append_async(_event(1)), return_exceptions=True))

    results = _serve(log, body)
    assert results[0] == 0 and results[2] == 1
    assert isinstance(results[1], DependencyTimeoutError)
    _check_log(log, 2)


def test_a_killed_writer_process_fails_closed_and_is_replaced(tmp_path: Path) -> None:
    log = _plog(tmp_path)

    async def body() -> tuple[int, int, list[int | BaseException], list[int]]:
        channel = log._channel
        assert channel is not None and channel.pid is not None
        first = channel.pid
        assert await log.append_async(_event(0)) == 0
        os.kill(first, signal.SIGKILL)
        while _alive(first):
            await asyncio.sleep(0.01)
        # The loop sees end-of-file: the records it sends meanwhile fail closed (never
        # "durable" without an answer), then a new writer process takes over.
        failed = await asyncio.gather(*(log.append_async(_event(i)) for i in (1, 2)),
                                      return_exceptions=True)
        await asyncio.sleep(wp.LoopChannel.respawn_interval_s)
        later = list(await asyncio.gather(*(log.append_async(_event(i))
                                            for i in (3, 4, 5))))
        assert channel.pid is not None
        return first, channel.pid, failed, later

    first, second, failed, later = _serve(log, body)
    assert second != first
    assert all(isinstance(r, DependencyTimeoutError) for r in failed)
    bodies = _check_log(log, 1 + len(later))  # no gap, one chain across the two processes
    assert sorted(later) == list(range(1, 4))
    ids = [decode(b).request.kmsRequestId for b in bodies]  # type: ignore[union-attr]
    assert ids[0] == "r-0" and sorted(ids[1:]) == ["r-3", "r-4", "r-5"]  # type: ignore[type-var]


def test_a_writer_process_that_stops_answering_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped (SIGSTOP) writer process: its caller times out (fail closed), the next
    batch past REPLY_TIMEOUT_S kills it and a new one commits; the stopped one's record,
    never acknowledged, is not written (it was killed before it could run)."""
    log = _plog(tmp_path)

    async def body() -> tuple[int, int, BaseException | int, int]:
        channel = log._channel
        assert channel is not None and channel.pid is not None
        stopped = channel.pid
        assert await log.append_async(_event(0)) == 0  # started, with the usual budgets
        monkeypatch.setattr(log_mod, "APPEND_TIMEOUT_S", 0.5)
        monkeypatch.setattr(wp, "REPLY_TIMEOUT_S", 0.3)
        monkeypatch.setattr(wp.LoopChannel, "respawn_interval_s", 0.1)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        hung = (await asyncio.gather(log.append_async(_event(1)),
                                     return_exceptions=True))[0]
        assert time.monotonic() - started < 2
        monkeypatch.setattr(log_mod, "APPEND_TIMEOUT_S", 10.0)  # room for a process start
        seq = await log.append_async(_event(2))
        assert channel.pid is not None
        return stopped, channel.pid, hung, seq

    stopped, replacement, hung, seq = _serve(log, body)
    assert isinstance(hung, DependencyTimeoutError)
    assert replacement != stopped and not _alive(stopped)
    assert seq == 1
    _check_log(log, 2)


def test_a_batch_sent_to_the_writer_process_has_one_timeout_timer(tmp_path: Path) -> None:
    """The records of one loop iteration go as one batch with one APPEND_TIMEOUT_S timer,
    cancelled by the batch's answer."""
    log = _plog(tmp_path)
    timers: list[asyncio.TimerHandle] = []

    async def body() -> list[int]:
        assert await log.append_async(_event(0)) == 0  # the writer process is up
        record_append_timers(timers)
        return list(await asyncio.gather(*(log.append_async(_event(i)) for i in range(1, 33))))

    assert sorted(_serve(log, body)) == list(range(1, 33))
    assert len(timers) == 1 and timers[0].cancelled()
    _check_log(log, 33)


def test_close_delivers_the_answers_of_batches_in_flight(tmp_path: Path) -> None:
    """The lifespan's shutdown closes the log while records may still be on their way:
    the writer process commits what it has read and answers before it exits."""
    log = _plog(tmp_path)
    futures: list[asyncio.Future[int]] = []

    async def body() -> None:
        for i in range(30):
            futures.append(asyncio.ensure_future(log.append_async(_event(i))))
        await asyncio.sleep(0)  # the coroutines run and queue their records
        await asyncio.sleep(0)  # the outbox is flushed to the writer process

    _serve(log, body)
    assert all(f.done() for f in futures)
    assert sorted(f.result() for f in futures) == list(range(30))
    _check_log(log, 30)


def test_without_an_attached_loop_the_writer_thread_commits(tmp_path: Path) -> None:
    """A CLI or a test that never attaches a loop: writer="process" changes nothing."""
    log = _plog(tmp_path)
    assert [log.append(_event(i)) for i in range(3)] == [0, 1, 2]
    assert log._channel is None
    _check_log(log, 3)
    log.close()


def test_the_writer_process_gets_no_pin_and_no_database_url_in_its_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMS_PKCS11_PIN", "98765432")
    monkeypatch.setenv("KMS_PKCS11_PIN_FILE", str(tmp_path / "pin"))
    monkeypatch.setenv("KMS_DATABASE_URL", "postgresql://kms:s3cret@db/kms")
    log = _plog(tmp_path)

    async def body() -> bytes:
        assert await log.writer_ready(10)  # up, past its imports and database
        assert log._channel is not None and log._channel.pid is not None
        with open(f"/proc/{log._channel.pid}/environ", "rb") as f:
            environ = f.read()
        assert await log.append_async(_event(0)) == 0  # and it still commits
        return environ

    environ = _serve(log, body)
    assert b"KMS_PKCS11_PIN" not in environ and b"98765432" not in environ
    assert b"KMS_DATABASE_URL" not in environ and b"s3cret" not in environ
    assert b"PATH=" in environ  # the read itself worked


def test_the_serving_append_benchmark_appends_through_the_writer_process(
        tmp_path: Path) -> None:
    """kms.bench.audit_bench.append_rate_serving (``python -m kms.bench.micro batches``):
    what it counts was committed, as one chain."""
    from kms.bench.audit_bench import append_rate_serving

    engine = _engine(tmp_path)
    result = append_rate_serving(engine, system_clock, 0.3)
    log = AuditLog(engine, system_clock, origin="test/audit", key_name="test/audit",
                   public_key_pem=PEM, sign=lambda _m: b"")
    size = log.head().size
    assert result["writers"] == 32 and result["rps"] > 0
    assert size >= 1 + result["rps"] * 0.3 * 0.9  # the warm-up record and the counted ones
    _check_log(log, size)
    log.close()


_EVENT_FIELDS = {k: v for k, v in FAST_FIELDS.items() if k not in ("seq", "time", "prev")}


def _bytes_or_none(encode: Callable[[int, str, str, U], bytes], item: U) -> bytes | None:
    """The record bytes ``encode`` gives for ``item`` at seq 5, or None if it refuses."""
    try:
        return encode(5, FAST_TIME, "a" * 64, item)
    except Exception:
        return None


@given(st.fixed_dictionaries(_EVENT_FIELDS))
@settings(max_examples=300, deadline=None)
def test_the_writer_process_writes_the_bytes_the_writer_thread_would(
        f: dict[str, object]) -> None:
    """What crosses the socket (plain values for well-typed events, the object otherwise)
    is encoded by the child (``_encode_wire``: ``encode_values`` straight from the values,
    or through the objects) to the same record bytes, or fails as the thread path fails:
    never a different record."""
    event = AuditEvent(**f)  # type: ignore[arg-type]
    (sent,) = pickle.loads(wp.encode_batch([event]))
    child = None if sent is None else _bytes_or_none(wp._encode_wire, sent)
    assert child == _bytes_or_none(encode_event, event)


def test_readyz_reports_the_writer_process_and_starts_a_new_one(tmp_path: Path) -> None:
    """kms serve: the port opens once the writer process is ready (so the first /readyz
    already says so: without that wait the first requests waited ~0.2 s for the child's
    start-up); /readyz names the writer process (a child of the server); killed, it is
    replaced (by the next batch, or by /readyz itself) and the service answers again."""
    import httpx

    from kms.client import XksClient
    from tests.server import KmsServer

    srv = KmsServer()
    srv.cli("keys", "create", "rk")
    akid, secret = srv.add_credential()
    srv.start()
    try:
        assert srv.proc is not None
        ready = httpx.get(srv.url + "/readyz", timeout=5).json()
        assert ready["status"] == "ready" and ready["audit"]["writer"] == "process"
        assert ready["audit"]["ready"] is True
        first = ready["audit"]["pid"]
        with open(f"/proc/{first}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == srv.proc.pid  # its child
        client = XksClient(srv.xks_endpoint, akid, secret)
        client.encrypt("rk", b"p" * 32, b"aad")
        os.kill(first, signal.SIGKILL)
        time.sleep(wp.LoopChannel.respawn_interval_s + 0.2)
        deadline = time.monotonic() + 10
        while True:  # /readyz starts the new writer process
            r = httpx.get(srv.url + "/readyz", timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        second = r.json()["audit"]["pid"]
        assert second != first and _alive(second)
        ct = client.encrypt("rk", b"q" * 32, b"aad")
        assert client.decrypt("rk", ct, b"aad") == b"q" * 32
        client.close()
    finally:
        srv.stop()
    assert not _alive(second)  # it exits with its server


def test_writer_status_fails_while_no_writer_process_can_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _plog(tmp_path)

    async def status() -> dict[str, object]:
        """writer_status once the writer process it started has said it is ready."""
        with pytest.raises(DependencyTimeoutError, match="starting"):
            log.writer_status()  # started, not ready yet: /readyz is 503
        assert await log.writer_ready(10)
        return log.writer_status()

    async def body() -> tuple[BaseException | None, dict[str, object]]:
        first = await status()
        assert first["writer"] == "process" and isinstance(first["pid"], int)
        assert first["ready"] is True
        off_loop = await asyncio.get_running_loop().run_in_executor(None, log.writer_status)
        assert off_loop == first  # reported, not started, from another thread
        assert await log.append_async(_event(0)) == 0
        os.kill(first["pid"], signal.SIGKILL)
        channel = log._channel
        assert channel is not None
        while channel._sock is not None:  # the loop notices end-of-file
            await asyncio.sleep(0.01)
        monkeypatch.setattr(wp.LoopChannel, "respawn_interval_s", 3600.0)
        refused: BaseException | None = None
        try:
            log.writer_status()
        except DependencyTimeoutError as exc:
            refused = exc
        monkeypatch.setattr(wp.LoopChannel, "respawn_interval_s", 0.0)
        second = await status()
        assert second["pid"] != first["pid"]
        assert await log.append_async(_event(1)) == 1
        return refused, second

    refused, second = _serve(log, body)
    assert isinstance(refused, DependencyTimeoutError)
    assert second["writer"] == "process"
    _check_log(log, 2)


@pytest.mark.parametrize("answer", [b"not json", b'["ok", [1, 2]]', b'["ok", "x", 0.1]',
                                    b'["maybe"]', b"[]"])
def test_an_answer_out_of_protocol_fails_its_batch_and_replaces_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: bytes) -> None:
    log = _plog(tmp_path)

    async def body() -> tuple[BaseException | None, int]:
        channel = log._channel
        assert channel is not None
        assert await log.append_async(_event(0)) == 0
        waiter = log_mod._LoopWaiter(asyncio.get_running_loop())
        channel._pending.append(([waiter], 1, time.monotonic()))
        assert channel._answer(answer) is False
        assert channel._sock is None and not channel._pending
        monkeypatch.setattr(wp.LoopChannel, "respawn_interval_s", 0.0)
        return waiter.future.exception(), await log.append_async(_event(1))

    error, seq = _serve(log, body)
    assert isinstance(error, DependencyTimeoutError) and "out of protocol" in str(error)
    assert seq == 1
    _check_log(log, 2)


def test_a_new_writer_process_that_does_not_first_say_ready_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a child says ``["ready"]`` nothing it sends is taken as a batch's answer: a
    first frame that is anything else breaks the protocol, and the batch fails closed."""
    log = _plog(tmp_path)

    async def body() -> tuple[BaseException | None, bool, int]:
        channel = log._channel
        assert channel is not None and not channel.ready
        waiter = log_mod._LoopWaiter(asyncio.get_running_loop())
        channel._pending.append(([waiter], 1, time.monotonic()))
        answer = b'["ok", [0], 0.001]'
        channel._receive(wp._HEADER.pack(len(answer)) + answer)
        replaced = channel._sock is None and not channel._pending and not channel.ready
        monkeypatch.setattr(wp.LoopChannel, "respawn_interval_s", 0.0)
        return waiter.future.exception(), replaced, await log.append_async(_event(0))

    error, replaced, seq = _serve(log, body)
    assert isinstance(error, DependencyTimeoutError) and "out of protocol" in str(error)
    assert replaced and seq == 0
    _check_log(log, 1)


def test_the_writer_process_commits_at_most_max_frames_batches_per_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's loop (run here on a thread, over a real socket pair and database): five
    batches that arrived together with MAX_FRAMES = 2 commit as three transactions (2, 2,
    1; the batches of one transaction report the same commit time), in order, one chain."""
    import json
    import socket

    engine = _engine(tmp_path)
    monkeypatch.setattr(wp, "MAX_FRAMES", 2)
    ours, theirs = socket.socketpair()

    def serve() -> None:  # as main() does: the socket closes when _serve returns
        try:
            wp._serve(theirs)
        finally:
            theirs.close()

    child = threading.Thread(target=serve, daemon=True)

    def message(payload: bytes) -> bytes:
        return wp._HEADER.pack(len(payload)) + payload

    config = json.dumps({"url": engine.url.render_as_string(hide_password=False)}).encode()
    ours.sendall(message(config) + b"".join(
        message(wp.encode_batch([_event(2 * i), _event(2 * i + 1)])) for i in range(5)))
    ours.shutdown(socket.SHUT_WR)  # end-of-file: the child answers all five, then exits
    child.start()  # everything is already in the socket: the grouping is deterministic
    buf = bytearray()
    while data := ours.recv(1 << 16):
        buf += data
    child.join(timeout=10)
    ours.close()
    ready, *answers = [json.loads(f) for f in wp._frames(buf)]
    assert ready == ["ready"]  # once the database is open, before any batch's answer
    assert [a[0] for a in answers] == ["ok"] * 5
    assert [a[1] for a in answers] == [[2 * i, 2 * i + 1] for i in range(5)]
    times = [a[2] for a in answers]
    assert times[0] == times[1] and times[2] == times[3]
    assert len({times[0], times[2], times[4]}) == 3
    log = AuditLog(engine, system_clock, origin="test/audit", key_name="test/audit",
                   public_key_pem=PEM, sign=lambda _m: b"")
    _check_log(log, 10)
    log.close()


_TYPED_FIELDS = {
    **_EVENT_FIELDS,
    "op": st.sampled_from(list(Operation)),
    "outcome": st.sampled_from(list(Outcome)),
    "actor": st.builds(Actor, kind=st.sampled_from(list(ActorKind)),
                       id=st.text(min_size=1, max_size=30)),
    "request": st.none() | st.builds(
        RequestMetadata, kmsRequestId=st.none() | st.text(min_size=1, max_size=30),
        awsPrincipalArn=st.none() | st.just("arn:aws:iam::1:role/x"),
        kmsOperation=st.none() | st.just("Encrypt"), awsSourceVpce=st.none() | st.just("v")),
    # MappingProxyType({}): the XKS handler's detail for every request without one
    "detail": st.sampled_from([{}, {"reason": "x", "n": -5, "ok": True, "z": None},
                               {"Bad": 1}, {"f": 1.5}, {"k" * 65: 1}, {"r": "\ud800"},
                               MappingProxyType({}), MappingProxyType({"reason": "y"})]),
}


@given(st.fixed_dictionaries(_TYPED_FIELDS))
@settings(max_examples=500, deadline=None)
def test_plain_values_encode_as_the_objects_do(f: dict[str, object]) -> None:
    """Events of the exact types (every XKS and admin event, whose detail may be a
    read-only mapping) cross as plain values, and
    ``encode_values`` turns them into the bytes ``encode_fields`` gives for the objects, or
    declines and the objects' path raises (lone surrogates, bad versions, 65-char detail
    keys, ...)."""
    event = AuditEvent(**f)  # type: ignore[arg-type]
    (sent,) = pickle.loads(wp.encode_batch([event]))
    assert sent[0] == "v"
    expected = _bytes_or_none(encode_event, event)
    fast = encode_values(5, FAST_TIME, "a" * 64, *sent[1:])
    assert fast is None or fast == expected
    assert _bytes_or_none(wp._encode_wire, sent) == expected


def test_a_prespawned_writer_process_is_adopted_and_gets_its_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kms serve`` starts the writer process before its own imports (helper_channel.
    prespawn); the first channel adopts that child instead of starting another, and only
    then sends it the database URL."""
    monkeypatch.setattr(helper_channel, "_prespawned", {})
    helper_channel.prespawn(wp.LoopChannel.module)
    (_, proc), _ = helper_channel._prespawned[wp.LoopChannel.module]
    log = _plog(tmp_path)

    async def body() -> tuple[int | None, int]:
        assert log._channel is not None
        seq = await log.append_async(_event(0))
        return log._channel.pid, seq

    pid, seq = _serve(log, body)
    assert pid == proc.pid and seq == 0
    assert helper_channel._prespawned == {}
    _check_log(log, 1)
    assert proc.wait(timeout=10) == 0  # closed with the log, not left behind


def test_a_dead_or_less_withholding_prespawned_child_is_not_adopted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper_channel, "_prespawned", {})
    helper_channel.prespawn(wp.LoopChannel.module)
    (_, dead), _ = helper_channel._prespawned[wp.LoopChannel.module]
    dead.kill()
    dead.wait(timeout=10)
    log = _plog(tmp_path)

    async def body() -> int | None:
        assert await log.append_async(_event(0)) == 0
        assert log._channel is not None
        return log._channel.pid

    pid = _serve(log, body)
    assert pid is not None and pid != dead.pid
    # A child started with fewer secrets withheld than the channel asks for is refused.
    helper_channel.prespawn(wp.LoopChannel.module, withheld=frozenset())
    (_, open_env), _ = helper_channel._prespawned[wp.LoopChannel.module]
    assert helper_channel._adopt(wp.LoopChannel.module, helper_channel.SECRET_ENV) is None
    open_env.wait(timeout=10)  # not left running (killed, or out on end-of-file)


def test_kms_serve_prespawns_the_module_its_writer_channel_adopts() -> None:
    assert wp.LoopChannel.module == serve_cmd.AUDIT_WRITER_MODULE


def test_the_xks_front_doors_events_cross_as_plain_values() -> None:
    """The events kms serve's XKS path really makes (an answered encrypt, and one refused
    for a key that does not exist) go to the writer process as plain values, not as
    objects: every XKS event carries the handler's shared read-only empty
    detail, which once sent it the slow way (dataclass reducers and a copy of the event). In a
    process of its own (tests/audit/xks_event_probe.py): SoftHSM reads its token
    directory once per process."""
    done = subprocess.run([sys.executable, "-m", "tests.audit.xks_event_probe"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    events = json.loads(done.stdout.splitlines()[-1])  # after the service's log lines
    assert events == [[200, "ok", "micro", "v"], [404, "error", "absent", "v"]]
