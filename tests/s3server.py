"""A real S3 API on loopback for the tests and `bench/state.py`: moto's server, in its own process.

    python tests/s3server.py        # prints "http://127.0.0.1:PORT", serves until stdin closes

moto implements conditional writes (PutObject If-None-Match: * and If-Match, DeleteObject If-Match:
moto/s3/responses.py, put_object and delete_object) as a check followed by the write, in a server
that answers each request on its own thread. S3 makes that check and the write one atomic step; here
a lock around those two handlers does, so two runs racing for the lock object see S3's behaviour.
It also answers with Nagle's algorithm off, as S3 does (see `answer_without_nagle`).
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


def answer_without_nagle() -> None:
    """werkzeug writes an answer's headers and body separately on a keep-alive connection; with
    Nagle's algorithm on, the body waits for the client's delayed ACK, about 40 ms per request (the
    sandbox had the same stall). S3 answers at once, so the server here must too."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    MotoRequestHandler.disable_nagle_algorithm = True


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request drowns test output
    make_conditional_writes_atomic()
    answer_without_nagle()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the parent closes it
    server.stop()


if __name__ == "__main__":
    main()
