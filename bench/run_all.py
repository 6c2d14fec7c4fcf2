"""Run every speed benchmark in one go; results land in bench/results/*.json.

Usage: ``python bench/run_all.py`` (``make bench`` installs the bench extra first). Each benchmark
reports ratios against a baseline measured in the same run, never absolute pass/fail times.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("router_speed.py", []),
    ("browser_load.py", []),  # needs static/ built (python build.py) and /usr/bin/chromium
    ("body_kernel.py", []),  # the quantized projection kernel vs float32 BLAS
    ("head_kernel.py", []),  # the heads on that kernel vs float32 BLAS, whole steps
    ("engine.py", []),  # the real model on the workload; the standard stack needs [reference]
    ("service_load.py", []),  # 50 clients on 127.0.0.1; decodes when the model is fetched
    ("compiler.py", []),  # XLA step vs numpy per plan ([compiler] extra)
]


def main() -> int:
    failed = []
    for script, args in BENCHES:
        print(f"== {script}", flush=True)
        if subprocess.call([sys.executable, str(HERE / script), *args]) != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
