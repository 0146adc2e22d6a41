"""A real S3 API on loopback for the tests and `bench/state.py`: moto's server, in its own process.

    python tests/s3server.py        # prints "http://127.0.0.1:PORT", serves until stdin closes

moto implements conditional writes (PutObject If-None-Match: * and If-Match, DeleteObject If-Match:
moto/s3/responses.py, put_object and delete_object) as a check followed by the write, in a server
that answers each request on its own thread. S3 makes that check and the write one atomic step; here
a lock around those two handlers does, so two runs racing for the lock object see S3's behaviour.
The server stops when its parent closes stdin (or dies), so it never outlives a test run.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any


def make_conditional_writes_atomic() -> None:
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    for name in ("put_object", "delete_object"):
        handler = getattr(S3Response, name)

        @functools.wraps(handler)
        def atomic(self: Any, *args: Any, _handler: Any = handler, **kwargs: Any) -> Any:
            with lock:
                return _handler(self, *args, **kwargs)

        setattr(S3Response, name, atomic)


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request drowns test output
    make_conditional_writes_atomic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the parent closes it
    server.stop()


if __name__ == "__main__":
    main()
