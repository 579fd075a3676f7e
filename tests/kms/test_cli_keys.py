"""The key lifecycle through the real ``kms`` CLI: exit codes, messages, --json."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.server import KmsServer


@pytest.fixture(scope="module")
def kms() -> Iterator[KmsServer]:
    yield KmsServer()  # init only: the CLI works on the database and token directly


def run(kms: KmsServer, *args: str) -> tuple[int, str, str]:
    r = kms.cli(*args, check=False)
    return r.returncode, r.stdout, r.stderr


def test_lifecycle_through_the_cli(kms: KmsServer) -> None:
    code, out, _ = run(kms, "keys", "create", "k1", "--json")
    assert code == 0
    key = json.loads(out)
    assert (key["keyId"], key["state"], key["usage"]) == ("k1", "ENABLED", ["ENCRYPT", "DECRYPT"])

    assert run(kms, "keys", "create", "k1")[0:1] == (1,)
    assert "exists already" in run(kms, "keys", "create", "k1")[2]

    code, out, err = run(kms, "keys", "destroy", "k1", "--confirm", "k1")
    assert code == 1 and "cannot destroy a key in state ENABLED" in err and "Traceback" not in err

    assert run(kms, "keys", "revoke", "k1", "--reason", "drill")[0] == 0
    code, _, err = run(kms, "keys", "revoke", "k1", "--reason", "again")
    assert code == 1 and err.strip() == "kms: error: cannot revoke a key in state DISABLED"

    code, _, err = run(kms, "keys", "schedule-deletion", "k1", "--days", "3")
    assert code == 1 and "7 to 30 days" in err
    code, out, _ = run(kms, "keys", "schedule-deletion", "k1", "--days", "7", "--json")
    assert code == 0 and json.loads(out)["state"] == "PENDING_DELETION"
    code, _, err = run(kms, "keys", "enable", "k1")
    assert code == 1 and "PENDING_DELETION" in err
    code, out, _ = run(kms, "keys", "cancel-deletion", "k1", "--json")
    assert code == 0 and json.loads(out)["state"] == "DISABLED"

    code, _, err = run(kms, "keys", "destroy", "k1", "--confirm", "k2")
    assert code == 1 and "--confirm" in err
    code, out, _ = run(kms, "keys", "destroy", "k1", "--confirm", "k1", "--json")
    assert code == 0 and json.loads(out)["state"] == "DESTROYED"
    code, _, err = run(kms, "keys", "enable", "k1")
    assert code == 1 and "DESTROYED" in err


def test_usage_errors_and_bad_input(kms: KmsServer) -> None:
    assert run(kms, "keys")[0] == 2
    assert run(kms, "keys", "revoke", "x")[0] == 2  # --reason is required
    code, _, err = run(kms, "keys", "create", "bad id!")
    assert code == 1 and "A-Za-z0-9._-" in err
    code, _, err = run(kms, "keys", "create", "u", "--usage", "SIGN")
    assert code == 1 and "ENCRYPT,DECRYPT" in err
    code, out, _ = run(kms, "keys", "create", "impotent", "--usage", "", "--json")
    assert code == 0 and json.loads(out)["usage"] == []
    code, _, err = run(kms, "keys", "show", "missing")
    assert code == 1 and err.startswith("kms: error:")


def test_rotation_and_list(kms: KmsServer) -> None:
    run(kms, "keys", "create", "r")
    code, out, _ = run(kms, "keys", "rotate", "r", "--json")
    assert code == 0 and json.loads(out)["primaryVersion"] == 2
    code, out, _ = run(kms, "keys", "list", "--json")
    ids = [k["keyId"] for k in json.loads(out)["keys"]]
    assert "r" in ids
