"""The peers' environments for ``bench/inference_peers.py``: one virtual environment per serving stack,
from the pins in ``pyproject.toml`` (``[tool.refit.bench-peers.<name>]``), and Debian's nginx binary.

    .venv/bin/python bench/peer_envs.py            # all of them (make bench runs this)
    .venv/bin/python bench/peer_envs.py kserve     # one

Each environment is ``.bench/<name>/``, rebuilt only when its pins change (a stamp holds them).
nginx is unpacked from Debian's package into ``.bench/nginx/`` rather than installed: installing
the package starts a system service on port 80, and the benchmark starts its own on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".bench"
SYSTEM_PYTHON = "/usr/bin/python3.11"


def peers() -> dict[str, dict[str, object]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["refit"]["bench-peers"]


def python(name: str) -> Path:
    """The interpreter of a peer's environment."""
    return HOME / name / "bin" / "python"


def ensure(name: str, say=print) -> Path:  # type: ignore[no-untyped-def]
    """``name``'s environment, built (or rebuilt) from its pins if they changed; its ``bin`` directory."""
    spec = peers()[name]
    home, stamp = HOME / name, HOME / name / "refit-pins.json"
    wanted = json.dumps(spec, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return home / "bin"
    say(f"  building the {name} environment in {home} …")
    shutil.rmtree(home, ignore_errors=True)
    base = SYSTEM_PYTHON if spec.get("python") == "system" else sys.base_prefix + "/bin/python3"
    subprocess.run([base, "-m", "venv", str(home)], check=True)
    subprocess.run([str(home / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    *spec["requires"]], check=True)  # type: ignore[misc]
    stamp.write_text(wanted)
    return home / "bin"


def nginx(say=print) -> Path:  # type: ignore[no-untyped-def]
    """Debian's nginx binary, unpacked from the package into ``.bench/nginx``."""
    binary = HOME / "nginx" / "usr" / "sbin" / "nginx"
    if binary.exists():
        return binary
    say("  unpacking Debian's nginx into .bench/nginx …")
    download = HOME / "nginx-deb"
    download.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["apt-get", "download", "nginx"], cwd=download).returncode:
        subprocess.run(["apt-get", "update", "-q"], check=True)  # a fresh machine has no package lists
        subprocess.run(["apt-get", "download", "nginx"], cwd=download, check=True)
    deb = next(download.glob("nginx_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(HOME / "nginx")], check=True)
    shutil.rmtree(download)
    return binary


def main() -> None:
    names = sys.argv[1:] or list(peers())
    for name in names:
        ensure(name)
    if not sys.argv[1:]:
        nginx()


if __name__ == "__main__":
    main()
