"""The Portkey AI gateway (`@portkey-ai/gateway` on npm) as a peer in the benchmark.

Installed once, pinned, into a cache directory outside the repository; run as
Node servers on a loopback port; pointed at the fake upstream per request, as
Portkey is meant to be used, by its `x-portkey-provider` and
`x-portkey-custom-host` headers (see `headers`).

Two things Portkey does not do by itself, done by a small launcher:
- it listens on every interface (`serve({port})`, no host): the launcher makes
  an unqualified listen bind 127.0.0.1, so the benchmark opens nothing else;
- it is one Node process: the launcher runs N of them with Node's own `cluster`
  module (the primary accepts and hands connections to the workers round-robin,
  as `pm2 -i N` does), so it gets the same worker count as the gateway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmgateway.testing.fake_upstream.app import DEFAULT_OPENROUTER_KEY, OPENROUTER_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterator

VERSION = "1.15.2"  # the registry's latest on 2026-12-01
# Portkey's package asks for ranges (`@hono/node-server ^1.3.3`); what npm picks
# for them today breaks it, so the versions it runs with are pinned here:
# - @hono/node-server 1.13.5, what Portkey's own lockfile resolves: from 1.14
#   on, its Response keeps the upstream fetch's immutable headers, and every
#   stream fails with 500 "Something went wrong" ("TypeError: immutable" in
#   updateHeaders; Portkey-AI/gateway#1389, seen here with 1.14.2 and 1.19.19);
# - @hono/node-ws 1.2.0, the newest that accepts that node-server (1.3 wants ^1.19);
# - hono 4.13.19, the newest 4.x on the day of the pin, so a rerun gets the same.
OVERRIDES = {"@hono/node-server": "1.13.5", "@hono/node-ws": "1.2.0", "hono": "4.13.19"}
# What the load generator sends with these headers: the fake upstream's
# OpenRouter-compatible endpoint, its key and model, as the direct path uses.
KEY = DEFAULT_OPENROUTER_KEY
MODEL = "openai/gpt-4o-mini"

_ENTRY = Path("node_modules/@portkey-ai/gateway/build/start-server.js")
_LAUNCHER_NAME = "launch.mjs"
# argv: <start-server.js> <workers> <Portkey's own arguments...>
LAUNCHER = """\
// Written by bench/peers/portkey.py: runs Portkey's Node server on 127.0.0.1
// with N workers (Node's cluster module; 1 worker: in this process).
import cluster from "node:cluster";
import net from "node:net";
import { pathToFileURL } from "node:url";

const [entry, workersText] = process.argv.slice(2, 4);
const workers = Number.parseInt(workersText, 10);
const READY = `portkey: all ${workers} workers listening`;
if (!entry || !(workers >= 1)) {
  console.error("usage: launch.mjs <start-server.js> <workers> [portkey arguments]");
  process.exit(2);
}

if (workers > 1 && cluster.isPrimary) {
  let stopping = false;
  let listening = 0;
  for (let i = 0; i < workers; i += 1) cluster.fork();
  // The port answers once the first worker listens; this line says all of them do.
  cluster.on("listening", () => {
    listening += 1;
    if (listening === workers) console.log(READY);
  });
  // A worker that dies takes the peer down, so the benchmark sees it.
  cluster.on("exit", (worker, code, signal) => {
    if (!stopping) {
      console.error(`portkey worker ${worker.process.pid} exited (${code ?? signal})`);
      process.exit(1);
    }
  });
  for (const name of ["SIGTERM", "SIGINT"]) {
    process.on(name, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
      process.exit(0);
    });
  }
} else {
  // Portkey calls server.listen(port, undefined): bind loopback, not every interface.
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (port, host, ...rest) {
    if (workers === 1) this.once("listening", () => console.log(READY));
    if (typeof port === "number" && (host === undefined || host === null)) {
      return listen.call(this, port, "127.0.0.1", ...rest);
    }
    return listen.call(this, port, host, ...rest);
  };
  // Portkey reads its own flags from process.argv.slice(2).
  process.argv.splice(1, 3, entry);
  await import(pathToFileURL(entry).href);
}
"""


def ready_line(workers: int) -> str:
    """What the launcher prints (to its log) once every worker listens, not only the first."""
    return f"portkey: all {workers} workers listening"


def cache_dir() -> Path:
    """Where this version is installed: outside the repository, shared by clones."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmgateway" / f"portkey-{VERSION}"


def package_json() -> str:
    """The cache's package.json: Portkey at VERSION, its dependencies at OVERRIDES."""
    manifest = {
        "name": "llmgateway-bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": VERSION},
        "overrides": OVERRIDES,
    }
    return json.dumps(manifest, indent=2) + "\n"


def install() -> Path:
    """Portkey in the cache (npm install once, again only if the pins change); its directory."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(
            "Portkey's gateway needs Node.js and npm on PATH (apt-get install nodejs npm)"
        )
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    manifest = package_json()
    marker = root / ".installed"
    with _locked(root / ".lock"):  # a test and a benchmark may install at once
        if not (marker.exists() and marker.read_text() == manifest and (root / _ENTRY).exists()):
            print(
                f"installing @portkey-ai/gateway {VERSION} into {root} (once)...", file=sys.stderr
            )
            (root / "package.json").write_text(manifest)
            subprocess.run(  # noqa: S603  # pinned package from the npm registry
                # Scripts off: its one (postinstall: patch-package) has no patches to apply,
                # and npm 11 skips it anyway; off, every npm behaves the same.
                [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=root,
                check=True,
            )
            marker.write_text(manifest)
        launcher = root / _LAUNCHER_NAME
        if not launcher.exists() or launcher.read_text() != LAUNCHER:
            launcher.write_text(LAUNCHER)
    return root


def command(port: int, workers: int) -> list[str]:
    """Portkey on 127.0.0.1:`port` with `workers` Node processes (installs it first if needed)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    root = install()
    node = shutil.which("node")
    if node is None:  # install() checked; PATH could change in between
        raise RuntimeError("node is not on PATH")
    # --headless: no log console; with NODE_ENV=production (environment()) no UI routes.
    return [
        node,
        str(root / _LAUNCHER_NAME),
        str(root / _ENTRY),
        str(workers),
        f"--port={port}",
        "--headless",
    ]


def environment() -> dict[str, str]:
    """Environment for `command`: lean mode, no proxy, only loopback trusted as a custom host."""
    return {
        "NODE_ENV": "production",
        # Portkey sends upstream requests through these when set; the fake is local.
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        # Its default list also trusts localhost, ::1 and host.docker.internal.
        "TRUSTED_CUSTOM_HOSTS": "127.0.0.1",
    }


def headers(fake_port: int) -> dict[str, str]:
    """What every request to Portkey carries besides `Authorization: Bearer KEY`:
    the provider whose wire it speaks and the upstream it forwards to."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{fake_port}{OPENROUTER_PREFIX}",
    }


def url(port: int) -> str:
    """Portkey's OpenAI-compatible chat endpoint."""
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def health_url(port: int) -> str:
    """Answers 200 ("AI Gateway says hey!") once Portkey is serving."""
    return f"http://127.0.0.1:{port}/"


def wait_ready(
    port: int, process: subprocess.Popen[bytes], log: Path, workers: int, seconds: float = 60
) -> None:
    """Until health_url answers 200 and the log (`process`'s stdout) says every worker
    listens: with the first alone up, early connections would all stick to it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Portkey exited with {process.returncode}; see {log}")
        if log.exists() and ready_line(workers) in log.read_text(errors="replace"):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url(port), timeout=2).status_code == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"Portkey did not get {workers} workers listening within {seconds} s")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
