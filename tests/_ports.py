"""Loopback TCP ports reserved for servers started by a test's subprocesses.

Choosing a free port by binding port 0 and closing the socket leaves a
window, until the subprocess's server binds it (seconds: it imports
TensorFlow first), in which any other process may take the port. Here the
socket stays bound, with `SO_REUSEADDR` and without listening, until the
test ends:

- the kernel hands that port to no one else: not as an ephemeral port (a
  `bind` to port 0 or an outgoing `connect`), and not to an explicit bind
  without `SO_REUSEADDR`;
- gRPC servers (TensorFlow's workers, Keras Tuner's oracle) set
  `SO_REUSEADDR`, and Linux lets a second such socket bind an address on
  which nothing listens, so the intended server binds it and receives
  every connection (the reserving socket never listens).

`tests/test_ports.py` checks both halves of that on this machine.
"""

import contextlib
import socket


@contextlib.contextmanager
def reserved_ports(count, host="127.0.0.1"):
    """Yields `count` distinct free ports on `host`, held until the end."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        yield [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
