"""``exit_now`` skips interpreter teardown but keeps what a normal exit guarantees."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import atexit, sys, threading, time
from pathlib import Path
from flows.cli import exit_now
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.5)
    (out / "thread").write_text("joined")
threading.Thread(target=late).start()
sys.stdout.write("x" * 200_000 + "\nend\n")  # more than a pipe buffer, still buffered at exit
exit_now(3)
"""


def test_exit_now_keeps_output_threads_and_atexit_handlers(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert out.stdout.endswith("x\nend\n") and len(out.stdout) == 200_005
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
