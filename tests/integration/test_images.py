"""The images install: each Dockerfile's `pip install`, resolved here with `pip install --dry-run --report`.

No container builder runs here. Each Dockerfile installs its whole image with one `pip install`
(same flags, same constraint file under dockerfiles/); this test reads that command out of the
Dockerfile and resolves it against the repository with this venv's pip (Python 3.11, like
python:3.11-slim), then checks the report: one torch, the CPU build for api and monitor and the
CUDA build for the trainer (pipeline), no nvidia-pytriton anywhere, no CUDA libraries in the CPU
images, kfp in the pipeline image. The machine's own pip settings (config files, PIP_FIND_LINKS,
the torch cap) are left out, so the index flags are the Dockerfile's alone.

Where https://download.pytorch.org cannot be reached (this project's machines reach PyPI only), the
Dockerfile's ``--extra-index-url https://download.pytorch.org/whl/cpu`` is resolved as
``--find-links DIR``, DIR holding only the CPU wheel that index serves under that exact name
(``torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl``), taken from pip's find-links on this
machine or $CTR_TORCH_CPU_WHEELS. That proves the rest of the image resolves around the CPU torch
from PyPI and that the CPU wheel brings no CUDA libraries; it cannot prove that the index still
serves that file. The pipeline image's torch comes from PyPI and is resolved as it is.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ROOT / "dockerfiles"
IMAGES = {"api": "cpu", "monitor": "cpu", "pipeline": "cuda", "loadtest": "cpu"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
UID = "10001"
# pip settings that only say how to reach an index, not which one: kept from the environment.
TRANSPORT_ENV = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_RETRIES"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def _stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def _pip_commands(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """argv after `pip` (starting with install/wheel/download) of every pip call in RUN lines."""
    found = []
    for keyword, rest in instructions:
        if keyword != "RUN":
            continue
        for segment in re.split(r"&&|;|\|\|", rest):
            argv = shlex.split(segment)
            for i, word in enumerate(argv):
                is_pip = Path(word).name in {"pip", "pip3"} or (word == "pip" and i > 0 and argv[i - 1] == "-m")
                if is_pip and i + 1 < len(argv) and argv[i + 1] in {"install", "wheel", "download"}:
                    found.append(argv[i + 1 :])
                    break
    return found


def _files_of(argv: list[str]) -> list[str]:
    """The constraint and requirement files a pip command reads."""
    files = []
    for flag, value in itertools.pairwise(argv):
        if flag in {"-c", "--constraint", "-r", "--requirement"}:
            files.append(value)
    files += [a.split("=", 1)[1] for a in argv if re.match(r"--(constraint|requirement)=", a)]
    return files


def _dockerfile(name: str) -> str:
    return (DOCKERFILES / f"{name}.Dockerfile").read_text()


def _installs_project(argv: list[str]) -> bool:
    """The pip command installs the project: ``.``, or ``.[extras]``."""
    return any(a == "." or re.fullmatch(r"\.\[[\w,-]+\]", a) for a in argv[1:])


def _project_install(name: str) -> list[str]:
    """The one pip command of the Dockerfile that installs the project (`.`)."""
    commands = [c for c in _pip_commands(_instructions(_dockerfile(name))) if _installs_project(c)]
    assert len(commands) == 1, f"{name}: expected one pip command installing the project, found {commands}"
    return commands[0]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_one_pip_install_resolves_the_whole_image(name: str) -> None:
    """A single resolve: two pip steps (a torch wheel, then `.`) can each pick a torch of their own."""
    text = _dockerfile(name)
    stages = _stages(text)
    commands = _pip_commands(_instructions(text))
    assert len(commands) == 1, f"{name}: {len(commands)} pip commands, each resolving on its own: {commands}"
    assert commands[0][0] == "install", commands[0]
    assert not _pip_commands(stages[-1]), f"{name}: the final stage runs pip"
    assert _installs_project(commands[0]), f"{name}: the pip command does not install the project: {commands[0]}"
    copied = {src for keyword, rest in stages[0] if keyword == "COPY" for src in shlex.split(rest)[:-1]}
    for path in _files_of(commands[0]):
        assert (ROOT / path).is_file(), f"{name}: {path} is missing"
        assert path in copied, f"{name}: {path} is read by pip but not copied into the build stage"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_non_root_user_has_a_home(name: str) -> None:
    final = _stages(_dockerfile(name))[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] == UID, f"{name}: runs as {users[-1] if users else 'root'}, not {UID}"
    useradd = [shlex.split(rest) for keyword, rest in final if keyword == "RUN" and "useradd" in rest]
    assert len(useradd) == 1, f"{name}: expected one useradd, found {useradd}"
    argv = useradd[0]
    assert "--uid" in argv and argv[argv.index("--uid") + 1] == UID, argv
    assert "--no-create-home" not in argv and "-M" not in argv, f"{name}: the user gets no home: {argv}"
    assert "--create-home" in argv or "-m" in argv, f"{name}: useradd without --create-home: {argv}"
    home = argv[argv.index("--home-dir") + 1] if "--home-dir" in argv else f"/home/{argv[-1]}"
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert re.search(rf"(^|\s)HOME={re.escape(home)}(\s|$)", env), f"{name}: HOME is not set to {home}: {env!r}"


def test_components_install_nothing_at_run_time() -> None:
    """KFP's lightweight components pip-install kfp at start unless told not to; the image has it."""
    from dataclasses import asdict

    from kfp.dsl.python_component import PythonComponent

    from pipelines.components import components
    from pipelines.pipeline_settings import PipelineSettings

    image = PipelineSettings().pipeline_image
    found = {n: c for n, c in vars(components(image)).items() if isinstance(c, PythonComponent)}
    assert len(found) == len(asdict(components(image))) == 7, found
    for name, comp in found.items():
        container = comp.component_spec.implementation.container
        script = " ".join([*(container.command or []), *(container.args or [])])
        assert "pip install" not in script and "ensurepip" not in script, f"{name} installs at run time"
        assert container.image == image, f"{name} runs in {container.image}"


# --- resolving the installs -------------------------------------------------------------------------


def _reachable(url: str) -> bool:
    host = url.split("/")[2]
    try:
        with socket.create_connection((host, 443), timeout=5):
            return True
    except OSError:
        return False


def _torch_pin(argv: list[str]) -> str | None:
    """The torch version a pip command pins (`torch==V` in its constraint files or arguments)."""
    lines = [a for a in argv[1:] if not a.startswith("-")]
    for path in _files_of(argv):
        lines += [ln.split("#")[0].strip() for ln in (ROOT / path).read_text().splitlines()]
    pins = {ln.removeprefix("torch==") for ln in lines if ln.startswith("torch==")}
    assert len(pins) <= 1, f"two torch pins: {pins}"
    return pins.pop() if pins else None


def _find_links_here() -> list[Path]:
    """Directories pip on this machine looks in for wheels: $PIP_FIND_LINKS and pip's config."""
    values = [os.environ.get("CTR_TORCH_CPU_WHEELS", ""), os.environ.get("PIP_FIND_LINKS", "")]
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    values += [m.group(1) for m in re.finditer(r"find-links='([^']*)'", listed)]
    return [Path(p) for v in values for p in v.split() if p and Path(p).is_dir()]


def _cpu_index_stand_in(version: str, tmp_path: Path) -> list[str]:
    """`--find-links DIR`, DIR holding only the wheel the CPU index serves for this pin and interpreter."""
    wanted = f"torch-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    for directory in _find_links_here():
        if (directory / wanted).is_file():
            stand_in = tmp_path / "cpu-index"
            stand_in.mkdir()
            (stand_in / wanted).symlink_to(directory / wanted)
            return ["--find-links", str(stand_in)]
    pytest.fail(f"{CPU_INDEX} is unreachable and no {wanted} is on disk to stand in for it ($CTR_TORCH_CPU_WHEELS)")


def _dry_run_args(argv: list[str], tmp_path: Path) -> tuple[list[str], str]:
    """The Dockerfile's pip arguments, as a dry-run install here; and how the CPU index was reached."""
    args: list[str] = []
    how = "no CPU index"
    rest = iter(argv[1:])
    for arg in rest:
        if arg in {"--no-cache-dir", "--no-compile", "--quiet", "-q"}:
            continue
        if arg in {"-w", "--wheel-dir", "-d", "--dest"}:  # `pip wheel`/`download` output, meaningless here
            next(rest)
            continue
        if arg in {"--index-url", "-i", "--extra-index-url"}:
            url = next(rest)
            if url.rstrip("/") == CPU_INDEX and not _reachable(url):
                pin = _torch_pin(argv)
                assert pin, "the CPU index is used without a torch pin"
                args += _cpu_index_stand_in(pin, tmp_path)
                how = f"{CPU_INDEX} unreachable: its torch {pin} wheel from this machine's disk stands in"
            else:
                args += [arg, url]
                how = f"{url} as written" if url.rstrip("/") == CPU_INDEX else how
            continue
        args.append(arg)
    return args, how


# an image's install: its pip argv, how the CPU index was reached, pip's report (being resolved)
Resolving = tuple[list[str], str, "Future[dict[str, Any]]"]


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Resolving]]:
    """Every image's project install as a dry-run resolve: (argv, how, pip's report) per image.

    All start at once, since each mostly waits on the package index; api and monitor install the
    same, so they share one resolve."""
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the images are python:3.11-slim on linux/amd64; resolve with a Python 3.11 there")
    pool = ThreadPoolExecutor(len(IMAGES))
    shared: dict[tuple[str, ...], Future[dict[str, Any]]] = {}
    futures: dict[str, Resolving] = {}
    for name in sorted(IMAGES):
        tmp = tmp_path_factory.mktemp(f"resolve-{name}")
        argv = _project_install(name)
        args, how = _dry_run_args(argv, tmp)
        key = tuple(a for a in args if not a.startswith(str(tmp)))
        if key not in shared:
            shared[key] = pool.submit(_resolve_now, args, tmp)
        futures[name] = (argv, how, shared[key])
    yield futures
    pool.shutdown(wait=False, cancel_futures=True)


def _resolve_now(args: list[str], tmp_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in TRANSPORT_ENV}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    command += ["--report", str(report), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{shlex.join(command)}` does not resolve:\n{done.stderr[-6000:]}"
    return json.loads(report.read_text())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_install_resolves(name: str, resolutions: dict[str, Resolving]) -> None:
    argv, how, resolving = resolutions[name]
    report = resolving.result()
    installs = {_canonical(i["metadata"]["name"]): i for i in report["install"]}
    versions = {n: i["metadata"]["version"] for n, i in installs.items()}
    summary = f"{name} ({how}): " + ", ".join(f"{n}=={v}" for n, v in sorted(versions.items()))

    problems = []
    torches = [i for i in report["install"] if _canonical(i["metadata"]["name"]) == "torch"]
    if len(torches) != 1:
        problems.append(f"{len(torches)} torch packages")
    torch, pin = versions.get("torch", "none"), _torch_pin(argv)
    if "nvidia-pytriton" in installs:
        problems.append(f"nvidia-pytriton {versions['nvidia-pytriton']} is in the image")
    # CUDA wheels: nvidia-* (pytriton is counted above), cuda-*, and OpenAI's triton compiler.
    cuda = sorted(
        n for n in installs if n != "nvidia-pytriton" and (n.startswith(("nvidia-", "cuda-")) or n == "triton")
    )
    if IMAGES[name] == "cpu":
        if torch != pin or not torch.endswith("+cpu"):
            problems.append(f"torch {torch} is not the CPU build pinned by the install (pin: {pin})")
        if cuda:
            problems.append(f"CUDA libraries in a CPU image: {cuda}")
    else:
        if torch != pin or "+" in torch:
            problems.append(f"torch {torch} is not PyPI's CUDA build pinned by the install (pin: {pin})")
        if not any(n.startswith("nvidia-cuda-runtime") for n in cuda):
            problems.append("torch comes without the CUDA runtime")
        if "kfp" not in installs:
            problems.append("kfp is not in the image: the components would have to install it")
    assert not problems, f"{name}: " + "; ".join(problems) + f"\n{summary}"
