from __future__ import annotations

import pytest

from tests.backends import drop_redis_keys, make_settings, require_redis


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, databases, tmp_path):
    redis_client = require_redis()
    url = databases.sqlite() if request.param == "sqlite" else databases.postgres()
    s = make_settings(url, tmp_path / "home")
    yield s
    drop_redis_keys(redis_client, s.redis_prefix)


class LiveServer:
    """The app served by uvicorn in a thread on a free port (for concurrent clients, SSE and the CLI)."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        import time

        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(settings):
    from service.main import create_app

    app = create_app(settings)
    with LiveServer(app) as server:
        server.app = app
        yield server
