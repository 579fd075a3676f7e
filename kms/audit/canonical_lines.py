"""Canonical record lines: the pattern that recognises them, and the scan of a block of
lines for runs of them (the verifier's fast path, kms/audit/verify.py).

A line the pattern covers is a canonical schema-1 record (the pattern's comment says why,
tests/audit/test_verify_fastpath.py checks it); a line it does not cover goes through the
verifier's JSON path, which names any problem. Beside ``re`` this imports only the record
schema's module, for the scan process (kms/audit/scan_process.py) to start quickly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from kms.audit.record import ACTOR_KINDS, OPERATIONS, is_real_day

__all__ = [
    "CANONICAL_BLOCK",
    "CANONICAL_LINE",
    "FAST_MAX_LINE",
    "LINE_BODY",
    "Run",
    "canonical_runs",
    "real_days",
]

# A pattern that matches only RFC 8785 encodings of schema-1 records with an empty
# `detail` (the common case), used to skip JSON parsing and re-encoding. Why a match is
# canonical: the keys are the exact schema key set, in sorted order (ASCII order equals
# UTF-16 order), each once; there is no whitespace; strings are ASCII with exactly the
# escapes JCS produces (\" \\ \b \t \n \f \r, \u00xx lowercase for the other
# controls, nothing else escaped, no raw controls or DEL); integers have no sign, zero
# padding or exponent and at most 15 digits (< 2**53); `op` and `outcome` are spelled out.
# Why a match is a schema-1 record (AuditRecord.from_json would accept it): the line is at
# most FAST_MAX_LINE bytes, so no string in it has more than 2,048 characters; the strings
# that must not be empty (actor.id, key_id, store, the request's fields) have at least one
# character; actor.kind is one of the four kinds; key_version is at least 1; an error is an
# errorName, and only on an error or denied outcome (a lookahead to the outcome); the time
# of day is a real one (the day is checked by real_days, which a pattern cannot do); the
# rest are fixed shapes. The one rule left to the chain check is record 0's prev (64
# zeros), which the verifier reports as a broken chain. Anything else, including valid
# canonical records this pattern does not cover, takes the JSON path.
# Strings are written "unrolled" (plain characters, then any number of escape + plain
# characters, possessive): the regex engine then runs through plain text in one tight
# loop instead of trying an alternation at every character.
# tests/audit/test_verify_fastpath.py checks it against rfc8785 and AuditRecord.from_json;
# tests/audit/test_verify_schema.py has a signed export for each rule.
FAST_MAX_LINE: Final = 2048
_JC = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"
_JS = (rb'"' + _JC + rb"*+(?:\\(?:[\"\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))" + _JC
       + rb'*+)*+"')
_JS1 = rb'"(?!")' + _JS[1:]  # a string of at least one character
_JS1_OR_NULL = rb"(?:null|" + _JS1 + rb")"
_JINT = rb"(?:0|[1-9][0-9]{0,14})"
_JINT_OR_NULL = rb"(?:null|" + _JINT + rb")"
_JPOS_OR_NULL = rb"(?:null|[1-9][0-9]{0,14})"
_ERROR_NAME = rb'"[A-Za-z][A-Za-z0-9]{0,63}"'
_OPS_RE = b"|".join(re.escape(op.encode()) for op in sorted(OPERATIONS, key=len, reverse=True))
_KINDS_RE = b"|".join(k.encode() for k in sorted(ACTOR_KINDS))
LINE_BODY: Final = (
    rb'\{"actor":\{"id":' + _JS1 + rb',"kind":"(?:' + _KINDS_RE + rb')"\},'
    rb'"context_hash":(?:null|"[0-9a-f]{64}"),'
    rb'"detail":\{\},'
    rb'"error":(?:null|' + _ERROR_NAME + rb'(?=[^\n]*?"outcome":"(?:error|denied)")),'
    rb'"key_id":' + _JS1_OR_NULL + rb","
    rb'"key_version":' + _JPOS_OR_NULL + rb","
    rb'"latency_us":' + _JINT_OR_NULL + rb","
    rb'"op":"(' + _OPS_RE + rb')",'
    rb'"outcome":"(ok|error|denied)",'
    rb'"prev":"([0-9a-f]{64})",'
    rb'"request":(?:null|\{"awsPrincipalArn":' + _JS1_OR_NULL
    + rb',"awsSourceVpce":' + _JS1_OR_NULL
    + rb',"kmsKeyArn":' + _JS1_OR_NULL
    + rb',"kmsOperation":' + _JS1_OR_NULL
    + rb',"kmsRequestId":' + _JS1_OR_NULL
    + rb',"kmsViaService":' + _JS1_OR_NULL + rb"\}),"
    rb'"seq":(' + _JINT + rb"),"
    rb'"store":' + _JS1_OR_NULL + rb","
    rb'"time":"(\d{4}-\d\d-\d\d)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z",'
    rb'"v":1\}'
)
# The length bound first: a lookahead to the end of the line.
_LINE_PATTERN: Final = (
    rb"(?=[^\n]{0," + str(FAST_MAX_LINE).encode() + rb"}(?:\n|\Z))" + LINE_BODY)
#: One record line; groups: 1 op, 2 outcome, 3 prev, 4 seq, 5 day (check with real_days).
CANONICAL_LINE: Final = re.compile(_LINE_PATTERN)
#: Any number of such lines, each followed by a newline (one regex call per read block),
#: without the length bound: canonical_runs checks the lines' lengths instead (the
#: lookahead scanned every line twice).
CANONICAL_BLOCK: Final = re.compile(
    rb"(?:" + re.sub(rb"(?<!\\)\((?!\?)", b"(?:", LINE_BODY) + rb"\n)*+")
# In a block that CANONICAL_BLOCK matches, each line holds exactly one `"prev":"` and one
# `"seq":` (a raw quote cannot occur inside a string, and no other object of the pattern
# has these keys), so these find the prev and seq of every line, in order; and each line
# ends with `"time":"YYYY-MM-DDThh:mm:ss.ffffffZ","v":1}`, so its day is at a fixed
# distance from its end.
_PREV_KEY: Final = '"prev":"'
_SEQ_IN_BLOCK: Final = re.compile(r'"seq":([0-9]+),')
_DAY: Final = slice(-35, -25)


def real_days(days: Iterable[str]) -> bool:
    """Whether every day (YYYY-MM-DD, as the pattern matched it) is a real date."""
    return all(is_real_day(day) for day in set(days))


class Run:
    """Lines ``first`` to ``stop - 1`` of a block all match CANONICAL_LINE: their prev
    fields (64 hex digits each, concatenated in order) and seq fields (text, in order)."""

    __slots__ = ("_breaks", "first", "prevs", "seqs", "stop")

    def __init__(self, first: int, stop: int, prevs: str, seqs: list[str]) -> None:
        self.first, self.stop, self.prevs, self.seqs = first, stop, prevs, seqs
        self._breaks: list[int] | None = None

    def prev(self, offset: int) -> str:
        """The prev field of line ``first + offset``."""
        return self.prevs[64 * offset:64 * offset + 64]

    def link_breaks(self, hexes: list[str]) -> list[int]:
        """Offsets x (ascending) in the run where line x does not follow line x - 1:
        its prev is not the hash of line x - 1 or its seq is not one more. ``hexes``
        holds the hash of every line of the block."""
        if self._breaks is None:
            prevs, seqs = self.prevs, self.seqs
            hx = hexes[self.first:self.stop]
            start = int(seqs[0])
            if (prevs[64:] == "".join(hx[:-1])
                    and seqs == list(map(str, range(start, start + len(seqs))))):
                self._breaks = []
            else:
                self._breaks = [x for x in range(1, len(seqs))
                                if prevs[64 * x:64 * x + 64] != hx[x - 1]
                                or int(seqs[x]) != int(seqs[x - 1]) + 1]
        return self._breaks


class _Span(NamedTuple):
    """Lines ``first`` to ``stop - 1`` of a block, its bytes ``pos`` to ``end``, all match
    CANONICAL_LINE."""

    first: int
    stop: int
    pos: int
    end: int


def _spans(buf: bytes, end: int, lines: list[bytes]) -> list[_Span]:
    """The spans of consecutive lines of ``buf[:end]`` (newline-terminated lines, ``lines``
    split at them) that match CANONICAL_LINE: one regex call per span, the lines' days
    and lengths from ``lines``."""
    match = CANONICAL_BLOCK.match
    spans: list[_Span] = []
    pos = 0
    line = 0
    while pos < end:
        stop = match(buf, pos, end).end()  # type: ignore[union-attr]  # `*+` always matches
        if stop > pos:
            # Most blocks are one span to the end: its lines are the rest of `lines`.
            count = len(lines) - line if stop == end else buf.count(b"\n", pos, stop)
            span_lines = lines[line:line + count]
            # A span with a day that does not exist (30 February) is left to the general
            # path, which names the line; likewise a span with a line over FAST_MAX_LINE
            # bytes (the block pattern has no length bound).
            if (max(map(len, span_lines)) <= FAST_MAX_LINE
                    and real_days({ln[_DAY].decode("ascii") for ln in span_lines})):
                spans.append(_Span(line, line + count, pos, stop))
            line += count
            pos = stop
        if pos < end:  # a line the pattern does not cover: the general path's
            pos = buf.index(b"\n", pos, end) + 1
            line += 1
    return spans


def _runs_of(buf: bytes, spans: list[_Span]) -> list[Run]:
    """The runs of ``spans`` of ``buf``: their lines' prev and seq fields."""
    runs: list[Run] = []
    for span in spans:
        text = buf[span.pos:span.end].decode("ascii")  # the pattern admits ASCII only
        # Each line has one `"prev":"` followed by the 64 hex digits the pattern checked:
        # splitting there is cheaper than a capturing findall.
        parts = text.split(_PREV_KEY)
        seqs = _SEQ_IN_BLOCK.findall(text)
        count = span.stop - span.first
        if len(parts) - 1 == count == len(seqs):  # always, else the general path's
            runs.append(Run(span.first, span.stop, "".join([p[:64] for p in parts[1:]]),
                            seqs))
    return runs


def canonical_runs(buf: bytes, end: int, lines: list[bytes]) -> list[Run]:
    """The runs of consecutive lines of ``buf[:end]`` (newline-terminated lines, ``lines``
    split at them) that match CANONICAL_LINE."""
    return _runs_of(buf, _spans(buf, end, lines))
