"""The port reservation used by the multi-process tests (`_ports.py`)."""

import errno
import socket
from concurrent import futures

import grpc
import pytest

from _ports import reserved_ports


def test_reserved_ports_are_distinct_and_refused_to_others():
    with reserved_ports(3) as ports:
        assert len(set(ports)) == 3
        for port in ports:
            thief = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with pytest.raises(OSError, match="in use") as info:
                thief.bind(("127.0.0.1", port))
            thief.close()
            assert info.value.errno == errno.EADDRINUSE
        # Ephemeral ports (what another process's bind(0) gets) avoid them.
        for _ in range(20):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                assert s.getsockname()[1] not in ports
    # Released at the end of the block.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_grpc_server_binds_a_reserved_port():
    with reserved_ports(1) as (port,):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        server.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass
        finally:
            server.stop(0)
