"""``python -m router``: settings from SERVESTACK_ROUTER_*, JSON logs, uvicorn on host:port."""

from __future__ import annotations

import uvicorn

from router.app import create_app
from router.config import RouterSettings
from tracing import configure_json_logging


def main() -> None:
    settings = RouterSettings()
    configure_json_logging("servestack-router", settings.log_level)
    app = create_app(settings)
    # log_config=None keeps the JSON logging configured above; uvloop/httptools when installed.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
