"""Tail a job log by byte offset.

The tailer's only state is a plain int offset, so it can be handed to an Airflow trigger through a
deferral and resumed elsewhere: ``LogTailer(reader, offset=saved_offset)``.
"""

from __future__ import annotations

from collections.abc import Callable

ReadBytes = Callable[[int, int], bytes]
"""``read(offset, max_bytes) -> bytes``; may raise FileNotFoundError before the log exists."""


def _utf8_safe_end(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character."""
    # Look back at most 3 bytes for the start of a multibyte sequence.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 == 0b1000_0000:  # continuation byte, keep looking
            continue
        if byte < 0x80:  # ASCII: complete
            return len(data)
        need = 2 if byte >= 0xC0 and byte < 0xE0 else 3 if byte < 0xF0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)


class LogTailer:
    """Return only new, complete lines of a growing log.

    A partial trailing line stays unread (the offset does not move past it) until its newline
    arrives, or until `flush()` is called when the job has finished. Decoding is UTF-8 with
    replacement; a multibyte character split across reads is never broken.
    """

    def __init__(self, read_bytes: ReadBytes, offset: int = 0) -> None:
        self._read = read_bytes
        self.offset = int(offset)

    def _read_at(self, max_bytes: int) -> bytes:
        try:
            return self._read(self.offset, max_bytes)
        except FileNotFoundError:
            return b""

    def read_new(self, max_bytes: int = 1 << 20) -> tuple[str, int]:
        """New complete lines (at most about `max_bytes`) and the offset after them."""
        data = self._read_at(max_bytes)
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) >= max_bytes:
            # One line longer than max_bytes: hand it out in pieces, on a character boundary.
            cut = _utf8_safe_end(data) or len(data)
        self.offset += cut
        return data[:cut].decode("utf-8", "replace"), self.offset

    def flush(self, max_bytes: int = 1 << 20) -> tuple[str, int]:
        """Everything left, including a final line without newline (call once the job is done)."""
        parts = []
        while True:
            data = self._read_at(max_bytes)
            if not data:
                break
            parts.append(data)
            self.offset += len(data)
            if len(data) < max_bytes:
                break
        return b"".join(parts).decode("utf-8", "replace"), self.offset
