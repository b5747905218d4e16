"""python -m faults [--only TEXT]: the fault table's summary (see faults/report.py)."""

from __future__ import annotations

import os


def _main() -> None:
    # Set before gRPC is imported, which reads it once: otherwise its C core logs
    # a routine GOAWAY as each row's gateway stops.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from faults.report import main  # imported only once the setting is in place

    main()


if __name__ == "__main__":
    _main()
