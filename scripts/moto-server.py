"""moto's server with one request at a time (started by scripts/moto).

moto's own `moto_server` handles requests on parallel threads, and its DynamoDB backend checks a
ConditionExpression and writes the item without a lock: with 16 concurrent conditional PutItem
calls on one key, 7 rounds in 200 let two of them succeed (measured with moto 5.2.5). Real
DynamoDB makes a conditional write atomic, and sqskit's idempotency claims rely on it. Serialising
the requests restores that property; moto answers in a few milliseconds, so tests barely notice.

usage: python moto-server.py HOST PORT
"""

import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
