"""Progress bars: the caller's switch and tqdm's environment overrides both work."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "from editor_core.progress import bar; "
    "print(bar(range(2), progress=True).disable, bar(range(2), progress=False).disable)"
)


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_progress_flag_turns_the_bar_on_and_off() -> None:
    assert _probe() == "False True"


def test_tqdm_disable_in_the_environment_silences_bars_that_were_asked_for() -> None:
    assert _probe(TQDM_DISABLE="1") == "True True"
