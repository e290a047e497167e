"""display://0: a native window under a (virtual) X display, the web page without one, and a graceful
fallback when the display is unusable. Each case runs in a subprocess with its own DISPLAY."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import run_python

SHOW = '''
import numpy as np
from imgclass.media.options import SinkOptions
from imgclass.media.sinks import open_sink
sink = open_sink("display://0", SinkOptions(port=0))
for i in range(10):
    sink.write(np.full((120, 160, 3), i * 20, np.uint8))
sink.set_status("status line")
sink.close()
print(type(sink).__name__, sink.is_streaming)
'''


def show_with(display: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display:
        env["DISPLAY"] = display
    return subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, env=env, timeout=60)


def test_no_display_means_the_web_page():
    r = show_with(None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "LiveView" and "live view at http://127.0.0.1:" in r.stderr


def test_unusable_display_falls_back_to_the_web_page():
    r = show_with(":87")  # no X server there
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "LiveView" and "cannot open a window" in r.stderr and "Traceback" not in r.stderr


def test_window_under_xvfb():
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb absent (apt install xvfb); .ci/run installs it")
    r = run_python("-c", "import tkinter")
    if r.returncode:
        pytest.skip("this Python has no tkinter")
    xvfb = subprocess.Popen(["Xvfb", ":93", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        r = show_with(":93")
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "WindowSink", r.stderr
