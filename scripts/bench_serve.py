"""Benchmark the HTTP server: cross-request batching versus ``--no-batching``, in one run.

For each mode the script starts ``textxfer serve`` as a subprocess on a free loopback port, waits for
``GET /health``, then drives it with a bounded closed-loop load generator: ``--clients`` threads, each
with one persistent HTTP/1.1 connection (``http.client``), sending requests back-to-back (the next one
as soon as the previous answer arrives) of ``--texts-per-request`` texts drawn at random from
``sample_data/reviews.csv`` (column ``text``). After ``--warmup`` seconds (not counted) it measures for
``--duration`` seconds: requests/s, texts/s, p50/p95/p99 latency, and errors (non-200 answers, bad
bodies, exceptions; must be 0). The server is then stopped with SIGTERM and must exit 0.

Modes: ``batched`` (the server's defaults plus ``--server-args``) and ``unbatched`` (the same plus
``--no-batching``). The figure of merit is batched / unbatched texts/s (target >= 3x at 16 concurrent
single-text clients). Caveat: the load generator runs on the same machine and shares its cores with the
server; its own CPU use is measured and reported.

Run: ``python scripts/bench_serve.py [--model runs/demo/finetune] [--clients 16] [--duration 30]
[--texts-per-request 1] [--server-args "--max-batch-size 32"] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "runs" / "demo" / "finetune"
TARGET_SPEEDUP = 3.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command() -> list[str]:
    """The command that runs ``textxfer`` with this interpreter's installation."""
    script = Path(sys.executable).parent / "textxfer"
    if script.exists():
        return [str(script)]
    found = shutil.which("textxfer")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from textxfer.cli import main; sys.argv[0] = 'textxfer'; main()"]


def read_texts(path: Path) -> list[str]:
    """The non-empty ``text`` column of a CSV file."""
    with open(path, encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip()]
    if not texts:
        raise SystemExit(f"{path}: no texts in column 'text'")
    return texts


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` and its live descendants (Linux only)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        stats = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    if pid not in stats:
        return None
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in family) / tick


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class Server:
    """``textxfer serve`` as a subprocess on a free loopback port, its output kept in a log file."""

    def __init__(self, model: Path, extra_args: list[str], host: str = "127.0.0.1") -> None:
        self.host, self.port = host, free_port(host)
        self.log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)
        command = serve_command() + ["serve", "--model", str(model), "--host", host, "--port", str(self.port)]
        self.command = command + extra_args
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the server printed."""
        try:
            text = Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until ``GET /health`` answered 200 ``{"status": "ok"}``; raises when it never does."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode} before it was healthy:\n"
                                   f"{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
                connection.request("GET", "/health")
                response = connection.getresponse()
                body = response.read()
                connection.close()
                if response.status == 200 and json.loads(body).get("status") == "ok":
                    return time.perf_counter() - started
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> dict:
        """Stop with SIGTERM (graceful); SIGKILL after ``timeout`` s. Returns exit code and stop time."""
        started = time.perf_counter()
        killed = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait()
        self.log.close()
        code = self.process.returncode
        # uvicorn re-raises the signal once its graceful shutdown is complete, so the process ends "killed
        # by SIGTERM" (-15, shell status 143) rather than 0; at log level info its log also says so.
        completed = "Application shutdown complete" in self.log_tail(lines=200)
        graceful = not killed and code in (0, -signal.SIGTERM)
        return {"exit_code": code, "graceful": graceful, "shutdown_completed_in_log": completed,
                "stop_seconds": round(time.perf_counter() - started, 2), "killed_after_timeout": killed}


class Client(threading.Thread):
    """One closed-loop client: a persistent connection, requests back-to-back until ``stop_at``."""

    def __init__(self, host: str, port: int, texts: list[str], per_request: int, seed: int,
                 measure_from: float, stop_at: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.texts, self.per_request = host, port, texts, per_request
        self.rng = random.Random(seed)
        self.measure_from, self.stop_at, self.timeout = measure_from, stop_at, timeout
        self.latencies: list[float] = []  # seconds, of successful requests finished inside the window
        self.errors: list[str] = []  # inside the window
        self.warmup_errors: list[str] = []
        self.requests_sent = 0

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def run(self) -> None:
        connection = self._connect()
        headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        while True:
            started = time.perf_counter()
            if started >= self.stop_at:
                break
            batch = [self.rng.choice(self.texts) for _ in range(self.per_request)]
            body = json.dumps({"texts": batch}, ensure_ascii=False).encode("utf-8")
            error = None
            try:
                connection.request("POST", "/predict", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}: {payload[:200]!r}"
                else:
                    predictions = json.loads(payload).get("predictions")
                    if not isinstance(predictions, list) or len(predictions) != len(batch):
                        error = f"bad body: {payload[:200]!r}"
                if response.will_close:
                    connection.close()
                    connection = self._connect()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                connection.close()
                connection = self._connect()
                time.sleep(0.05)  # a dead server must not turn this client into a busy loop
            finished = time.perf_counter()
            self.requests_sent += 1
            if finished < self.measure_from or finished > self.stop_at:
                if error and finished < self.measure_from:
                    self.warmup_errors.append(error)
                continue
            if error:
                self.errors.append(error)
            else:
                self.latencies.append(finished - started)
        connection.close()


def server_health(server: Server) -> dict:
    """What ``GET /health`` says now (the server's batch counters, when it reports them), or ``{}``."""
    try:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request("GET", "/health")
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        return body if response.status == 200 and isinstance(body, dict) else {}
    except (OSError, http.client.HTTPException, ValueError):
        return {}


def drive(server: Server, texts: list[str], args) -> dict:
    """Run the load for one server; return its figures."""
    started = time.perf_counter()
    measure_from = started + args.warmup
    stop_at = measure_from + args.duration
    clients = [Client(server.host, server.port, texts, args.texts_per_request, seed, measure_from, stop_at,
                      args.request_timeout) for seed in range(args.clients)]
    for client in clients:
        client.start()
    # CPU use (server and this process) over the measured window only.
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    server_cpu_0, own_cpu_0, wall_0 = cpu_seconds(server.process.pid), time.process_time(), time.perf_counter()
    time.sleep(max(0.0, stop_at - time.perf_counter()))
    server_cpu_1, own_cpu_1, wall_1 = cpu_seconds(server.process.pid), time.process_time(), time.perf_counter()
    hung = 0
    for client in clients:
        client.join(timeout=args.request_timeout + 5)
        hung += client.is_alive()
    health = server_health(server)
    latencies = sorted(x for client in clients for x in client.latencies)
    errors = [e for client in clients for e in client.errors]
    window = wall_1 - wall_0
    requests = len(latencies)
    figures = {
        "requests": requests,
        "requests_per_second": round(requests / args.duration, 2),
        "texts_per_second": round(requests * args.texts_per_request / args.duration, 2),
        "latency_ms": {f"p{q}": round(percentile(latencies, q) * 1000, 1) for q in (50, 95, 99)},
        "latency_ms_mean": round(sum(latencies) / requests * 1000, 1) if requests else float("nan"),
        "latency_ms_max": round(latencies[-1] * 1000, 1) if requests else float("nan"),
        "errors": len(errors) + hung,
        "error_examples": sorted(set(errors))[:5] + ([f"{hung} client(s) still waiting at the end"] if hung else []),
        "warmup_errors": sum(len(client.warmup_errors) for client in clients),
        "load_generator_cpu_cores": round((own_cpu_1 - own_cpu_0) / window, 2),
        "server_cpu_cores": (round((server_cpu_1 - server_cpu_0) / window, 2)
                             if server_cpu_0 is not None and server_cpu_1 is not None else None),
        "server_health": health,  # the batcher's counters over the whole run (warm-up included), if reported
    }
    if health.get("batches"):
        figures["mean_batch_texts"] = round(health["texts"] / health["batches"], 1)
    return figures


def run_mode(name: str, model: Path, extra: list[str], texts: list[str], args) -> dict:
    """Start a server with ``extra`` arguments, load it, stop it; its figures (or its failure)."""
    print(f"[{name}] starting: textxfer serve --model {model} {shlex.join(extra)}".rstrip(), flush=True)
    server = Server(model, extra)
    result: dict = {"mode": name, "server_args": extra, "port": server.port}
    try:
        result["startup_seconds"] = round(server.wait_healthy(args.startup_timeout), 1)
        print(f"[{name}] healthy after {result['startup_seconds']} s; {args.clients} clients, "
              f"{args.warmup:g} s warm-up + {args.duration:g} s measured ...", flush=True)
        result.update(drive(server, texts, args))
    except RuntimeError as exc:
        result["failure"] = str(exc)
        print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        result["shutdown"] = server.stop()
    shutdown = result["shutdown"]
    if shutdown["exit_code"] != 0:
        print(f"[{name}] server exited with code {shutdown['exit_code']} after SIGTERM "
              f"({'graceful: the signal re-raised after a completed shutdown' if shutdown['graceful'] else 'NOT graceful'}"
              f"; killed after timeout: {shutdown['killed_after_timeout']})", file=sys.stderr, flush=True)
    if not shutdown["graceful"] or "failure" in result:
        shutdown["log_tail"] = "\n".join(line for line in server.log_tail(200).splitlines()
                                         if '"POST /predict' not in line and '"GET /health' not in line)[-4000:]
        print(f"[{name}] server log (access lines left out):\n{shutdown['log_tail']}", file=sys.stderr, flush=True)
    if "failure" not in result:
        print(f"[{name}] {result['requests_per_second']} req/s, {result['texts_per_second']} texts/s, "
              f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms, "
              f"errors {result['errors']}" + (f", mean batch {result['mean_batch_texts']} texts (largest "
                                             f"{result['server_health'].get('largest_batch')})"
                                             if "mean_batch_texts" in result else ""), flush=True)
        for example in result["error_examples"]:
            print(f"[{name}]   error: {example}", flush=True)
    os.unlink(server.log.name)
    return result


def markdown(results: list[dict], args) -> str:
    """The results as a Markdown table."""
    lines = [
        "| mode | clients | texts/request | requests/s | texts/s | p50 ms | p95 ms | p99 ms | errors | mean batch | server exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        exit_code = f"{r['shutdown']['exit_code']}" + (" (graceful)" if r["shutdown"]["graceful"] else " (NOT graceful)")
        if "failure" in r:
            lines.append(f"| {r['mode']} | {args.clients} | {args.texts_per_request} | failed | | | | | | | {exit_code} |")
            continue
        latency = r["latency_ms"]
        lines.append(f"| {r['mode']} | {args.clients} | {args.texts_per_request} | {r['requests_per_second']:.1f} | "
                     f"{r['texts_per_second']:.1f} | {latency['p50']:.0f} | {latency['p95']:.0f} | "
                     f"{latency['p99']:.0f} | {r['errors']} | {r.get('mean_batch_texts', '?')} | {exit_code} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"a trained run folder (default: {DEFAULT_MODEL.relative_to(ROOT)})")
    parser.add_argument("--clients", type=int, default=16, help="concurrent closed-loop clients")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--server-args", default="", help='extra arguments for both servers, e.g. "--workers 2"')
    parser.add_argument("--modes", default="batched,unbatched",
                        help="comma-separated: batched (server defaults), unbatched (--no-batching)")
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"), help="CSV with a text column")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for /health")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.texts_per_request < 1 or args.warmup < 0:
        parser.error("--clients and --texts-per-request must be >= 1, --duration > 0, --warmup >= 0")

    if args.model:
        model = Path(args.model)
        if not model.is_dir():
            parser.error(f"--model {model}: no such folder")
    elif DEFAULT_MODEL.is_dir():
        model = DEFAULT_MODEL
    else:
        parser.error(f"no model at {DEFAULT_MODEL}: run `make demo` first, or pass --model RUN_FOLDER")
    modes = {"batched": [], "unbatched": ["--no-batching"]}
    chosen = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not chosen or any(m not in modes for m in chosen):
        parser.error(f"--modes: choose from {', '.join(modes)}")
    extra = shlex.split(args.server_args)
    texts = read_texts(Path(args.data))

    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    print(f"model {model}; {len(texts)} texts from {args.data}; {os.cpu_count()} CPU cores "
          f"({cores_usable} usable), shared by the server(s) and this load generator", flush=True)

    results = [run_mode(name, model, extra + modes[name], texts, args) for name in chosen]
    by_mode = {r["mode"]: r for r in results if "failure" not in r}
    speedup = None
    if "batched" in by_mode and "unbatched" in by_mode and by_mode["unbatched"]["texts_per_second"] > 0:
        speedup = round(by_mode["batched"]["texts_per_second"] / by_mode["unbatched"]["texts_per_second"], 2)

    figures = {
        "model": str(model), "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
        "texts_per_request": args.texts_per_request, "server_args": extra,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "cpu_usable": cores_usable, "python": platform.python_version(),
        "results": results, "speedup_texts_per_second": speedup, "target_speedup": TARGET_SPEEDUP,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, ensure_ascii=False), encoding="utf-8")

    print()
    print(markdown(results, args))
    print()
    if speedup is not None:
        verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
        print(f"batched / unbatched texts/s: {speedup:.2f}x (target >= {TARGET_SPEEDUP:g}x at 16 concurrent "
              f"single-text clients: {verdict} here with {args.clients} client(s), "
              f"{args.texts_per_request} text(s)/request)")
    for r in results:
        if "failure" not in r:
            print(f"{r['mode']}: server used {r['server_cpu_cores']} CPU cores on average, the load generator "
                  f"{r['load_generator_cpu_cores']} (same machine, {cores_usable} usable cores: the load generator's "
                  f"share is taken from the server, so server figures are a lower bound)")
    if any(r["shutdown"]["exit_code"] != 0 for r in results):
        print("server exit: -15 means the process ended by the re-raised SIGTERM (shell status 143) after a completed "
              "graceful shutdown, as uvicorn does; 0 would be a plain exit")
    failed = [r["mode"] for r in results if "failure" in r or r["errors"] or not r["shutdown"]["graceful"]]
    if failed:
        print(f"PROBLEMS in: {', '.join(failed)} (failed start, request errors, or no graceful exit after SIGTERM)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
