"""`make bench`: run every figure in bench/figures/ and print one table of ratios."""

import importlib
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Harness, figure, print_table  # noqa: E402

# Contract order first; any other figure module runs after them.
ORDER = ["auth_apikey", "auth_jwt", "resume", "workflow", "audit_append", "audit_verify"]


def figure_modules(selected: list[str]) -> list[str]:
    present = sorted(p.stem for p in (Path(__file__).parent / "figures").glob("*.py") if p.stem != "__init__")
    names = [n for n in ORDER if n in present] + [n for n in present if n not in ORDER]
    return [n for n in names if not selected or n in selected]


def main(argv: list[str]) -> int:
    harness = Harness()
    harness.prepare_database()
    harness.orm()
    rows = []
    failed = False
    try:
        # Inside the try: a server that fails to start must not leave a worker behind.
        harness.start()
        health = harness.baseline("health")
        celery = harness.baseline("celery")
        rows.append(figure("health_live", health, health, "req/s", "baseline: anonymous GET /health/live"))
        rows.append(figure("celery_noop", celery, celery, "tasks/s", "baseline: no-op task round trips"))
        for name in figure_modules(argv):
            try:
                rows.append(importlib.import_module(f"bench.figures.{name}").measure(harness))
            except Exception:  # noqa: BLE001 - one broken figure must not hide the others
                traceback.print_exc()
                failed = True
                rows.append({"figure": name, "ratio": 0.0, "value": 0.0, "baseline": 0.0, "unit": "", "note": "FAILED"})
    finally:
        harness.stop()
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
