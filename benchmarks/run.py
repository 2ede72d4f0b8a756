"""Run the benchmark scenarios: ``python -m benchmarks.run [--quick] [--scenario N]``.

For each scenario this starts the synthetic SCIM server and the fake Insights as
separate processes, then runs, one after the other, the connector
(``elimity-connector run scim``), the baseline (``benchmarks.baseline``) and the
reference cost (``benchmarks.reference``), each as a child process. Per child it
measures wall time, CPU time (user + system) and peak RSS from ``os.wait4``, and
reads the server's request and 429 counters and the sink's view of the snapshot.
It prints a table per scenario and the ratios the targets need, and writes
everything to ``benchmarks/results/<date>.json``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.sink import scan_snapshot

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CHILD_TIMEOUT = 1800.0
READY_TIMEOUT = 900.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Size:
    """A directory size and how the server serves it."""

    users: int
    groups: int
    memberships: int
    page_cap: int
    latency: float = 0.0
    limit: int = 64

    def label(self) -> str:
        """Return a short description."""
        text = f"{self.users:,} users, {self.groups:,} groups, "
        text += f"{self.memberships:,} memberships, page cap {self.page_cap}"
        if self.latency:
            text += f", {self.latency * 1000:.0f} ms/request"
        return text + f", server limit {self.limit}"


@dataclass
class Scenario:
    """One benchmark scenario: sizes, what to run and how often."""

    number: int
    name: str
    sizes: list[Size]
    repeat: int
    baseline: bool = True
    reference: bool = True
    reference_repeat: int = 1  # timings inside the one reference process
    outputs: tuple[str, ...] = ("sink",)
    notes: list[str] = field(default_factory=list)


def scenarios(quick: bool) -> dict[int, Scenario]:
    """Return the scenarios (scenario 1 at a tenth of its size when ``quick``)."""
    if quick:
        size = Size(10_000, 200, 20_000, 100, latency=0.2, limit=8)
        return {1: Scenario(1, "latency-bound (quick, 1/10 size)", [size], repeat=3)}
    latency = Size(100_000, 2_000, 200_000, 100, latency=0.2, limit=8)
    return {
        1: Scenario(1, "latency-bound", [latency], repeat=3),
        2: Scenario(
            2,
            "CPU-bound",
            [Size(200_000, 2_000, 400_000, 1000)],
            repeat=3,
            reference_repeat=3,
        ),
        3: Scenario(
            3,
            "memory",
            [
                Size(100_000, 1_000, 200_000, 1000),
                Size(1_000_000, 10_000, 2_000_000, 1000),
            ],
            repeat=1,
            outputs=("file", "sink"),
            baseline=False,
            reference=False,
            notes=[
                "connector only; the baseline's and the reference's memory show in "
                "scenario 2 (they hold the whole graph)"
            ],
        ),
        4: Scenario(
            4,
            "rate-limited",
            [Size(100_000, 2_000, 200_000, 100, latency=0.2, limit=2)],
            repeat=1,
            baseline=False,
            reference=False,
            notes=["the baseline is sequential: scenario 1's baseline applies"],
        ),
    }


def clean_env() -> dict[str, str]:
    """Return the environment for children: no proxies, no inherited settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if "proxy" not in key.lower() and not key.startswith("ELIMITY_")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Service:
    """A helper process (server or sink) that prints one JSON line when ready."""

    def __init__(self, module: str, args: Sequence[str], log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--stop-on-eof", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
            env=clean_env(),
        )
        assert self.proc.stdout is not None  # noqa: S101 - piped above
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT):
                self.close()
                msg = f"{module} did not start within {READY_TIMEOUT:.0f} s; see {log}"
                raise RuntimeError(msg)
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            msg = f"{module} exited before it was ready; see {log}"
            raise RuntimeError(msg)
        self.info: dict[str, Any] = json.loads(line)
        self.url = f"http://127.0.0.1:{self.info['port']}"
        self.process = psutil.Process(self.proc.pid)

    def get(self, path: str) -> dict[str, Any]:
        """GET a benchmark endpoint."""
        with _OPENER.open(self.url + path, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def reset(self) -> None:
        """Zero the service's counters."""
        request = urllib.request.Request(self.url + "/_bench/reset", method="POST")
        with _OPENER.open(request, timeout=30):
            pass

    def cpu(self) -> float:
        """Return the service's CPU seconds so far."""
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        """Stop the service: close its stdin, then terminate it if it lingers."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@dataclass
class Measurement:
    """What one child process cost."""

    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    exit_code: int
    stdout: str
    stderr_tail: str


def measure(
    cmd: Sequence[str], env: dict[str, str], log_dir: Path, name: str
) -> Measurement:
    """Run a child to completion and return its wall, CPU and peak RSS."""
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT
        )
        lock = threading.Lock()
        done = False

        def kill() -> None:
            with lock:
                if not done:
                    proc.kill()

        timer = threading.Timer(CHILD_TIMEOUT, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        with lock:
            done = True
            proc.returncode = os.waitstatus_to_exitcode(status)
        timer.cancel()
    stderr = err_path.read_text(errors="replace").splitlines()
    return Measurement(
        wall_s=round(wall, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        user_s=round(usage.ru_utime, 3),
        sys_s=round(usage.ru_stime, 3),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        exit_code=proc.returncode,
        stdout=out_path.read_text(errors="replace").strip()[-2000:],
        stderr_tail="\n".join(stderr[-5:]),
    )


def _wait_for_snapshot(sink: Service, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = sink.get("/_bench/stats")
        if stats["snapshots"] and not stats["pending"]:
            snapshot: dict[str, Any] = stats["last_snapshot"] or {}
            return snapshot
        if not stats["snapshots"] and stats["logs"]:
            return {}  # the run failed before pushing
        time.sleep(0.2)
    return {"error": "no snapshot scanned in time"}


def _busy_cpu() -> float:
    times = psutil.cpu_times()
    parts = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(times, part, 0.0) for part in parts))


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _ours(server: Service, sink: Service) -> list[float]:
    return [server.cpu(), sink.cpu(), _own_cpu()]


def run_child(
    kind: str,
    cmd: Sequence[str],
    env: dict[str, str],
    server: Service,
    sink: Service,
    log_dir: Path,
    name: str,
    output_file: Path | None = None,
) -> dict[str, Any]:
    """Measure one child against freshly reset counters; collect server and sink."""
    server.reset()
    sink.reset()
    load = os.getloadavg()[0]
    ours = _ours(server, sink)
    busy = _busy_cpu()
    measurement = measure(cmd, env, log_dir, name)
    busy = _busy_cpu() - busy
    ours = [
        after - before for after, before in zip(_ours(server, sink), ours, strict=True)
    ]
    stats = server.get("/_bench/stats")
    result: dict[str, Any] = {"kind": kind, **asdict(measurement)}
    result["server_cpu_s"] = round(ours[0], 3)
    # CPU that other processes on the machine used while the child ran: when it
    # is not small, the machine was shared and wall times are not trustworthy.
    other = max(0.0, busy - measurement.cpu_s - sum(ours))
    result["other_cpu_s"] = round(other, 1)
    result["load_before"] = round(load, 2)
    result["requests"] = stats.get("requests", 0)
    result["throttled"] = stats.get("throttled", 0)
    result["max_in_flight"] = stats.get("max_in_flight", 0)
    result["response_mb"] = round(stats.get("bytes_sent", 0) / 1e6, 1)
    result["server_stats"] = stats
    if output_file is not None:
        if output_file.exists():
            with output_file.open("rb") as handle:
                chunks = iter(lambda: handle.read(1 << 20), b"")
                result["snapshot"] = scan_snapshot(chunks, compressed=False)
            output_file.unlink()
        else:
            result["snapshot"] = {"error": "no output file"}
    elif measurement.exit_code == 0:
        result["snapshot"] = _wait_for_snapshot(sink)
    else:
        result["snapshot"] = {}
    if measurement.stdout.startswith("{"):
        with contextlib.suppress(ValueError):
            result["report"] = json.loads(measurement.stdout.splitlines()[-1])
    return result


def connector_command(page_cap: int, output: Path | None) -> list[str]:
    """Return the connector command line."""
    binary = Path(sys.executable).parent / "elimity-connector"
    found = str(binary) if binary.exists() else shutil.which("elimity-connector")
    if found is None:
        msg = "elimity-connector is not installed in this Python environment"
        raise RuntimeError(msg)
    cmd = [found, "run", "scim", "--set", "concurrency=8"]
    cmd += ["--set", f"pageSize={page_cap}"]
    if output is not None:
        cmd += ["--output", str(output)]
    return cmd


def run_size(
    scenario: Scenario,
    size: Size,
    *,
    repeat: int,
    baseline_repeat: int,
    reference_repeat: int,
    log_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Start a server and a sink for one size and run every client against them."""
    tag = f"s{scenario.number}-{size.users}"
    say(f"  starting the SCIM server ({size.label()}) ...")
    server = Service(
        "benchmarks.scim_server",
        [
            f"--users={size.users}",
            f"--groups={size.groups}",
            f"--memberships={size.memberships}",
            f"--page-cap={size.page_cap}",
            f"--latency={size.latency}",
            f"--limit={size.limit}",
        ],
        log_dir / f"{tag}-server.err",
    )
    sink = Service("benchmarks.sink", [], log_dir / f"{tag}-sink.err")
    say(
        f"  server ready in {server.info['startup_s']} s "
        f"({server.info['user_json_avg_bytes']} B/user, "
        f"{server.info['user_json_mb']} MB users + "
        f"{server.info['group_json_mb']} MB groups, RSS {server.info['rss_mb']} MB)"
    )
    runs: list[dict[str, Any]] = []
    try:
        env = clean_env()
        env.update(
            ELIMITY_SCIM_BASE_URL=server.info["base_url"],
            ELIMITY_SCIM_PASSWORD="bench-token",
            ELIMITY_INSIGHTS_URL=sink.url,
            ELIMITY_SOURCE_ID="1",
            ELIMITY_INSIGHTS_TOKEN="bench-insights-token",
            ELIMITY_LOG_LEVEL="INFO",
        )
        with tempfile.TemporaryDirectory(prefix="scim-bench-") as tmp:
            for output in scenario.outputs:
                for index in range(repeat):
                    file = Path(tmp) / "snapshot.json" if output == "file" else None
                    kind = f"connector ({output})" if output == "file" else "connector"
                    say(f"  {kind} run {index + 1}/{repeat} ...")
                    run = run_child(
                        kind,
                        connector_command(size.page_cap, file),
                        env,
                        server,
                        sink,
                        log_dir,
                        f"{tag}-connector-{output}-{index}",
                        output_file=file,
                    )
                    say("    " + _brief(run))
                    runs.append(run)
        plain = clean_env()
        for index in range(baseline_repeat):
            say(f"  baseline run {index + 1}/{baseline_repeat} ...")
            run = run_child(
                "baseline",
                [
                    sys.executable,
                    "-m",
                    "benchmarks.baseline",
                    "--base-url",
                    server.info["base_url"],
                    "--insights-url",
                    sink.url,
                ],
                plain,
                server,
                sink,
                log_dir,
                f"{tag}-baseline-{index}",
            )
            say("    " + _brief(run))
            runs.append(run)
        if reference_repeat:
            say(f"  reference cost (each part timed {reference_repeat}×) ...")
            run = run_child(
                "reference",
                [
                    sys.executable,
                    "-m",
                    "benchmarks.reference",
                    "--base-url",
                    server.info["base_url"],
                    "--insights-url",
                    sink.url,
                    f"--repeat={reference_repeat}",
                ],
                plain,
                server,
                sink,
                log_dir,
                f"{tag}-reference",
            )
            report = run.get("report", {})
            say(f"    reference cost {report.get('reference_cpu_s')} s CPU")
            runs.append(run)
    finally:
        server.close()
        sink.close()
    return {"size": asdict(size), "server": server.info, "runs": runs}


def _brief(run: dict[str, Any]) -> str:
    snap = run.get("snapshot") or {}
    text = (
        f"exit {run['exit_code']}, wall {run['wall_s']:.1f} s,"
        f" CPU {run['cpu_s']:.1f} s,"
        f" peak RSS {run['peak_rss_mb']:.0f} MB, {run['requests']} requests"
        f" ({run['throttled']} × 429), snapshot {snap.get('users', '?')} users /"
        f" {snap.get('groups', '?')} groups / {snap.get('relationships', '?')} rels"
    )
    if run["exit_code"] != 0:
        text += "\n    " + run["stderr_tail"].replace("\n", "\n    ")
    return text


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return medians per kind of run."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        kinds.setdefault(run["kind"], []).append(run)
    summary = {}
    for kind, group in kinds.items():
        ok = [r for r in group if r["exit_code"] == 0] or group
        row: dict[str, Any] = {"runs": len(group), "failed": len(group) - len(ok)}
        for key in (
            "wall_s",
            "cpu_s",
            "peak_rss_mb",
            "requests",
            "throttled",
            "server_cpu_s",
            "other_cpu_s",
            "response_mb",
        ):
            row[key] = statistics.median(r[key] for r in ok)
        row["contended"] = sum(
            1 for r in group if r["other_cpu_s"] > 0.1 * max(r["wall_s"], 1.0)
        )
        snap = ok[-1].get("snapshot") or {}
        for key in ("users", "groups", "relationships", "indirect", "json_bytes"):
            row[key] = snap.get(key)
        row["compressed_bytes"] = snap.get("compressed_bytes")
        if kind == "reference":
            for key in (
                "reference_cpu_s",
                "decode_cpu_s",
                "encode_compress_cpu_s",
                "client_join_cpu_s",
            ):
                row[key] = statistics.median(
                    r.get("report", {}).get(key, math.nan) for r in ok
                )
        summary[kind] = row
    return summary


def targets(
    scenario: Scenario, quick: bool, sizes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Compute the ratios each target needs."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, bound: str, ok: bool | None) -> None:
        checks.append({"target": name, "value": value, "bound": bound, "met": ok})

    first = sizes[0]
    size = Size(**first["size"])
    medians = first["summary"]
    connector = medians.get("connector")
    if scenario.number in (1, 4) and connector:
        concurrency = min(8, size.limit)
        pages = math.ceil(size.users / size.page_cap)
        pages += math.ceil(size.groups / size.page_cap)
        floor = pages * size.latency / concurrency
        first["floor_s"] = round(floor, 3)
        first["floor_pages"] = pages
        ratio = connector["wall_s"] / floor
        if scenario.number == 1:
            check("connector wall / floor", round(ratio, 3), "≤ 1.2", ratio <= 1.2)
            baseline = medians.get("baseline")
            if baseline:
                speedup = baseline["wall_s"] / connector["wall_s"]
                check(
                    "baseline wall / connector wall",
                    round(speedup, 2),
                    "≥ 6",
                    speedup >= 6,
                )
        else:
            check("completed (exit 0)", connector["failed"] == 0, "all runs", None)
            checks[-1]["met"] = connector["failed"] == 0
            share = connector["throttled"] / max(1, connector["requests"])
            check("429 share of requests", round(share, 4), "< 0.02", share < 0.02)
            check("connector wall / floor at limit 2", round(ratio, 3), "info", None)
    if scenario.number == 2 and connector and "reference" in medians:
        ratio = connector["cpu_s"] / medians["reference"]["reference_cpu_s"]
        check("connector CPU / reference cost", round(ratio, 3), "≤ 0.5", ratio <= 0.5)
    if scenario.number == 3:
        for entry in sizes:
            for kind in ("connector (file)", "connector"):
                row = entry["summary"].get(kind)
                if row and entry["size"]["users"] >= 1_000_000:
                    rss = row["peak_rss_mb"]
                    label = f"{kind} peak RSS at {entry['size']['users']:,} users (MB)"
                    check(label, rss, "< 400", rss < 400)
        if len(sizes) > 1:
            for kind in ("connector (file)", "connector"):
                small = sizes[0]["summary"].get(kind)
                large = sizes[-1]["summary"].get(kind)
                if small and large:
                    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
                    scale = sizes[-1]["size"]["users"] / sizes[0]["size"]["users"]
                    per = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (
                        (sizes[-1]["size"]["users"] - sizes[0]["size"]["users"]) / 1e5
                    )
                    check(
                        f"{kind} RSS growth ×{scale:.0f} users",
                        round(growth, 2),
                        f"≤ {scale:.0f} (linear or better); +{per:.0f} MB/100k users",
                        None,
                    )
    if quick and checks:
        for entry in checks:
            entry["bound"] += " (full size only)"
    return checks


def print_table(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """Print the medians of a scenario and its targets."""
    say("")
    say(f"Scenario {result['number']}: {result['name']}")
    header = (
        f"{'size':>9} {'run':<17} {'n':>2} {'wall s':>8} {'CPU s':>8} {'RSS MB':>7} "
        f"{'reqs':>6} {'429':>5} {'srv CPU':>7} {'other':>6} {'users':>8} "
        f"{'groups':>6} "
        f"{'rels':>8} {'JSON MB':>8}"
    )
    say(header)
    say("-" * len(header))
    for entry in result["sizes"]:
        for kind, row in entry["summary"].items():
            json_mb = (row["json_bytes"] or 0) / 1e6
            say(
                f"{entry['size']['users']:>9,} {kind:<17} {row['runs']:>2} "
                f"{row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} "
                f"{row['peak_rss_mb']:>7.0f} {row['requests']:>6} "
                f"{row['throttled']:>5} {row['server_cpu_s']:>7.2f} "
                f"{row['other_cpu_s']:>6.1f} "
                f"{row['users'] or 0:>8} {row['groups'] or 0:>6} "
                f"{row['relationships'] or 0:>8} {json_mb:>8.1f}"
                + (f"  ({row['failed']} failed)" if row["failed"] else "")
            )
            if kind == "reference":
                say(
                    f"{'':>9} {'':<17}    reference cost {row['reference_cpu_s']:.2f} s"
                    f" CPU = decode {row['decode_cpu_s']:.2f} + encode&compress "
                    f"{row['encode_compress_cpu_s']:.2f} (client's byte join "
                    f"{row['client_join_cpu_s']:.2f} s not counted)"
                )
        contended = sum(row["contended"] for row in entry["summary"].values())
        if contended:
            say(
                f"{'':>9} warning: in {contended} run(s) other processes used more "
                "than 10 % of a core (column 'other'): the machine was shared, "
                "wall times are inflated"
            )
        if "floor_s" in entry:
            say(
                f"{'':>9} floor = {entry['floor_s']:.2f} s "
                f"({entry['floor_pages']} pages of {entry['size']['page_cap']})"
            )
    for check in result["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: ""}[check["met"]]
        say(
            f"  {check['target']}: {check['value']} (target {check['bound']}) {verdict}"
        )
    for note in result.get("notes", []):
        say(f"  note: {note}")


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _results_path() -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = datetime.now().strftime("%Y-%m-%d")
    path = RESULTS / f"{stem}.json"
    suffix = 2
    while path.exists():
        path = RESULTS / f"{stem}-{suffix}.json"
        suffix += 1
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scenario 1 at 1/10")
    parser.add_argument(
        "--scenario", type=int, action="append", choices=(1, 2, 3, 4), default=None
    )
    parser.add_argument(
        "--repeat", type=int, help="connector runs per size (default 3; 1 for 3 and 4)"
    )
    parser.add_argument(
        "--baseline-repeat", type=int, default=1, help="baseline runs (default 1)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the baseline everywhere"
    )
    args = parser.parse_args(argv)
    all_scenarios = scenarios(args.quick)
    chosen = args.scenario or sorted(all_scenarios)
    if args.quick:
        chosen = [1]

    def say(text: str) -> None:
        print(text, flush=True)

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("--no-optional-locks", "status", "--porcelain", "-uno"))
    log_dir = Path(tempfile.mkdtemp(prefix="scim-bench-logs-"))
    say(f"child logs: {log_dir}")
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for number in chosen:
        scenario = all_scenarios[number]
        say(f"Scenario {number}: {scenario.name}")
        repeat = args.repeat or scenario.repeat
        sizes = []
        for size in scenario.sizes:
            baseline = scenario.baseline and not args.no_baseline
            reference_repeat = 0
            if scenario.reference:
                reference_repeat = scenario.reference_repeat
                if args.repeat and reference_repeat > 1:
                    reference_repeat = args.repeat
            entry = run_size(
                scenario,
                size,
                repeat=repeat,
                baseline_repeat=args.baseline_repeat if baseline else 0,
                reference_repeat=reference_repeat,
                log_dir=log_dir,
                say=say,
            )
            entry["summary"] = summarize(entry["runs"])
            sizes.append(entry)
        result = {
            "number": number,
            "name": scenario.name,
            "notes": scenario.notes,
            "sizes": sizes,
        }
        result["targets"] = targets(scenario, args.quick, sizes)
        print_table(result, say)
        results.append(result)
        say("")
    elapsed = time.perf_counter() - started
    document = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "commit": commit,
        "dirty": dirty,
        "commit_at_end": _git("rev-parse", "--short", "HEAD"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "scenarios": results,
    }
    path = _results_path()
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    say(f"total {elapsed / 60:.1f} min; results in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
