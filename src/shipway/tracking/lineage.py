"""What produced a run: code (git), interpreter, installed packages, platform, user, command, seeds.

Everything except the seeds is captured once per process and cached, so starting a run costs
no subprocess. The package list is stored once per distinct environment and runs point at it
by hash.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import random
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from shipway.core.actor import os_user

_seeds: dict[str, int] = {}


def seed(value: int) -> int:
    """Seed Python's, NumPy's and (when imported) PyTorch's generators; runs record the seed."""
    if isinstance(value, bool) or not isinstance(value, int):
        from shipway.core.errors import InvalidInput

        raise InvalidInput(f"seed must be an integer, not {value!r}.")
    random.seed(value)
    _seeds["python"] = value
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed(value % (2**32))
        _seeds["numpy"] = value % (2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(value)
        _seeds["torch"] = value
    return value


def seeds() -> dict[str, int]:
    """The seeds set through :func:`seed` in this process so far."""
    return dict(_seeds)


def _git(args: list[str], cwd: Path, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


def _code_dir() -> Path:
    main = sys.argv[0] if sys.argv else ""
    if main and os.path.isfile(main):
        return Path(main).resolve().parent
    return Path.cwd()


@functools.lru_cache(maxsize=8)
def git_info(directory: Path, ignore: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch, remote and dirtiness of the repository holding ``directory``, if any."""
    root = _git(["rev-parse", "--show-toplevel"], directory)
    if root is None:
        return None
    commit = _git(["rev-parse", "HEAD"], directory)
    status = _git(["status", "--porcelain", "-z"], directory, strip=False) or ""
    changed = []
    for entry in status.split("\0"):
        path = entry[3:]
        if not entry or path.startswith(".shipway/"):
            continue
        if ignore is not None and str(Path(root) / path).startswith(str(ignore)):
            continue
        changed.append(path)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], directory)
    remote = _git(["config", "--get", "remote.origin.url"], directory)
    return {
        "commit": commit,
        "branch": None if branch == "HEAD" else branch,
        "dirty": bool(changed),
        "changed_files": changed[:50],
        "remote": _strip_credentials(remote) if remote else None,
        "root": root,
    }


def _strip_credentials(url: str) -> str:
    """A git remote without user info, query or fragment: secrets must not reach the store."""
    if "://" not in url:
        return url  # scp-like user@host:path carries a user name, not a secret
    scheme, rest = url.split("://", 1)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    # Passwords may hold '@' or '/' unescaped, so everything up to the last '@' goes; an '@'
    # in a path would cost the host name here, which is better than keeping a token.
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest}"


@functools.lru_cache(maxsize=1)
def environment() -> tuple[str, list[str]]:
    """The installed distributions as sorted ``name==version`` lines and their SHA-256."""
    packages = sorted(
        {
            f"{(dist.metadata['Name'] or '').lower()}=={dist.version}"
            for dist in metadata.distributions()
            if dist.metadata["Name"]
        }
    )
    return environment_hash(packages), packages


def environment_hash(packages: list[str]) -> str:
    """The SHA-256 that names a sorted list of ``name==version`` lines."""
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _process_facts() -> dict[str, Any]:
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "user": os_user(),
        "host": socket.gethostname(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
    }


def current_user() -> str:
    """The OS user running this process."""
    return os_user()


def capture(home: Path | None = None) -> dict[str, Any]:
    """The lineage of a run started now in this process (cached apart from the seeds)."""
    env_hash, packages = environment()
    facts = _process_facts()
    return {
        **facts,
        "git": git_info(_code_dir(), home),
        "environment": {"hash": env_hash, "packages": len(packages)},
        "seeds": seeds(),
        "pid": os.getpid(),
    }


def process_started(pid: int) -> int | None:
    """When a process started (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def process_alive(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a run is still running on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie has exited; only its parent has not reaped it yet
        return False
    return started is None or int(fields[19]) == started
