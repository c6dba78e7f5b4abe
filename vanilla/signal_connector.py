"""Ctrl-C and SIGTERM during training (Lightning: `_SignalConnector`, which stops on SIGTERM without saving).

While training runs, the two signals only set a flag; the loop checks it at each batch boundary and, when any
rank got one, every rank stops at that same batch after writing a resumable last.ckpt (`FitLoop`).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalConnector:
    def __init__(self):
        self.received: int | None = None

    @contextmanager
    def catching_stop_signals(self):
        if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda signum, frame: setattr(self, "received", signum))
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
