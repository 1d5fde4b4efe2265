"""Part buffers without emulators: the pooled byte budget, CRC32C of buffers, zero-copy readers."""

from __future__ import annotations

import hashlib
import http.client
import io
import random
import socket
import threading

import google_crc32c

from airflow_provider_sky.storage.base import HTTPBodyStream, ViewReader, crc32c_value, readinto_full
from airflow_provider_sky.storage.local import FileStore
from airflow_provider_sky.storage.transfer import ByteBudget, TransferEngine


def test_pooled_buffers_are_reused_and_counted():
    budget = ByteBudget(100)
    a = budget.take_buffer(40)
    b = budget.take_buffer(40)
    assert len(a) == len(b) == 40 and a is not b
    assert budget.available == 20
    budget.give_buffer(a)
    assert budget.available == 20  # an idle pooled buffer still counts as held
    assert budget.take_buffer(40) is a  # reused, not reallocated
    budget.give_buffer(a)
    budget.give_buffer(b)
    # A request the idle buffers leave no room for drops them instead of waiting forever.
    assert budget.acquire(90) == 90 and budget.available == 10
    budget.release(90)
    assert budget.peak <= budget.capacity
    budget.drop_idle()
    assert budget.available == 100


def test_pooled_buffer_waits_for_a_returned_one():
    budget = ByteBudget(64)
    held = budget.take_buffer(64)
    got: list[bytearray] = []
    t = threading.Thread(target=lambda: got.append(budget.take_buffer(64)))
    t.start()
    t.join(0.1)
    assert not got  # the budget is full: waits
    budget.give_buffer(held)
    t.join(2)
    assert got and got[0] is held


def test_crc32c_of_buffers_matches_bytes():
    data = random.Random(1).randbytes(3 * (256 << 10) + 17)
    want = google_crc32c.value(data)
    assert crc32c_value(data) == want
    assert crc32c_value(bytearray(data)) == want
    buf = bytearray(len(data) + 100)
    buf[: len(data)] = data
    assert crc32c_value(memoryview(buf)[: len(data)]) == want


def test_view_reader_is_a_rereadable_stream_over_the_buffer():
    data = random.Random(2).randbytes(50_000)
    reader = ViewReader(memoryview(bytearray(data)))
    assert len(reader) == len(data) and reader.seekable()
    first = bytes(reader.read(1000))
    rest = b"".join(bytes(chunk) for chunk in iter(lambda: reader.read(7000), b""))
    assert first + rest == data
    reader.seek(0)
    assert hashlib.md5(reader.read()).digest() == hashlib.md5(data).digest()
    assert reader.tell() == len(data)


def test_readinto_full_fills_from_readinto_and_read_streams():
    data = random.Random(3).randbytes(10_000)

    class Trickle:  # read-only stream returning small pieces
        def __init__(self):
            self.pos = 0

        def read(self, n):
            out = data[self.pos : self.pos + min(n, 333)]
            self.pos += len(out)
            return out

    for stream in (io.BytesIO(data), Trickle()):
        buf = bytearray(12_000)
        assert readinto_full(stream, memoryview(buf)) == len(data)
        assert bytes(buf[: len(data)]) == data


def test_http_body_stream_reads_into_the_callers_buffer():
    """A real urllib3 response over a local socket: the body lands in the caller's buffer through
    http.client's readinto (no urllib3 read), and the connection goes back to the pool."""
    import urllib3

    body = random.Random(4).randbytes(300_000)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.getsockname()[1], maxsize=1)
    resp = pool.urlopen("GET", "/", preload_content=False, decode_content=False)
    stream = HTTPBodyStream(resp)
    assert isinstance(stream._fp, http.client.HTTPResponse)  # the zero-copy path is taken
    buf = bytearray(len(body))
    assert readinto_full(stream, memoryview(buf)) == len(body)
    assert stream.readinto(memoryview(bytearray(10))) == 0
    stream.close()
    assert bytes(buf) == body
    assert pool.pool.qsize() == 1  # released, not dropped
    t.join(2)
    server.close()
    pool.close()


def test_file_copy_reuses_part_buffers(tmp_path):
    """Many parts through a budget of two: every part buffer comes from the pool."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = random.Random(5).randbytes(20 * (1 << 20) + 5)
    (src / "big.bin").write_bytes(data)
    engine = TransferEngine(
        FileStore(str(src)),
        "",
        FileStore(str(dst)),
        "",
        part_size=1 << 20,
        multipart_threshold=1 << 20,
        memory_budget=2 << 20,
        workers=4,
        streams=2,
        server_side=False,
    )
    allocated = []
    take = engine.budget.take_buffer

    def counting_take(size):
        buf = take(size)
        if not any(buf is b for b in allocated):
            allocated.append(buf)
        return buf

    engine.budget.take_buffer = counting_take  # type: ignore[method-assign]
    report = engine.run()
    assert report.verified and report.files_copied == 1
    assert (dst / "big.bin").read_bytes() == data
    assert 1 <= len(allocated) <= 2  # 21 parts, at most two buffers ever allocated
    assert engine.budget.peak <= 2 << 20
