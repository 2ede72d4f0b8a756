"""The lifecycle every loopback test server shares: serve in a thread, stop cleanly."""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Self


class BackgroundServer:
    """A socketserver run in a daemon thread; subclasses bind it in ``start``."""

    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind a port and serve; subclasses build the server and call ``_serve``."""
        raise NotImplementedError

    def _serve(
        self, server: socketserver.BaseServer, poll: float, name: str | None = None
    ) -> Self:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(poll,), name=name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
