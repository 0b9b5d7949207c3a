"""`.servestack/stack.json`: how scripts, tests and other subcommands find a running local stack."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STACK_FILE = "stack.json"
DEFAULT_STATE_DIR = Path(".servestack")


@dataclass(frozen=True)
class StackInfo:
    """A running stack: base URL per service and the local API keys."""

    services: dict[str, str]
    api_key: str
    admin_api_key: str
    state_dir: Path
    pid: int = 0
    logs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return json.dumps(data, indent=2)


def write_stack_file(info: StackInfo) -> Path:
    """Atomically write stack.json (0600: it holds the local keys)."""
    path = info.state_dir / STACK_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(info.to_json())
    os.replace(tmp, path)
    return path


def read_stack_file(state_dir: Path = DEFAULT_STATE_DIR) -> StackInfo:
    """The running stack's info; FileNotFoundError with a hint when no stack runs."""
    path = Path(state_dir) / STACK_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start the stack with `servestack up` (or `make run`)")
    data = json.loads(path.read_text())
    return StackInfo(
        services=dict(data["services"]),
        api_key=data["api_key"],
        admin_api_key=data["admin_api_key"],
        state_dir=Path(data.get("state_dir", state_dir)),
        pid=int(data.get("pid", 0)),
        logs=dict(data.get("logs", {})),
    )
