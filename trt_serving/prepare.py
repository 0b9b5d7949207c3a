"""``python -m trt_serving.prepare``: build a pod's default weights + engine artifact once.

Idempotent and safe under concurrency (an fcntl lock per model version; builds land by rename).
Prints the artifact directory as the last line. Without ``--backend``/``--precision`` it walks the
pod's default candidates (``HasherSettings().candidates()``: OpenVINO int8, then the fallbacks),
so an int8 build under the agreement floor falls through to the next candidate, never silently.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trt_serving.artifacts import DEFAULT_FLOOR, AgreementTooLow, BuildRequest, build_artifact
from trt_serving.engines.base import BACKENDS, PRECISIONS, EngineUnavailable

log = logging.getLogger("trt_serving.prepare")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trt_serving.prepare", description=__doc__)
    p.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    p.add_argument("--model", choices=["face", "fingerprint"], required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    from trt_serving.config import HasherSettings

    settings = HasherSettings(model=args.model, version=args.version, cache_dir=args.cache_dir)
    if args.backend:
        candidates = [(args.backend, args.precision or HasherSettings(backend=args.backend).candidates()[0][1])]
    else:
        candidates = settings.candidates()
    reasons = []
    for backend, precision in candidates:
        try:
            directory = build_artifact(BuildRequest(model=args.model, version=args.version, backend=backend,
                                                    precision=precision, cache_dir=args.cache_dir,
                                                    floor=DEFAULT_FLOOR, threads=args.threads))
        except (EngineUnavailable, AgreementTooLow) as exc:
            log.warning("%s:%s refused: %s", backend, precision, exc)
            reasons.append(f"{backend}:{precision}: {exc}")
            continue
        print(directory.resolve())  # noqa: T201 - the launcher reads this line
        return 0
    print("no artifact could be built: " + "; ".join(reasons), file=sys.stderr)  # noqa: T201
    return 1


if __name__ == "__main__":
    sys.exit(main())
