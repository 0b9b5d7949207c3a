"""``python -m trt_serving``: one hasher pod, configured by ``SERVESTACK_HASHER_*`` variables."""

from __future__ import annotations

import uvicorn

from tracing import configure_json_logging
from trt_serving.app import create_app
from trt_serving.config import HasherSettings


def main() -> None:
    settings = HasherSettings()
    configure_json_logging("servestack-hasher", settings.log_level.upper())
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                log_level=settings.log_level, access_log=False)


if __name__ == "__main__":
    main()
