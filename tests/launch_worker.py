"""Run by tests/test_launch.py through the launcher (`launch(2, [OUT_DIR], module="tests.launch_worker")`).

Each worker writes OUT_DIR/rank{RANK}.pid and then waits to be stopped; Ctrl-C (SIGINT, which the agent
passes on) ends it with 130, as it ends the CLI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
rank = os.environ["RANK"]
(out / f".rank{rank}.pid").write_text(str(os.getpid()))
(out / f".rank{rank}.pid").rename(out / f"rank{rank}.pid")  # whole or absent: the test never reads half a pid
try:
    time.sleep(300)  # bounded, so that a launcher bug cannot leave a worker behind for long
except KeyboardInterrupt:
    sys.exit(130)
