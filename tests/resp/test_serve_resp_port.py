"""``raftcache serve --resp-port`` on a real process: redis-py talks to the replicated cache."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.server.cluster import free_ports


def test_serve_with_resp_port_answers_redis_py(tmp_path: Path) -> None:
    http_port, resp_port = free_ports(2)
    url = f"http://127.0.0.1:{http_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftcache", "serve", "--id", "n1",
         "--listen", f"127.0.0.1:{http_port}", "--peers", f"n1={url}",
         "--data-dir", str(tmp_path / "n1"), "--resp-port", str(resp_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", resp_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "RESP port never opened"
                time.sleep(0.1)
        client = redis.Redis(port=resp_port, socket_timeout=10)
        deadline = time.monotonic() + 30
        while True:  # the one-node cluster elects itself
            try:
                assert client.set("greeting", "hi")
                break
            except redis.ResponseError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert client.get("greeting") == b"hi"
        assert client.incr("n") == 1
        assert client.dbsize() == 2
        client.close()
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0
