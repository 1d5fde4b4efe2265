"""LogTailer: complete lines only, multibyte-safe, resumable from a plain int offset."""

from __future__ import annotations

import pytest

from airflow_provider_sky.execution.logs import LogTailer


class GrowingLog:
    """An in-memory log that a test appends to, read like a file on a node."""

    def __init__(self) -> None:
        self.data = b""
        self.exists = True

    def read(self, offset: int, max_bytes: int) -> bytes:
        if not self.exists:
            raise FileNotFoundError("log")
        return self.data[offset : offset + max_bytes]


def test_complete_lines_only_and_partial_kept():
    log = GrowingLog()
    tailer = LogTailer(log.read)
    log.data += b"first\nsec"
    assert tailer.read_new() == ("first\n", 6)
    assert tailer.read_new() == ("", 6)
    log.data += b"ond\nthi"
    assert tailer.read_new() == ("second\n", 13)
    assert tailer.flush() == ("thi", 16)
    assert tailer.flush() == ("", 16)


def test_multibyte_character_split_across_reads():
    log = GrowingLog()
    tailer = LogTailer(log.read)
    text = "héllo wörld ✓ 🚀\n".encode()
    cut = text.index("🚀".encode()) + 2  # in the middle of the 4-byte emoji
    log.data = text[:cut]
    assert tailer.read_new() == ("", 0)
    log.data = text
    out, offset = tailer.read_new()
    assert out == "héllo wörld ✓ 🚀\n"
    assert offset == len(text)


def test_long_line_is_handed_out_on_character_boundaries():
    log = GrowingLog()
    log.data = ("é" * 10).encode() + b"\n"  # 20 bytes of 2-byte chars, then newline
    tailer = LogTailer(log.read)
    pieces = []
    while True:
        out, _ = tailer.read_new(max_bytes=5)
        if not out:
            break
        pieces.append(out)
    assert "".join(pieces) == "é" * 10 + "\n"
    assert all("\ufffd" not in p for p in pieces)


def test_invalid_utf8_is_replaced():
    log = GrowingLog()
    log.data = b"ok \xff\xfe bad\n"
    out, _ = LogTailer(log.read).read_new()
    assert out == "ok \ufffd\ufffd bad\n"


def test_missing_log_reads_as_empty():
    log = GrowingLog()
    log.exists = False
    tailer = LogTailer(log.read)
    assert tailer.read_new() == ("", 0)
    assert tailer.flush() == ("", 0)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_resume_from_offset_reassembles_everything(chunk):
    text = "".join(f"line {i} ünïcødé ✓\n" for i in range(50)).encode() + b"tail"
    log = GrowingLog()
    offset = 0
    collected = []
    for end in range(0, len(text) + chunk, chunk):
        log.data = text[:end]
        # A fresh tailer each time: only the int offset survives (as through a deferral).
        out, offset = LogTailer(log.read, offset=offset).read_new(max_bytes=4096)
        collected.append(out)
    out, offset = LogTailer(log.read, offset=offset).flush(max_bytes=10)
    collected.append(out)
    assert "".join(collected) == text.decode()
    assert offset == len(text)
