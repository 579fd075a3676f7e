"""The HSM worker process (kms/hsmproc/) against a real SoftHSM token: its answers, its
protocol, and what the server does when it dies, stalls or cannot open the token."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from hsm import AesUsage, GcmCiphertext, InvalidCiphertext, KeyNotFound, Pin
from hsm.calls import GcmCall, GcmDecrypt, GcmEncrypt
from hsm.pkcs11_hsm import Pkcs11Hsm
from kms.hsmproc import channel as ch
from kms.hsmproc.codec import (
    Answer,
    CodecError,
    decode_calls,
    decode_results,
    encode_calls,
    encode_results,
)
from kms.metrics import REGISTRY
from tests.conftest import TEST_PIN

T = TypeVar("T")
BOTH = {AesUsage.ENCRYPT, AesUsage.DECRYPT}


@pytest.fixture()
def token(make_token: Callable[[], str], softhsm_module: str) -> Iterator[tuple[str, Pkcs11Hsm]]:
    label = make_token()
    hsm = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    hsm.generate_aes_key("k1", BOTH)
    yield label, hsm
    hsm.close()


def run(softhsm_module: str, label: str, body: Callable[[ch.HsmWorker], Awaitable[T]],
        pin: str = TEST_PIN) -> T:
    """``body(worker)`` on a fresh loop with a started worker process."""
    async def main() -> T:
        worker = ch.HsmWorker(ch.WorkerConfig(softhsm_module, label, Pin(pin)),
                              asyncio.get_running_loop())
        worker.start()
        try:
            return await body(worker)
        finally:
            worker.close()

    return asyncio.run(main())


async def ready_pid(worker: ch.HsmWorker) -> int:
    """The worker's pid, once it is ready."""
    assert await worker.wait_ready(20)
    assert worker.pid is not None
    return worker.pid


async def outcome(worker: ch.HsmWorker, call: GcmCall) -> ch.Outcome:
    fut = worker.call(call)
    return ch.FALLBACK if fut is None else await fut


# -- the codec ---------------------------------------------------------------------------


def test_calls_and_results_round_trip() -> None:
    calls: list[GcmCall] = [GcmEncrypt("kms/a/v1/x", b"p" * 32, b"aad"),
                            GcmDecrypt("kms/b/v2/y", b"i" * 12, b"", b"t" * 16, b"")]
    assert decode_calls(encode_calls(calls)) == calls
    results: list[Answer] = [Answer(GcmCiphertext(b"i" * 12, b"c", b"t" * 16), 0.000123),
                             Answer(InvalidCiphertext("x"), 2.5)]
    back = decode_results(encode_results(results), calls)
    assert back[0] == results[0]
    assert isinstance(back[1].outcome, InvalidCiphertext)
    assert back[1].seconds == 2.5
    plain = decode_results(encode_results([Answer(b"plain", 0.0),
                                           Answer(KeyNotFound("k"), 0.0)]), calls[::-1])
    assert plain[0] == (b"plain", 0.0)
    assert isinstance(plain[1].outcome, KeyNotFound)


@pytest.mark.parametrize("payload", [
    b"\x01",  # truncated
    b"\x01\x03\x00\x00\x00\x09ab",  # a field past the end
    b"\x09\x00",  # an unknown call
    b"\x01\x02\x00\x00\x00\x00\x00\x00\x00\x00",  # an encrypt with two fields
])
def test_malformed_calls_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_calls(payload)


def test_results_that_do_not_match_their_calls_are_refused() -> None:
    enc: list[GcmCall] = [GcmEncrypt("k", b"p", b"")]
    with pytest.raises(CodecError):  # one answer too many
        decode_results(encode_results([Answer(b"a", 0.0), Answer(b"b", 0.0)]), enc)
    with pytest.raises(CodecError):  # a decrypt's shape for an encrypt
        decode_results(encode_results([Answer(b"plain", 0.0)]), enc)
    with pytest.raises(CodecError):  # an unknown code
        decode_results(b"\x07\x01\x00\x00\x00\x04\x00\x00\x00\x01", enc)
    with pytest.raises(CodecError):  # an answer without its duration
        decode_results(b"\x05\x00", enc)


# -- the worker process on a real token --------------------------------------------------


def test_the_worker_answers_like_the_server_s_own_session(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str) -> None:
    label, hsm = token
    made_here = hsm.encrypt("k1", b"from the server", b"aad")

    async def body(worker: ch.HsmWorker) -> None:
        assert await worker.wait_ready(20)
        # 40 calls in one loop iteration: one batch; each answer goes to its caller
        plains = [os.urandom(32) for _ in range(40)]
        cts = await asyncio.gather(*(outcome(worker, GcmEncrypt("k1", p, b"ctx-%d" % i))
                                     for i, p in enumerate(plains)))
        for i, (p, ct) in enumerate(zip(plains, cts, strict=True)):
            assert isinstance(ct, GcmCiphertext)
            assert hsm.decrypt("k1", ct.iv, ct.ciphertext, ct.tag, b"ctx-%d" % i) == p
        assert await outcome(worker, GcmDecrypt("k1", made_here.iv, made_here.ciphertext,
                                                made_here.tag, b"aad")) == b"from the server"
        # a bad tag is the client's doing: final, not made again by the server
        bad = await outcome(worker, GcmDecrypt("k1", made_here.iv, made_here.ciphertext,
                                               bytes(16), b"aad"))
        assert isinstance(bad, InvalidCiphertext)
        # anything else (here: no such key) is left to the server's own session
        assert await outcome(worker, GcmEncrypt("nope", b"p", b"")) is ch.FALLBACK
        assert worker.fallbacks == 1

    run(softhsm_module, label, body)


def _hsm_calls(operation: str, outcome: str) -> tuple[float, float]:
    """(count, sum of seconds) of kms_hsm_call_duration_seconds for these labels."""
    labels = {"operation": operation, "outcome": outcome}
    count = REGISTRY.get_sample_value("kms_hsm_call_duration_seconds_count", labels)
    total = REGISTRY.get_sample_value("kms_hsm_call_duration_seconds_sum", labels)
    return count or 0.0, total or 0.0


def test_the_worker_s_calls_are_in_the_hsm_call_histogram(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str) -> None:
    label, hsm = token
    made_here = hsm.encrypt("k1", b"x", b"aad")
    enc_before, dec_before = _hsm_calls("encrypt", "ok"), _hsm_calls("decrypt", "error")

    async def body(worker: ch.HsmWorker) -> None:
        assert await worker.wait_ready(20)
        outs = await asyncio.gather(*(outcome(worker, GcmEncrypt("k1", b"p", b""))
                                      for _ in range(5)))
        assert all(isinstance(o, GcmCiphertext) for o in outs)
        bad = await outcome(worker, GcmDecrypt("k1", made_here.iv, made_here.ciphertext,
                                               bytes(16), b"aad"))
        assert isinstance(bad, InvalidCiphertext)

    run(softhsm_module, label, body)
    enc_after, dec_after = _hsm_calls("encrypt", "ok"), _hsm_calls("decrypt", "error")
    assert enc_after[0] - enc_before[0] == 5
    assert 0 < enc_after[1] - enc_before[1] < 5.0  # the worker's own timing, in seconds
    assert dec_after[0] - dec_before[0] == 1


def test_a_killed_worker_is_replaced_and_its_calls_fall_back(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    label, _ = token
    monkeypatch.setattr(ch.HsmWorker, "respawn_interval_s", 0.2)

    async def body(worker: ch.HsmWorker) -> None:
        first = await ready_pid(worker)
        os.kill(first, signal.SIGKILL)
        # calls in flight when it died, and those until a new one is ready, fall back
        got = await outcome(worker, GcmEncrypt("k1", b"p", b""))
        assert got is ch.FALLBACK
        deadline = time.monotonic() + 20
        while not isinstance(await outcome(worker, GcmEncrypt("k1", b"p", b"")),
                             GcmCiphertext):
            assert time.monotonic() < deadline, "no new worker"
            await asyncio.sleep(0.05)
        assert worker.pid not in (None, first)

    run(softhsm_module, label, body)


def test_a_stalled_worker_is_given_up_on_within_the_wait_and_then_killed(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    label, _ = token
    monkeypatch.setattr(ch, "STALL_KILL_S", 0.5)

    async def body(worker: ch.HsmWorker) -> None:
        pid = await ready_pid(worker)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert await outcome(worker, GcmEncrypt("k1", b"p", b"")) is ch.FALLBACK
            waited = time.monotonic() - started
            assert ch.ANSWER_WAIT_S <= waited < ch.ANSWER_WAIT_S + 0.2
            # while a batch is overdue: at once
            assert worker.call(GcmEncrypt("k1", b"p", b"")) is None
            await asyncio.sleep(0.6)
            assert worker.call(GcmEncrypt("k1", b"p", b"")) is None  # past STALL_KILL_S
            assert worker.pid is None  # killed
        finally:
            os.kill(pid, signal.SIGCONT)

    run(softhsm_module, label, body)


def test_a_worker_that_catches_up_is_used_again(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str) -> None:
    label, _ = token

    async def body(worker: ch.HsmWorker) -> None:
        pid = await ready_pid(worker)
        os.kill(pid, signal.SIGSTOP)
        assert await outcome(worker, GcmEncrypt("k1", b"p", b"")) is ch.FALLBACK
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while worker.call(GcmEncrypt("k1", b"p", b"")) is None:  # the late answer arrives
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert isinstance(await outcome(worker, GcmEncrypt("k1", b"p", b"")), GcmCiphertext)
        assert worker.pid == pid

    run(softhsm_module, label, body)


def test_a_worker_that_cannot_open_the_token_is_never_ready(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str) -> None:
    label, _ = token

    async def body(worker: ch.HsmWorker) -> None:
        assert not await worker.wait_ready(3)
        assert await outcome(worker, GcmEncrypt("k1", b"p", b"")) is ch.FALLBACK

    run(softhsm_module, label, body, pin="not-the-pin")


def test_the_pin_reaches_the_worker_only_over_its_socket(
        token: tuple[str, Pkcs11Hsm], softhsm_module: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    label, _ = token
    monkeypatch.setenv("KMS_PKCS11_PIN", TEST_PIN)

    async def body(worker: ch.HsmWorker) -> None:
        pid = await ready_pid(worker)
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        assert b"KMS_PKCS11_PIN" not in environ
        assert TEST_PIN.encode() not in environ + cmdline

    run(softhsm_module, label, body)
