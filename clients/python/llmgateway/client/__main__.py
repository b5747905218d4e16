"""`python -m llmgateway.client chat|models ...`: the client commands where only
llmgateway-client is installed (the `llmgateway` command comes with the server)."""

from __future__ import annotations

import argparse
import sys

from llmgateway.client.cli import add_commands, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmgateway.client",
        description="Call an llmgateway: chat with a model, or list the models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_commands(commands)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
