"""Child processes that end with the command that started them.

A supervisor (``make demo``'s services, ``pipeline gateway --workers N``) that is killed with
SIGKILL, or by a test's timeout, runs no cleanup: without this its children ran on, holding
their ports and consumer groups.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["dying_with_this_process"]


def dying_with_this_process(program: str) -> str:
    """Python ``program`` for a child of this process that ends with it: on Linux the child
    asks the kernel for SIGTERM when its parent ends (``PR_SET_PDEATHSIG``: the demo killed
    with SIGKILL, or by a test's timeout, left every service running), and exits at once if
    the parent is already gone. Made from the main thread only (the "parent" the kernel
    watches is the thread that started the child, and the main thread lives as long as the
    process); elsewhere ``program`` as it is."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return program
    return (
        "import ctypes, os, signal, sys\n"
        "ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
        f"if os.getppid() != {os.getpid()}:\n"
        "    sys.exit(143)\n" + program
    )
