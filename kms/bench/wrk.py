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
  local totals = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do totals[k] = (totals[k] or 0) + v end
    end
  end
  local answers = {}
  for k, v in pairs(totals) do answers[#answers + 1] = string.format('"%s":%d', k, v) end
  io.write(string.format(
    '\nWRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%d,"answers":{%s}}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    latency.mean,
    table.concat(answers, ",")))
  if want_quantiles then
    -- wrk's stats do not expose their counts to scripts (Debian's wrk 4.1), so the run's
    -- distribution goes out as its quantile function on a grid, finest in the tail
    local out = {}
    for _, p in ipairs(QUANTILE_GRID) do
      -- wrk's percentile(100) can overshoot its count and answer 0: the max is exact
      local v = p < 100 and latency:percentile(p) or latency.max
      out[#out + 1] = string.format("[%.3f,%d]", p, v)
    end
    io.write('WRKQUANT [' .. table.concat(out, ",") .. ']\n')
  end
end
"""
# Percent points at which a run reports its latency quantiles (for merging runs): every 1 %
# to 90, every 0.1 % to 99, every 0.01 % to 99.99, every 0.001 % to 100.
QUANTILE_GRID: tuple[float, ...] = tuple(sorted(
    {float(p) for p in range(1, 91)} | {90 + i / 10 for i in range(1, 91)}
    | {99 + i / 100 for i in range(1, 100)} | {99.99 + i / 1000 for i in range(1, 11)}))
# Optional: count answers by status and XKS errorName (wrk then reads every body, which
# costs it some speed), and pace each connection (a delay before each request, in ms).
_CLASSIFY = r"""
statuses = {}
response = function(status, headers, body)
  local k = tostring(status)
  if status ~= 200 then
    local name = string.match(body or "", '"errorName"%s*:%s*"(%w+)"')
    k = k .. " " .. (name or "?")
  end
  statuses[k] = (statuses[k] or 0) + 1
end
"""
_THREADS = r"""
threads = {}
setup = function(thread) table.insert(threads, thread) end
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
    p999_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    answers: dict[str, int] | None = None  # "200", "400 InvalidStateException", ...
    # (percent, latency ms) at each point of QUANTILE_GRID, when asked for: runs can then
    # be merged into one distribution (merged_percentile_ms).
    quantiles: tuple[tuple[float, float], ...] | None = None

    def to_json(self) -> dict[str, float]:
        return {"rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "requests": self.requests,
                "errors": self.errors}


def _lua_string(data: str) -> str:
    level = 0
    while f"]{'=' * level}]" in data:
        level += 1
    return f"[{'=' * level}[{data}]{'=' * level}]"


def script(requests: Sequence[Prepared], *, classify: bool = False,
           delay_ms: float = 0.0, quantiles: bool = False) -> str:
    grid = ", ".join(f"{p:.3f}" for p in QUANTILE_GRID)
    lines = ["local raw = {}", _THREADS, f"QUANTILE_GRID = {{{grid}}}",
             f"want_quantiles = {'true' if quantiles else 'false'}"]
    if classify:
        lines.append(_CLASSIFY)
    if delay_ms > 0:  # uniform in [delay/2, 3 delay/2]: connections do not fire in step
        lo, hi = max(0, round(delay_ms / 2)), max(1, round(delay_ms * 3 / 2))
        lines.append(f"delay = function() return math.random({lo}, {hi}) end")
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
        threads: int = 2, classify: bool = False, delay_ms: float = 0.0,
        quantiles: bool = False) -> LoadResult:
    """``delay_ms`` paces each connection: about connections * 1000 / (delay_ms + latency)
    requests/s in all."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "load.lua"
        path.write_text(script(requests, classify=classify, delay_ms=delay_ms,
                               quantiles=quantiles))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
             "-s", str(path), url], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON "):])
    quant = None
    if quantiles:
        raw = next(x for x in out.splitlines() if x.startswith("WRKQUANT "))
        quant = tuple((float(p), us / 1000) for p, us in json.loads(raw[len("WRKQUANT "):]))
    seconds_run = data["duration_us"] / 1e6
    return LoadResult(rps=data["requests"] / seconds_run, p50_ms=data["p50_us"] / 1000,
                      p99_ms=data["p99_us"] / 1000, requests=data["requests"],
                      errors=data["status_errors"] + data["socket_errors"],
                      p999_ms=data["p999_us"] / 1000, max_ms=data["max_us"] / 1000,
                      mean_ms=data["mean_us"] / 1000,
                      answers=data["answers"] if classify else None, quantiles=quant)


def merged_percentile_ms(results: Sequence[LoadResult], q: float) -> float:
    """The ``q`` quantile (0-1) of the latencies of all ``results`` together (runs made
    with ``quantiles=True``). Each run's requests between two grid points of its quantile
    function are counted at the upper point's latency, so the answer is never below the
    exact one, and above it by at most a grid step of the run's own distribution."""
    mass: list[tuple[float, float]] = []  # (latency ms, requests)
    for r in results:
        if r.quantiles is None:
            raise ValueError("a run without its latency quantiles")
        below = 0.0
        for percent, ms in r.quantiles:
            mass.append((ms, (percent - below) / 100 * r.requests))
            below = percent
    total = sum(n for _, n in mass)
    if total <= 0:
        raise ValueError("no latencies recorded")
    seen = 0.0
    for ms, n in sorted(mass):
        seen += n
        if seen >= q * total - 1e-9:
            return ms
    return max(ms for ms, _ in mass)
