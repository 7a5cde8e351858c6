"""Running the app under uvicorn with the limits a server exposed to slow or hostile clients needs.

- Header timeout: a connection must deliver a request's complete headers within
  ``header_timeout`` seconds of connecting (or of its previous response); otherwise it gets
  408 and is closed. uvicorn has no such limit, so an idle or trickling client (slowloris) could
  hold a connection forever. The body has its own limit (:class:`~.middleware.Protection`).
- Keep-alive timeout: idle keep-alive connections close after ``keep_alive_timeout`` seconds.
- Graceful drain: on SIGTERM/SIGINT the engine starts draining at once (``/health`` says
  ``draining``, new requests get 503); requests still running after ``drain_timeout`` seconds
  are answered with a JSON 503, or an error event and ``[DONE]`` on a stream, before uvicorn
  closes their connections.
"""

from __future__ import annotations

import json
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_body

#: Extra seconds uvicorn waits after the drain deadline for handlers to send their 503s.
ANSWER_GRACE_S = 10.0


def header_timeout_protocol(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # a request has begun (or the connection is idle) but its headers are incomplete
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the next request is governed by uvicorn's keep-alive timeout until its first byte arrives

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a response is being sent on this connection
            body = json.dumps(error_body(408, f"request headers not received within {timeout:g} s",
                                         code="request_timeout")).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)
            self.transport.close()

    return HeaderTimeoutProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn's server that starts the engine's drain as soon as a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, engine, drain_timeout: float):
        super().__init__(config)
        self.engine, self.drain_timeout = engine, drain_timeout
        self._drain: threading.Thread | None = None

    def handle_exit(self, sig, frame) -> None:
        if self._drain is None:
            self._drain = threading.Thread(target=self.engine.drain, args=(self.drain_timeout,),
                                           name="deltainv-drain", daemon=True)
            self._drain.start()
        super().handle_exit(sig, frame)


def serve(app, engine, *, host: str, port: int, drain_timeout: float, header_timeout: float,
          keep_alive_timeout: float, log_level: str = "info") -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=header_timeout_protocol(header_timeout),
                            timeout_keep_alive=keep_alive_timeout,
                            timeout_graceful_shutdown=drain_timeout + ANSWER_GRACE_S)
    DrainingServer(config, engine, drain_timeout).run()
