"""What the `psabridge simulate NAME` commands share: the `configure` command they print, with the
simulator's keys in files rather than on it, and stopping cleanly on the signals that end a
process."""

from __future__ import annotations

import os
import shlex
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def configure_command(plugin: str, settings: dict[str, str],
                      secret_settings: Iterable[str]) -> Iterator[str]:
    """The `psabridge configure PLUGIN` command line for a simulator's `settings`, with each of
    `secret_settings` written to a file of its own and named by `--NAME-file PATH`.

    A printed command line carrying the key would teach typing keys where `ps` and the shell's
    history keep them, and `configure` refuses them there. The files are private (a 0700 folder,
    0600 files) and removed when the block ends, that is when the simulator stops.
    """
    secret_settings = set(secret_settings)
    with tempfile.TemporaryDirectory(prefix=f"psabridge-simulate-{plugin}-") as folder:
        words = ["psabridge", "configure", plugin]
        for name, value in settings.items():
            flag = "--" + name.replace("_", "-")
            if name not in secret_settings:
                words += [flag, value]
                continue
            path = Path(folder) / name.replace("_", "-")
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write(value + "\n")
            words += [f"{flag}-file", str(path)]
        yield shlex.join(words)


@contextmanager
def stopping_on_terminate() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP stop the process as Ctrl-C does (KeyboardInterrupt),
    so that a simulator stopped by a service manager, `kill` or a closed terminal removes its key
    files as it does on Ctrl-C. The previous handlers are put back afterwards. Signals can only
    be handled in the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
