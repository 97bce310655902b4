"""Benchmark harness: gunicorn + a Celery worker on PostgreSQL and Redis, load from a separate wrk process."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_DB = "elsa_bench"
PORT = int(os.environ.get("ELSA_BENCH_PORT", "8099"))
REDIS = "redis://127.0.0.1:6379"

# wrk script that cycles through pre-built requests (one per line of a JSON file), so each request
# can carry its own token or body.
_WRK_LUA = r"""
local requests = {}
local i = 0
init = function(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do
    local method, path, headers, body = line:match("^(%S+)\t(%S+)\t(.-)\t(.*)$")
    local h = {}
    for k, v in headers:gmatch("([^:;]+):([^;]*);") do h[k] = v end
    if body == "" then body = nil end
    requests[#requests + 1] = wrk.format(method, path, h, body)
  end
  f:close()
end
request = function()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
"""


class Harness:
    """What a figure module can use: the server, load generation, baselines and the bench database."""

    def __init__(self, extra_server_env: dict[str, str] | None = None):
        self.base_url = f"http://127.0.0.1:{PORT}"
        self.tmp = Path(tempfile.mkdtemp(prefix="elsa-bench-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "elsa_site.settings",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "CACHE_URL": f"{REDIS}/9",
            "CELERY_BROKER_URL": f"{REDIS}/10",
            "CELERY_RESULT_BACKEND": f"{REDIS}/10",
            "ELSA_CELERY_QUEUE": "elsa-bench",
            "ELSA_WEB_CONCURRENCY": "2",
            "ELSA_LOG_LEVEL": "WARNING",
            "ELSA_RESUME_RATE": "1000000/m",
            "ELSA_LOGIN_RATE": "1000000/m",
            "PORT": str(PORT),
            "ELSA_PUBLIC_URL": f"http://127.0.0.1:{PORT}",
            **(extra_server_env or {}),
        }
        self._procs: list[subprocess.Popen] = []
        self._baselines: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def prepare_database(self) -> None:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", BENCH_DB], check=True)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", BENCH_DB], check=True)
        subprocess.run(["redis-cli", "-n", "9", "flushdb"], check=True, capture_output=True)
        subprocess.run(["redis-cli", "-n", "10", "flushdb"], check=True, capture_output=True)
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")

    def manage(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, **kwargs)

    def orm(self) -> None:
        """Configure Django in this process against the bench database."""
        import django

        os.environ.update(self.env)
        django.setup()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._procs.append(proc)
        return proc

    def start(self) -> None:
        self._spawn("web", [str(ROOT / ".venv/bin/gunicorn"), "-c", "elsa_site/gunicorn.conf.py", "elsa_site.wsgi"])
        self._spawn(
            "worker",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "elsa_site",
                "worker",
                "-Q",
                "elsa-bench",
                "-c",
                "2",
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "-n",
                "bench@%h",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", PORT), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"gunicorn did not start: {(self.tmp / 'web.log').read_text()[-2000:]}")
        from elsa_site.celery import ping

        ping.apply_async().get(timeout=60)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- load ------------------------------------------------------------------------------
    def http_rps(
        self,
        path: str,
        method: str = "GET",
        headers: dict | None = None,
        body: str | None = None,
        duration: float = 5.0,
    ) -> float:
        return self.http_rps_requests([(method, path, headers or {}, body or "")], duration=duration)["rps"]

    def http_rps_requests(
        self, requests: list[tuple[str, str, dict, str]], duration: float = 5.0, connections: int = 16
    ) -> dict:
        """Replay `requests` round-robin with wrk; returns {"rps", "non_2xx", "total"}."""
        script = self.tmp / "cycle.lua"
        script.write_text(_WRK_LUA)
        data = self.tmp / f"requests-{time.monotonic_ns()}.tsv"
        with data.open("w") as fh:
            for method, path, headers, body in requests:
                # One connection per request: with keep-alive, wrk's connections stay on whichever
                # gunicorn process accepted them, and a lopsided split halved or doubled a figure
                # from one run to the next (measured: 570 to 1584 req/s; with close, 1095 to 1157).
                headers = {"Connection": "close", **headers}
                header_text = "".join(f"{k}:{v};" for k, v in headers.items())
                fh.write(f"{method}\t{path}\t{header_text}\t{body}\n")
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "-s",
                str(script),
                self.base_url,
                "--",
                str(data),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rps_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total_match = re.search(r"(\d+) requests in", out)
        if rps_match is None or total_match is None:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        rps, total = float(rps_match.group(1)), int(total_match.group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        return {"rps": rps, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0, "total": total}

    # --- baselines -------------------------------------------------------------------------
    def baseline(self, name: str) -> float:
        if name not in self._baselines:
            self._baselines[name] = {"health": self._health_rps, "celery": self.celery_rate}[name]()
        return self._baselines[name]

    def _health_rps(self) -> float:
        self.http_rps("/health/live", duration=2)  # warm up
        return self.http_rps("/health/live")

    def celery_rate(self, count: int = 1000) -> float:
        """No-op task round trips per second: publish `count` pings, wait for every result."""
        from elsa_site.celery import ping

        ping.apply_async().get(timeout=30)  # warm up
        started = time.perf_counter()
        results = [ping.apply_async() for _ in range(count)]
        for result in results:
            result.get(timeout=120)
        return count / (time.perf_counter() - started)


def figure(name: str, value: float, baseline: float, unit: str, note: str = "") -> dict:
    return {
        "figure": name,
        "ratio": value / baseline if baseline else 0.0,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "note": note,
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'figure':<16}{'ratio':>8}  {'value':>12}  {'baseline':>12}  unit / note")
    for row in rows:
        print(
            f"{row['figure']:<16}{row['ratio']:>8.2f}  {row['value']:>12.1f}  {row['baseline']:>12.1f}  "
            f"{row['unit']} {row.get('note', '')}".rstrip()
        )
    print(json.dumps(rows), file=sys.stderr)
