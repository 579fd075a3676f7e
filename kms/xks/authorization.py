"""Secondary authorization: optional per-key allow lists on XKS ``requestMetadata``.

A key's rules are a JSON object mapping a requestMetadata field to the list of values
allowed for it, e.g. ``{"awsPrincipalArn": ["arn:aws:iam::111122223333:role/app"]}``. A
field without a rule allows anything; a field with a rule must be present and listed.
Health is never subject to these rules (spec).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from kms.errors import AccessDeniedError, ValidationError
from kms.xks.wire import RequestMetadata

RULE_FIELDS = ("awsPrincipalArn", "kmsKeyArn", "kmsViaService", "awsSourceVpce", "awsSourceVpc")


def parse_rules(text: str) -> dict[str, list[str]]:
    """Validate a rules document (as given to ``kms keys set-rules``)."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        raise ValidationError("rules must be a JSON object") from None
    if not isinstance(doc, dict):
        raise ValidationError("rules must be a JSON object")
    rules: dict[str, list[str]] = {}
    for name, values in doc.items():
        if name not in RULE_FIELDS:
            raise ValidationError(f"unknown rule field {name!r}; allowed: {', '.join(RULE_FIELDS)}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"rule {name} must be a list of strings")
        rules[name] = values
    return rules


class DeniedByRule(AccessDeniedError):
    def __init__(self, rule: str) -> None:
        super().__init__(f"denied by the key's {rule} rule")
        self.rule = rule


def check(rules_json: str | None, metadata: RequestMetadata) -> None:
    """Raise DeniedByRule naming the first rule the request fails."""
    if not rules_json:
        return
    for name, allowed in _rules(rules_json):
        value = metadata.raw.get(name)
        if not isinstance(value, str) or value not in allowed:
            raise DeniedByRule(name)


@functools.lru_cache(maxsize=256)
def _rules(rules_json: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """A key's stored rules (written by ``parse_rules``), in RULE_FIELDS order; cached by
    their text, which changes when they do."""
    rules: Mapping[str, list[str]] = json.loads(rules_json)
    return tuple((name, frozenset(rules[name])) for name in RULE_FIELDS if name in rules)
