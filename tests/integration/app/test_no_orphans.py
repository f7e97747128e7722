"""A node killed with SIGKILL runs none of its exit handlers: what it started must go with it.
Its embedded Prefect API (a uvicorn child) is started with a parent-death signal, so the
kernel stops it; nothing is left holding a port or Prefect's database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil
from support.orthanc import free_port
from support.serve import triage_command
from support.waiting import wait_until


def test_a_node_killed_with_sigkill_leaves_no_child_behind(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path), "TRIAGE_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)  # the embedded node, as a user starts it
    log = tmp_path / "serve.log"
    with open(log, "ab") as out:
        node = subprocess.Popen(
            [*triage_command(), "serve"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    children: list[psutil.Process] = []
    try:

        def listening() -> bool:
            assert node.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 120, "the node to listen", interval=0.2)

        def prefect_child() -> list[psutil.Process]:
            children = psutil.Process(node.pid).children(recursive=True)
            return [c for c in children if "uvicorn" in " ".join(c.cmdline())]

        wait_until(prefect_child, 60, "the embedded Prefect API", interval=0.2)
        children += psutil.Process(node.pid).children(recursive=True)
        node.send_signal(signal.SIGKILL)
        node.wait(30)

        def all_gone() -> bool:
            return not [c for c in children if c.is_running() and c.status() != "zombie"]

        wait_until(all_gone, 20, "the node's children to end", interval=0.2)
    finally:
        if node.poll() is None:
            node.kill()
        for child in children:  # a failed check leaves nothing behind either
            if child.is_running():
                child.kill()
