"""A second process for the revocation benchmark (``python -m kms.bench.revoke_probe KEY``):
prints READY once it uses the key, then ``REFUSED <unix time>`` at the first refusal."""

from __future__ import annotations

import sys
import time

from kms.errors import InvalidStateError
from kms.runtime import Runtime
from kms.settings import Settings


def main() -> int:
    key_id = sys.argv[1]
    rt = Runtime.open(Settings.from_env())
    enc = rt.keys.encrypt(key_id, b"probe", b"")
    print("READY", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            rt.keys.decrypt(key_id, enc.version, enc.ciphertext, b"")
        except InvalidStateError:
            print(f"REFUSED {time.time():.6f}", flush=True)
            rt.close()
            return 0
    print("NEVER", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
