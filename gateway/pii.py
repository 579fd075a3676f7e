"""PII redaction (issue 7 item 8): offline, regular expressions plus checksums, no models.

Per tenant, one of three modes (``gateway tenants create --pii`` / ``tenants set-pii``):

- ``off`` (the default): nothing is changed;
- ``forward``: the chat messages are redacted *before* they are forwarded, so the provider
  and the stored log see only the redacted text; the stored response is redacted too;
- ``logs``: the provider gets the original request, the stored prompt and response are
  redacted.

In both modes the answer the client receives is passed through unchanged (the stream is
never buffered or rewritten; in ``forward`` mode the provider never saw the original
values, so it cannot echo them).

Detectors, each replaced by a token:

=============  ==========================================================================
``[API_KEY]``  ``sk-…`` (OpenAI, Anthropic), ``AKIA…``/``ASIA…`` (AWS), ``ghp_…`` and the
               other GitHub prefixes, ``xox?-…`` (Slack), ``AIza…`` (Google), ``Bearer …``
               tokens, and long high-entropy tokens (32+ characters of at least three
               character classes with ≥ 4 bits of entropy per character; hex digests and
               ordinary words are not matched)
``[EMAIL]``    e-mail addresses
``[IBAN]``     IBANs whose length fits the country and whose mod-97 check is 1
``[CARD]``     13-19 digit card numbers that pass the Luhn check, in one run or grouped
               like cards are printed (4-4-4-4[-3] or 4-6-5, by spaces or dashes)
``[SSN]``      US social security numbers ``AAA-GG-SSSS`` (no 000/666/9xx area, no 00 group,
               no 0000 serial)
``[PHONE]``    ``+`` international numbers (8-15 digits) and North-American numbers written
               with separators (``555-123-4567``, ``(555) 123 4567``); a bare digit run is
               not taken for a phone number
=============  ==========================================================================

Redaction is applied to the ``content`` of chat messages (a string, or the ``text`` of
``{"type": "text"}`` parts), and to the assistant's content in responses.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

MODES = ("off", "forward", "logs")

# -- checksums ---------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: IBAN length per country (ISO 13616 registry, the common ones); others: 15-34.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    if IBAN_LENGTHS.get(iban[:2], len(iban)) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        number = "".join(str(int(ch, 36)) for ch in rearranged)
    except ValueError:
        return False
    return int(number) % 97 == 1


def shannon_entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_like_secret(token: str) -> bool:
    """A long random-looking token: 32+ characters, at least three character classes
    (lower, upper, digit, symbol), ≥ 4 bits of entropy per character."""
    if len(token) < 32:
        return False
    classes = (any(c.islower() for c in token) + any(c.isupper() for c in token)
               + any(c.isdigit() for c in token) + any(not c.isalnum() for c in token))
    return classes >= 3 and shannon_entropy(token) >= 4.0


# -- detectors ---------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9_])"  # left boundary: not inside a word
_E = r"(?![A-Za-z0-9_])"   # right boundary

API_KEY = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}"
    rf"|{_B}sk-[A-Za-z0-9_-]{{16,}}"
    rf"|{_B}(?:AKIA|ASIA)[0-9A-Z]{{16}}{_E}"
    rf"|{_B}gh[pousr]_[A-Za-z0-9]{{30,}}"
    rf"|{_B}github_pat_[A-Za-z0-9_]{{30,}}"
    rf"|{_B}xox[abprs]-[A-Za-z0-9-]{{10,}}"
    rf"|{_B}AIza[0-9A-Za-z_-]{{35}}")
EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
IBAN = re.compile(rf"{_B}[A-Z]{{2}}\d{{2}}(?: ?[A-Z0-9]{{4}}){{2,7}}(?: ?[A-Z0-9]{{1,4}})?{_E}")
CARD = re.compile(  # 13-19 digits in one run, or grouped 4-4-4-4(-3) or 4-6-4/5 (Amex)
    r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"
    r"|\d{4}([ -])\d{6}\2\d{4,5})(?!\d|-\d)")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,5}(?![\w-])"
    r"|(?<![\w(.-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])")
TOKEN = re.compile(r"(?<![A-Za-z0-9_+/=-])[A-Za-z0-9_+/=-]{32,}(?![A-Za-z0-9_+/=-])")


def _bearer_or_key(m: re.Match[str]) -> str:
    text = m.group(0)
    return ("Bearer " if text[:6].lower() == "bearer" else "") + "[API_KEY]"


def _checked(check: Callable[[str], bool], token: str) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        return token if check(m.group(0)) else m.group(0)
    return replace


def _card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15


#: (pattern, replacement) in the order applied: the specific before the generic.
DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    ("api_key", API_KEY, _bearer_or_key),
    ("email", EMAIL, lambda m: "[EMAIL]"),
    ("iban", IBAN, _checked(iban_valid, "[IBAN]")),
    ("phone", PHONE, _checked(_phone, "[PHONE]")),
    ("card", CARD, _checked(_card, "[CARD]")),
    ("ssn", SSN, lambda m: "[SSN]"),
    ("api_key", TOKEN, _checked(looks_like_secret, "[API_KEY]")),
)

# Cheap pre-checks: most text has no '@', few digits and no long tokens.
_HAS_DIGIT = re.compile(r"\d")


def redact_text(text: str) -> str:
    """``text`` with every detected value replaced by its token."""
    if not text:
        return text
    has_digit = _HAS_DIGIT.search(text) is not None
    for name, pattern, replace in DETECTORS:
        if name in ("iban", "card", "ssn", "phone") and not has_digit:
            continue
        if name == "email" and "@" not in text:
            continue
        text = pattern.sub(replace, text)
    return text


# -- chat bodies -------------------------------------------------------------------------


def _redact_content(content: Any) -> Any:
    if isinstance(content, str):
        return redact_text(content)
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = dict(part, text=redact_text(part["text"]))
            elif isinstance(part, str):
                part = redact_text(part)
            out.append(part)
        return out
    return content


def _redact_message(message: Any) -> Any:
    if isinstance(message, dict) and "content" in message:
        return dict(message, content=_redact_content(message["content"]))
    return message


def redact_request(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a chat-completion request with its messages' contents redacted."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    return dict(body, messages=[_redact_message(m) for m in messages])


def redact_completion(completion: Any) -> Any:
    """A copy of a chat completion (or a chunk) with the choices' contents redacted."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        return completion
    choices = []
    for choice in completion["choices"]:
        if isinstance(choice, dict):
            for field in ("message", "delta"):
                if field in choice:
                    choice = dict(choice, **{field: _redact_message(choice[field])})
            if isinstance(choice.get("text"), str):  # legacy completions
                choice = dict(choice, text=redact_text(choice["text"]))
        choices.append(choice)
    return dict(completion, choices=choices)


def redact_response_bytes(content: bytes) -> bytes:
    """The stored form of a plain response: JSON with its contents redacted, or, when it is
    not JSON, the whole text redacted."""
    import json

    try:
        parsed = json.loads(content)
    except ValueError:
        return redact_text(content.decode("utf-8", errors="replace")).encode()
    return json.dumps(redact_completion(parsed)).encode()
