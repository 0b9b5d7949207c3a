"""Random 128-bit ids (audit ids) without a syscall per id.

``uuid.uuid4()`` reads ``os.urandom`` on every call; the read releases the GIL, and on a busy
router the event loop then waits for the audit writer thread to hand it back (py-spy put ~20% of
the event loop's samples on that line under verify load). Ids here come from one ``os.urandom``
read of 4 KiB per 256 ids: just as random, and unpredictable like uuid4's.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 4096
_lock = threading.Lock()
_buffer = b""
_pos = _BLOCK


def new_id() -> str:
    """32 lowercase hex digits (the shape of ``uuid.uuid4().hex``, without the version bits)."""
    global _buffer, _pos
    with _lock:
        if _pos >= len(_buffer):
            _buffer, _pos = os.urandom(_BLOCK), 0
        chunk = _buffer[_pos:_pos + 16]
        _pos += 16
    return chunk.hex()
