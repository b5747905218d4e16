"""Check the container image recipe without a container builder (scripts/image-check.sh).

Reads the Dockerfile and runs what it says, outside a container: every RUN marked
`# image-check: run` through /bin/sh as written, with the image's absolute paths (MOVED_ROOTS)
moved under a temporary root, the build stage in a copy of exactly the files the
.dockerignore lets in; then the image's ENTRYPOINT and CMD with its ENV and no API keys
(the addresses in ENV and CMD moved to free loopback ports; the listen address, which the image
leaves at the gateway's default, set the way an operator's `docker run -e` would), its
HEALTHCHECK command, and SIGTERM. What cannot run outside a container (a RUN marked `skip`, the
USER) is checked by reading.

Run from the repository root: python -m scripts.image_check
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

from bench.processes import free_port
from llmgateway.server.config import DEFAULT_ADDRESS
from scripts.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    build_context,
    env_pairs,
    parse,
)

ROOT = Path(__file__).resolve().parent.parent
# The image's absolute paths the instructions use, each moved under the temporary root.
MOVED_ROOTS = ("/src", "/wheels", "/opt/llmgateway", "/var/lib/llmgateway")
# A debian python image's PATH; `python` comes first, from the stand-in bin directory.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Hang guards only: a start-up or a stop that takes this long has failed.
START_LIMIT_SECONDS = 60.0
STOP_LIMIT_SECONDS = 45.0
# Each command the check runs besides the server (a RUN: pip installing; a probe; --version).
COMMAND_LIMIT_SECONDS = 600.0
PROBE_LIMIT_SECONDS = 30.0


class ImageCheckError(Exception):
    """What the image would get wrong; the message says which instruction."""


def main() -> int:
    try:
        recipe = parse((ROOT / "Dockerfile").read_text())
        check_statically(recipe)
        with tempfile.TemporaryDirectory(prefix="llmgateway-image-") as temp:
            run_image(recipe, Path(temp))
    except (ImageCheckError, DockerfileError, subprocess.TimeoutExpired) as exc:
        print(f"image-check: FAILED: {exc}", file=sys.stderr)
        return 1
    say("passed: the Dockerfile's commands build, install, serve, report health and stop")
    return 0


def say(message: str) -> None:
    print(f"==> image-check: {message}", file=sys.stderr, flush=True)


# ---- what can only be read ----


def check_statically(recipe: Dockerfile) -> None:
    """The instructions whose effect needs a container: user, ports, signals, forms."""
    final = recipe.final_stage
    for run in (i for i in recipe.instructions if i.keyword == "RUN"):
        if run.marker is None or run.marker.split()[0] not in ("run", "skip"):
            raise ImageCheckError(
                f"line {run.line}: RUN has no `# image-check: run` or `# image-check: skip "
                "<why>` comment above it"
            )
    users = recipe.of(final, "USER")
    if not users:
        raise ImageCheckError("the image has no USER: it would run as root")
    user = users[-1]
    uid = user.body.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        raise ImageCheckError(f"line {user.line}: USER must be a numeric non-zero UID, got {uid!r}")
    for keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
        for later in recipe.of(final, keyword):
            if later.line < user.line:
                raise ImageCheckError(f"line {later.line}: {keyword} comes before USER")
    for run in recipe.of(final, "RUN"):
        declared = re.search(r"--uid[= ](\d+)", run.body)
        if declared and declared.group(1) != uid:
            raise ImageCheckError(
                f"line {run.line}: creates UID {declared.group(1)}, USER is {uid}"
            )
    for copy in recipe.of(final, "COPY") + recipe.of(final, "ADD"):
        if not any(f.startswith("--from=") for f in copy.flags):
            raise ImageCheckError(
                f"line {copy.line}: the runtime stage copies from the source tree"
            )
    stop = recipe.of(final, "STOPSIGNAL")
    if not stop or stop[-1].body != "SIGTERM":
        raise ImageCheckError(
            "the image needs STOPSIGNAL SIGTERM (the signal the gateway drains on)"
        )
    for keyword in ("ENTRYPOINT", "CMD"):
        found = recipe.of(final, keyword)
        if not found or found[-1].exec_form() is None:
            raise ImageCheckError(f"{keyword} must be in exec form, so llmgateway is PID 1")
    command = image_command_line(recipe)
    for arg in command:
        if arg.startswith("--"):
            flag = arg.partition("=")[0]
            raise ImageCheckError(
                f"the image's command {command} passes {flag}: a `serve` flag beats the "
                "operator's `docker run -e LLMGATEWAY_...` and the config file; set the "
                "setting with ENV instead"
            )
    say(
        f"read: runs as UID {uid}, STOPSIGNAL SIGTERM, exec-form ENTRYPOINT and CMD "
        f"{shlex.join(command)} (no flags, so the environment and config file decide)"
    )


def image_command_line(recipe: Dockerfile) -> list[str]:
    """ENTRYPOINT + CMD of the image, as written."""
    final = recipe.final_stage
    entrypoint = recipe.of(final, "ENTRYPOINT")[-1].exec_form() or []
    cmd = recipe.of(final, "CMD")[-1].exec_form() or []
    return entrypoint + cmd


def exposed_ports(recipe: Dockerfile) -> set[int]:
    ports: set[int] = set()
    for expose in recipe.of(recipe.final_stage, "EXPOSE"):
        ports.update(int(p.split("/")[0]) for p in expose.body.split())
    return ports


# ---- what can be run ----


class Moved:
    """The image's paths and ports, as they are in this run."""

    def __init__(self, temp: Path, ports: set[int]) -> None:
        self.temp = temp
        self.ports = {port: free_port() for port in sorted(ports)}

    def path(self, text: str, instruction: Instruction) -> str:
        """`text` with each image path under the temporary root; refuses an unknown one."""
        for found in re.finditer(r"(?<![\w.$/-])/[\w.-][\w./*-]*", text):
            if not any(_under(found.group(), root) for root in MOVED_ROOTS):
                raise ImageCheckError(
                    f"line {instruction.line}: {found.group()} is an image path the check "
                    "does not move: add its root to MOVED_ROOTS in scripts/image_check.py"
                )
        pattern = "|".join(re.escape(r) for r in MOVED_ROOTS)
        return re.sub(rf"(?<![\w.$/-])({pattern})(?=[/\s:\"']|$)", rf"{self.temp}\1", text)

    def address(self, text: str, instruction: Instruction) -> str:
        """HOST:PORT of an exposed port -> 127.0.0.1:<its free port here>."""

        def replace(found: re.Match[str]) -> str:
            port = int(found.group(2))
            if port not in self.ports:
                raise ImageCheckError(f"line {instruction.line}: port {port} is not EXPOSEd")
            return f"127.0.0.1:{self.ports[port]}"

        return re.sub(r"(0\.0\.0\.0|127\.0\.0\.1|localhost):(\d+)", replace, text)

    def value(self, text: str, instruction: Instruction) -> str:
        """An ENV value with its image paths and addresses moved."""
        return self.address(self.path(text, instruction), instruction)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def run_image(recipe: Dockerfile, temp: Path) -> None:
    moved = Moved(temp, exposed_ports(recipe))
    stand_in = temp / "bin"
    stand_in.mkdir()
    (stand_in / "python").symlink_to(image_python(recipe))
    base_env = {
        "PATH": f"{stand_in}:{IMAGE_PATH}",
        "HOME": str(temp / "home"),
        "LANG": "C.UTF-8",
    }
    env: dict[str, str] = {}
    for stage in recipe.stages:
        env = run_stage(recipe, stage, moved, dict(base_env))
    serve_and_probe(recipe, moved, env)


def image_python(recipe: Dockerfile) -> str:
    """An interpreter of the image's Python minor version, standing in for its `python`."""
    image = recipe.images[recipe.final_stage]
    wanted = re.search(r"python:(\d+\.\d+)", image)
    base = getattr(sys, "_base_executable", sys.executable)
    if wanted is None:
        raise ImageCheckError(f"the image {image!r} is not a python:X.Y image")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted.group(1):
        return str(base)
    other = shutil.which(f"python{wanted.group(1)}", path=IMAGE_PATH)
    if other:
        return other
    say(f"note: the image has Python {wanted.group(1)}; this host has not, checking with {base}")
    return str(base)


def run_stage(recipe: Dockerfile, stage: str, moved: Moved, env: dict[str, str]) -> dict[str, str]:
    """Run the stage's instructions in order; its environment at the end."""
    workdir = moved.temp
    for instruction in (i for i in recipe.instructions if i.stage == stage):
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction, env, partial(moved.value, instruction=instruction)))
        elif instruction.keyword == "WORKDIR":
            workdir = Path(moved.path(instruction.body, instruction))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and not instruction.flags:
            copy_context(instruction, workdir)
        elif instruction.keyword == "RUN":
            run(instruction, moved, env, workdir)
    env["WORKDIR"] = str(workdir)
    return env


def copy_context(instruction: Instruction, workdir: Path) -> None:
    if instruction.body != ". .":
        raise ImageCheckError(
            f"line {instruction.line}: the check copies the context as `COPY . .`"
        )
    ignore = (ROOT / ".dockerignore").read_text()
    files = build_context(ROOT, ignore)
    for source in files:
        target = workdir / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    say(f"line {instruction.line}: COPY . . -> {len(files)} files the .dockerignore lets in")


def run(instruction: Instruction, moved: Moved, env: dict[str, str], workdir: Path) -> None:
    assert instruction.marker is not None  # noqa: S101 - check_statically ensured it
    if instruction.marker.startswith("skip"):
        # What it makes under the image's paths (the data directory) is made here instead,
        # owned by whoever runs the check rather than by the image's user.
        for path in re.findall(r"(?<![\w.$/-])/[\w./-]+", instruction.body):
            if any(_under(path, root) for root in MOVED_ROOTS):
                Path(f"{moved.temp}{path}").mkdir(parents=True, mode=0o700, exist_ok=True)
        say(f"line {instruction.line}: not run ({instruction.marker})")
        return
    for flag in instruction.flags:
        mount = dict(p.partition("=")[::2] for p in flag.removeprefix("--mount=").split(","))
        if not flag.startswith("--mount=") or mount.get("type") != "bind":
            raise ImageCheckError(f"line {instruction.line}: the check knows no RUN flag {flag}")
        if mount.get("source") != mount.get("target"):
            raise ImageCheckError(f"line {instruction.line}: bind-mount a stage's path where it is")
    command = moved.path(instruction.body, instruction)
    say(f"line {instruction.line}: {command}")
    # Its output (pip's, mostly) is shown only when it fails.
    done = subprocess.run(  # noqa: S603
        ["/bin/sh", "-c", command],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=COMMAND_LIMIT_SECONDS,
    )
    if done.returncode != 0:
        raise ImageCheckError(
            f"line {instruction.line}: RUN exited {done.returncode}:\n{done.stdout}"
        )


def serve_and_probe(recipe: Dockerfile, moved: Moved, env: dict[str, str]) -> None:
    """The image's command: starts without keys, healthy, metrics, clean SIGTERM stop."""
    cmd = recipe.of(recipe.final_stage, "CMD")[-1]
    command = [moved.address(arg, cmd) for arg in image_command_line(recipe)]
    health = health_command(recipe, moved)
    workdir = Path(env.pop("WORKDIR"))
    check_installed(env, workdir)
    # The image's listen address (its ENV's, else the gateway's default) must be an EXPOSEd
    # port; here it is moved the way an operator moves it, with `-e LLMGATEWAY_ADDRESS=...`.
    # The server listening there, and nowhere else, shows that the operator's setting wins.
    address = moved.address(env.get("LLMGATEWAY_ADDRESS") or DEFAULT_ADDRESS, cmd)
    env["LLMGATEWAY_ADDRESS"] = address
    log_path = moved.temp / "serve.log"
    say(
        f"start: {shlex.join(command)} (the image's ENV, no API keys, "
        f"-e LLMGATEWAY_ADDRESS={address})"
    )
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603
            command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_listening(server, log_path, address)
        probe(health, env, workdir, expect_serving=True)
        # The command the HEALTHCHECK wraps, asked about one provider: no key, so NOT_SERVING
        # (exit 1), not merely some failure such as nothing answering (exit 2).
        provider = [image_command("llmgateway", env), "health", "--target", address]
        probe(
            [*provider, "--service", "provider/openrouter"],
            env,
            workdir,
            expect_serving=False,
            expect_code=1,
            expect_said="NOT_SERVING",
        )
        scrape_metrics(env)
        db = Path(env["LLMGATEWAY_DB"])
        if not db.is_file():
            raise ImageCheckError(f"the state database {db} (LLMGATEWAY_DB) was not created")
        say(f"state database created in the data directory: {db.name}")
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=STOP_LIMIT_SECONDS)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    said = log_path.read_text()
    if code != 0 or "stopped" not in said:
        raise ImageCheckError(f"after SIGTERM the server exited {code}; its log:\n{said}")
    say("SIGTERM: drained and exited 0")
    # Docker reads 1 as unhealthy and reserves 2: nothing listening must say 1.
    probe(health, env, workdir, expect_serving=False, expect_code=1)


def health_command(recipe: Dockerfile, moved: Moved) -> list[str]:
    found = recipe.of(recipe.final_stage, "HEALTHCHECK")
    if not found:
        raise ImageCheckError("the image has no HEALTHCHECK")
    check = found[-1]
    kind, _, rest = check.body.partition(" ")
    form = Instruction("CMD", (), rest.strip(), check.stage, check.line).exec_form()
    if kind != "CMD" or form is None:
        raise ImageCheckError(f"line {check.line}: HEALTHCHECK must be CMD [...] in exec form")
    return [moved.address(arg, check) for arg in form]


def check_installed(env: dict[str, str], workdir: Path) -> None:
    """The command runs from the virtual environment's wheels, not from a source tree."""
    where = subprocess.run(  # noqa: S603
        [
            image_command("python", env),
            "-c",
            "import llmgateway.server, llmgateway.client as c; print(c.__file__)",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROBE_LIMIT_SECONDS,
    )
    venv = Path(env["PATH"].split(":")[0]).parent
    if where.returncode != 0 or not Path(where.stdout.strip()).is_relative_to(venv):
        raise ImageCheckError(f"the image's python imports llmgateway from elsewhere: {where}")
    version = subprocess.run(  # noqa: S603
        [image_command("llmgateway", env), "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROBE_LIMIT_SECONDS,
    )
    if version.returncode != 0:
        raise ImageCheckError(f"llmgateway --version exited {version.returncode}: {version.stderr}")
    say(f"installed in {venv.name}: llmgateway --version says {version.stdout.strip()!r}")


def image_command(name: str, env: dict[str, str]) -> str:
    """`name` as the image's PATH finds it."""
    found = shutil.which(name, path=env["PATH"])
    if found is None:
        raise ImageCheckError(f"the image's PATH has no {name}")
    return found


def wait_for_listening(server: subprocess.Popen[bytes], log_path: Path, address: str) -> None:
    deadline = time.monotonic() + START_LIMIT_SECONDS
    while "llmgateway listening on" not in log_path.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise ImageCheckError(f"the server did not start; its log:\n{log_path.read_text()}")
        time.sleep(0.1)
    said = log_path.read_text()
    for line in said.splitlines():
        say(f"server: {line}")
    if f"llmgateway listening on {address} " not in said:
        raise ImageCheckError(
            f"the server does not listen on {address}, the LLMGATEWAY_ADDRESS an operator "
            "set: something in the image's command or ENV beats it"
        )


def probe(
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    *,
    expect_serving: bool,
    expect_code: int | None = None,
    expect_said: str | None = None,
) -> None:
    done = subprocess.run(  # noqa: S603
        command,
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROBE_LIMIT_SECONDS,
    )
    said = (done.stdout + done.stderr).strip()
    wrong_code = expect_code is not None and done.returncode != expect_code
    wrong_said = expect_said is not None and done.stdout.strip() != expect_said
    if (done.returncode == 0) != expect_serving or wrong_code or wrong_said:
        raise ImageCheckError(f"{shlex.join(command)} exited {done.returncode}: {said}")
    say(f"{shlex.join(command)} -> exit {done.returncode} {said!r}")


def scrape_metrics(env: dict[str, str]) -> None:
    # The image's CMD carries no flags (check_statically), so the ENV's address is the one.
    address = env.get("LLMGATEWAY_METRICS_ADDRESS")
    if not address:
        raise ImageCheckError("the image sets no LLMGATEWAY_METRICS_ADDRESS: no metrics")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        body = response.read().decode()
    if "llmgateway_" not in body:
        raise ImageCheckError(f"http://{address}/metrics has no llmgateway_ metrics")
    say(f"metrics served at the metrics address ({len(body.splitlines())} lines)")


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
