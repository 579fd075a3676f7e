"""Threads, asyncio and a vanishing token against a real SoftHSM2 token."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hsm import AesUsage, HealthStatus, HsmUnavailable, Pin, RebuildDeferred, pkcs11_hsm
from hsm.aio import AsyncHsm
from hsm.pkcs11_hsm import Pkcs11Hsm, no_rebuild
from tests.conftest import TEST_PIN


def token_directory(softhsm_dir: Path, label: str) -> Path:
    """The per-token subdirectory SoftHSM made for ``label``."""
    for sub in (softhsm_dir / "tokens").iterdir():
        obj = sub / "token.object"
        if obj.exists() and label.encode() in obj.read_bytes():
            return sub
    raise AssertionError(f"no token directory for {label}")


def test_threads_and_asyncio_tasks_share_one_token(
    make_token: Callable[[], str], softhsm_module: str
) -> None:
    hsm = Pkcs11Hsm(softhsm_module, make_token(), Pin(TEST_PIN), pool_size=4)
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    deadline = time.monotonic() + 3.0
    errors: list[str] = []
    counts = {"threads": 0, "tasks": 0}
    count_lock = threading.Lock()

    def round_trip(tag: str, i: int) -> None:
        pt = f"{tag}-{i}".encode() * 3
        aad = f"aad-{tag}".encode()
        ct = hsm.encrypt("k", pt, aad)
        if hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, aad) != pt:
            errors.append(f"{tag}: wrong plaintext")

    def worker(n: int) -> None:
        i = 0
        try:
            while time.monotonic() < deadline:
                round_trip(f"thread{n}", i)
                i += 1
        except Exception as exc:  # the assertion below reports it
            errors.append(repr(exc))
        with count_lock:
            counts["threads"] += i

    async def tasks() -> None:
        ahsm = AsyncHsm(hsm, workers=4)

        async def task(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                pt = f"task{n}-{i}".encode()
                ct = await ahsm.call(hsm.encrypt, "k", pt, b"async")
                out = await ahsm.call(hsm.decrypt, "k", ct.iv, ct.ciphertext, ct.tag, b"async")
                if out != pt:
                    errors.append(f"task{n}: wrong plaintext")
                i += 1
            counts["tasks"] += i

        await asyncio.gather(*(task(n) for n in range(200)))
        ahsm.shutdown()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    print(f"round trips: threads={counts['threads']} asyncio={counts['tasks']}")
    assert errors == []
    assert counts["threads"] > 100 and counts["tasks"] > 100


def test_token_disappears_and_comes_back(
    make_token: Callable[[], str], softhsm_module: str, softhsm_dir: Path, tmp_path: Path
) -> None:
    label = make_token()
    hsm = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    hsm.generate_aes_key("health", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    ct = hsm.encrypt("k", b"before", b"")
    assert hsm.probe("health").status is HealthStatus.ACTIVE

    directory = token_directory(softhsm_dir, label)
    parked = tmp_path / "parked"
    os.rename(directory, parked)
    try:
        with pytest.raises(HsmUnavailable):
            hsm.encrypt("k", b"during", b"")
        with pytest.raises(HsmUnavailable):
            hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, b"")
        start = time.monotonic()
        report = hsm.probe("health")
        assert report.status is HealthStatus.UNAVAILABLE
        assert time.monotonic() - start < 0.25  # fails fast, no hang
    finally:
        os.rename(parked, directory)

    # No restart: the layer reinitializes and logs in again by itself.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            assert hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, b"") == b"before"
            break
        except HsmUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert hsm.probe("health").status is HealthStatus.ACTIVE
    assert hsm.reconnects >= 1


def test_no_rebuild_defers_a_due_rebuild_to_the_caller(
    make_token: Callable[[], str], softhsm_module: str, softhsm_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event loop must not wait for a module re-initialization: inside no_rebuild() a
    call that would rebuild the connection raises RebuildDeferred at once (nothing tried);
    while the rebuild is backing off it fails fast as usual; outside, the call rebuilds."""
    backoff = 1.0  # long enough that the steps below cannot outlast it on a slow machine
    monkeypatch.setattr(pkcs11_hsm, "RECONNECT_BACKOFF_S", backoff)
    label = make_token()
    hsm = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    with no_rebuild():
        assert hsm.decrypt("k", *_parts(hsm.encrypt("k", b"fine", b"")), b"") == b"fine"

    directory = token_directory(softhsm_dir, label)
    parked = tmp_path / "parked"
    os.rename(directory, parked)
    try:
        with pytest.raises(HsmUnavailable):
            hsm.encrypt("k", b"during", b"")  # finds the token gone: connection broken
        with no_rebuild(), pytest.raises(RebuildDeferred):
            hsm.encrypt("k", b"during", b"")  # a rebuild is due: deferred, not tried
        with pytest.raises(HsmUnavailable):
            hsm.encrypt("k", b"during", b"")  # outside: the rebuild fails, back-off starts
        with no_rebuild(), pytest.raises(HsmUnavailable):
            hsm.encrypt("k", b"during", b"")  # backing off: fails fast, not deferred
    finally:
        os.rename(parked, directory)
    time.sleep(backoff + 0.05)
    before = hsm.reconnects
    with no_rebuild(), pytest.raises(RebuildDeferred):
        hsm.encrypt("k", b"after", b"")
    assert hsm.reconnects == before  # nothing was rebuilt inside no_rebuild()
    ct = hsm.encrypt("k", b"after", b"")
    assert hsm.reconnects == before + 1
    with no_rebuild():
        assert hsm.decrypt("k", *_parts(ct), b"") == b"after"


def _parts(ct: object) -> tuple[bytes, bytes, bytes]:
    return ct.iv, ct.ciphertext, ct.tag  # type: ignore[attr-defined]


def test_no_rebuild_does_not_wait_behind_another_threads_rebuild(
    make_token: Callable[[], str], softhsm_module: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event loop must not wait for a rebuild that a worker thread is doing either: it
    holds the module lock for the whole C_Finalize/C_Initialize and login (the likely cause
    of one XKS answer at 348 ms, past the 250 ms budget, in a CI run). Inside no_rebuild()
    a call then raises RebuildDeferred at once (and is rerun on a worker thread); a short
    hold of the lock by an ordinary call is waited for."""
    label = make_token()
    hsm = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    real = Pkcs11Hsm._reinitialize
    started = threading.Event()

    def slow_reinitialize(self: Pkcs11Hsm) -> None:
        started.set()
        time.sleep(0.4)  # a slow module re-initialization
        real(self)

    monkeypatch.setattr(Pkcs11Hsm, "_reinitialize", slow_reinitialize)
    assert hsm._conn is not None
    hsm._conn.broken = True  # as after a device error: the next call rebuilds
    worker = threading.Thread(target=lambda: hsm.encrypt("k", b"rebuilds", b""))
    worker.start()
    assert started.wait(5)
    t0 = time.monotonic()
    with no_rebuild(), pytest.raises(RebuildDeferred):
        hsm.encrypt("k", b"loop", b"")
    assert time.monotonic() - t0 < 0.1  # not the 0.4 s the rebuild holds the lock
    worker.join(10)
    assert hsm.reconnects == 1
    with no_rebuild():  # rebuilt: the loop's calls run inline again
        assert hsm.decrypt("k", *_parts(hsm.encrypt("k", b"back", b"")), b"") == b"back"

    # A lock held briefly (an ordinary call on another thread) is waited for, not deferred.
    lock = pkcs11_hsm.module_lock(softhsm_module)
    held = threading.Event()

    def hold_briefly() -> None:
        with lock:
            held.set()
            time.sleep(0.001)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    assert held.wait(5)
    with no_rebuild():
        assert hsm.decrypt("k", *_parts(hsm.encrypt("k", b"waited", b"")), b"") == b"waited"
    holder.join(5)

    # Held past LOOP_LOCK_WAIT_S without a rebuild (a slow call): deferred, after the wait.
    release = threading.Event()

    def hold_long() -> None:
        with lock:
            held.set()
            release.wait(5)

    held.clear()
    holder = threading.Thread(target=hold_long)
    holder.start()
    assert held.wait(5)
    t0 = time.monotonic()
    try:
        with no_rebuild(), pytest.raises(RebuildDeferred):
            hsm.encrypt("k", b"loop", b"")
        assert time.monotonic() - t0 < 0.1
    finally:
        release.set()
        holder.join(5)
