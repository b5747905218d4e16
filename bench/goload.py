"""Build and locate the Go load generator (bench/go), the benchmark's client that
is not Python.

Debian's Go toolchain and its packaged gRPC and protobuf sources build it
offline in GOPATH mode (module mode cannot resolve gRPC's requirements
offline). The Go messages are generated at build time from protos/ with buf and
the protoc-gen-go and protoc-gen-go-grpc plugins, themselves built from the
sources Debian ships under /usr/share/gocode: nothing generated is committed.
The binary is cached under a hash of everything that goes into it, so only the
first run of a change pays for a build.

    python -m bench.goload build   # prints the binary's path
    python -m bench.goload check   # gofmt, go vet, go test
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "bench" / "go"
PROTOS = ROOT / "protos"
BUF = ROOT / "node_modules" / ".bin" / "buf"
GOCODE = Path("/usr/share/gocode")
# Debian's packages: the compiler, and the gRPC and protobuf Go sources (with
# the code generators' sources) that GOPATH mode builds against.
PACKAGES = ("golang-go", "golang-google-grpc-dev", "golang-google-protobuf-dev")
REQUIRED = (
    GOCODE / "src" / "google.golang.org" / "grpc" / "cmd" / "protoc-gen-go-grpc",
    GOCODE / "src" / "google.golang.org" / "protobuf" / "cmd" / "protoc-gen-go",
)
# Where the generated messages live in the build's GOPATH (bench/go imports it).
GEN_IMPORT = "llmgateway.local/gen"
MAIN_IMPORT = "llmgateway.local/goload"


class GoUnavailableError(RuntimeError):
    """Go, or Debian's gRPC and protobuf Go sources, are missing and cannot be installed here."""


def cache_root() -> Path:
    """~/.cache/llmgateway (or $XDG_CACHE_HOME/llmgateway)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmgateway"


def _go_ready() -> bool:
    return shutil.which("go") is not None and all(path.is_dir() for path in REQUIRED)


def ensure_toolchain() -> None:
    """Install Debian's Go packages when missing (as root with apt-get, like
    scripts/ensure-redis.sh does for Redis); otherwise say what to install."""
    if _go_ready():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"==> installing {' '.join(PACKAGES)} for the Go load generator", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: S607
        subprocess.run(  # noqa: S603  # Debian's packages, from its registry
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],  # noqa: S607
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    if not _go_ready():
        raise GoUnavailableError(
            "the Go load generator needs Go and Debian's gRPC and protobuf Go sources: "
            f"apt-get install --no-install-recommends {' '.join(PACKAGES)}"
        )


def _go_version() -> str:
    done = subprocess.run(["go", "version"], capture_output=True, text=True, check=True)  # noqa: S607
    return done.stdout.strip()


def source_hash() -> str:
    """A hash of what goes into the binary: the Go sources, the protos, this
    builder and the Go toolchain's version."""
    digest = hashlib.sha256()
    files = sorted(SOURCES.glob("*.go")) + sorted(PROTOS.rglob("*.proto")) + [Path(__file__)]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(_go_version().encode())
    return digest.hexdigest()[:16]


def _environment(gopath: str) -> dict[str, str]:
    # CGO off: nothing here needs C, and the build then needs no C compiler.
    return {**os.environ, "GO111MODULE": "off", "GOPATH": gopath, "GOFLAGS": "", "CGO_ENABLED": "0"}


def _run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def _template(plugins: Path, out: Path) -> str:
    # Managed mode gives every proto a Go import path under GEN_IMPORT (the
    # protos declare none); buf leaves the well-known types' alone.
    return (
        "version: v2\n"
        "managed:\n"
        "  enabled: true\n"
        "  override:\n"
        "    - file_option: go_package_prefix\n"
        f"      value: {GEN_IMPORT}\n"
        "plugins:\n"
        f"  - local: {plugins / 'protoc-gen-go'}\n"
        f"    out: {out}\n"
        "    opt: paths=source_relative\n"
        f"  - local: {plugins / 'protoc-gen-go-grpc'}\n"
        f"    out: {out}\n"
        "    opt: paths=source_relative\n"
    )


def _build_into(work: Path) -> None:
    """Generate the messages and build the binary (work/goload) under `work`."""
    if not BUF.exists():
        raise RuntimeError(f"{BUF} is missing: run `npm ci` at the repository's root")
    gopath = work / "gopath"
    gen = gopath / "src" / GEN_IMPORT
    main = gopath / "src" / MAIN_IMPORT
    plugins = work / "plugins"
    for path in (gen, main, plugins):
        path.mkdir(parents=True)
    system = _environment(str(GOCODE))
    for name, package in (
        ("protoc-gen-go", "google.golang.org/protobuf/cmd/protoc-gen-go"),
        ("protoc-gen-go-grpc", "google.golang.org/grpc/cmd/protoc-gen-go-grpc"),
    ):
        _run(["go", "build", "-o", str(plugins / name), package], system, work)
    template = work / "buf.gen.yaml"
    template.write_text(_template(plugins, gen))
    _run([str(BUF), "generate", str(PROTOS), "--template", str(template)], system, ROOT)
    for source in SOURCES.glob("*.go"):
        shutil.copy2(source, main / source.name)
    _run(["go", "build", "-o", str(work / "goload"), "."], _environment(f"{gopath}:{GOCODE}"), main)


def build_dir() -> Path:
    """Where this version of the load generator is built: the binary, and the
    GOPATH (generated messages and a copy of bench/go) that `check` uses."""
    ensure_toolchain()
    return cache_root() / f"goload-{source_hash()}"


def binary() -> Path:
    """The load generator's binary, built first if this version of it is not cached."""
    final = build_dir()
    executable = final / "goload"
    if executable.exists():
        return executable
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    try:
        _build_into(work)
        shutil.rmtree(work / "plugins")
        # Publish with one rename so a concurrent build never sees half a
        # directory (the loser's copy is dropped).
        try:
            work.rename(final)
        except OSError:
            if not executable.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return executable


def check() -> None:
    """gofmt, go vet and the Go unit tests (bench/go/*_test.go), in the build's GOPATH."""
    final = binary().parent
    unformatted = subprocess.run(  # noqa: S603
        ["gofmt", "-l", str(SOURCES)],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if unformatted:
        raise RuntimeError(f"not gofmt-formatted: {unformatted}")
    env = _environment(f"{final / 'gopath'}:{GOCODE}")
    main_dir = final / "gopath" / "src" / MAIN_IMPORT
    _run(["go", "vet", "."], env, main_dir)
    _run(["go", "test", "-count=1", "."], env, main_dir)


def main() -> None:
    """Entry point: python -m bench.goload build|check."""
    if sys.argv[1:] == ["build"]:
        print(binary())
    elif sys.argv[1:] == ["check"]:
        check()
        print("gofmt, go vet and go test: clean")
    else:
        print("usage: python -m bench.goload build|check", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
