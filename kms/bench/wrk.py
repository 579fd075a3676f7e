"""HTTP load with wrk (C, event-driven): it replays pre-signed SigV4 requests, which the
XKS spec allows within the signature's 5-minute window, so the load generator does no
signing and is not the bottleneck."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Prepared:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def to_json(self) -> dict[str, float]:
        return {"rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "requests": self.requests,
                "errors": self.errors}


def _lua_string(data: str) -> str:
    level = 0
    while f"]{'=' * level}]" in data:
        level += 1
    return f"[{'=' * level}[{data}]{'=' * level}]"


def script(requests: Sequence[Prepared]) -> str:
    lines = ["local raw = {}"]
    for r in requests:
        headers = "{" + ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}"
                                  for k, v in r.headers.items()) + "}"
        lines.append(f"raw[#raw + 1] = {{{_lua_string(r.method)}, {_lua_string(r.path)}, "
                     f"{headers}, {_lua_string(r.body.decode())}}}")
    lines.append("""
local reqs = {}
local i = 0
init = function(args)
  for _, r in ipairs(raw) do reqs[#reqs + 1] = wrk.format(r[1], r[2], r[3], r[4]) end
  i = math.random(#reqs)
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
""")
    lines.append(_DONE)
    return "\n".join(lines)


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, requests: Sequence[Prepared], *, seconds: int, connections: int = 32,
        threads: int = 2) -> LoadResult:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "load.lua"
        path.write_text(script(requests))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
             "-s", str(path), url], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON "):])
    seconds_run = data["duration_us"] / 1e6
    return LoadResult(rps=data["requests"] / seconds_run, p50_ms=data["p50_us"] / 1000,
                      p99_ms=data["p99_us"] / 1000, requests=data["requests"],
                      errors=data["status_errors"] + data["socket_errors"])
