"""Model files as JobStore objects.

A trained model is a file (a frozen deepmd-kit ``.pth``, a CHGNet checkpoint, ...). PFD jobs
return it as a :class:`ModelFile` whose bytes (base64) go to the JobStore's ``data``
additional store (GridFS on MongoDB), so a worker on another cluster can rebuild the file
with :meth:`ModelFile.materialize`. Locally materialized copies are cached by SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

#: what a name read from a store may look like: one plain file name, no folder, no leading dot
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def is_plain_name(value: str) -> bool:
    """Whether ``value`` can name a file or folder inside a chosen folder without leading out of it.

    One name (letters, digits, ``._+-``, at most 200 characters), no folder separator, no leading dot and no
    ``..`` anywhere. Used for every name that comes from a stored document (a model's file name, a job uuid).
    """
    return bool(_PLAIN_NAME.fullmatch(value)) and ".." not in value


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ModelFile(BaseModel):
    """A model file carried through the JobStore.

    Attributes
    ----------
    backend: trainer backend that reads it ("deepmd", "chgnet", ...).
    filename: original file name (suffix matters to the backends).
    sha256: hex digest of the bytes.
    size_bytes: length of the file in bytes.
    content_b64: the file, base64-encoded (lives in the ``data`` store).
    type_map: elements the model can handle, in the model's own order.
    kind: "finetuned", "scratch" or "pretrained" (lineage, free text allowed).
    parent_sha256: digest of the model it was fine-tuned from, if any.
    head: model branch/head of a multi-task checkpoint this model came from, if any.
    compressed_from_sha256: digest of the uncompressed model this one was compressed from
        (``dp --pt compress``), if any.
    """

    backend: str
    filename: str
    sha256: str
    size_bytes: int
    content_b64: str = Field(repr=False)
    type_map: list[str] = Field(default_factory=list)
    kind: str = "finetuned"
    parent_sha256: str | None = None
    head: str | None = None
    compressed_from_sha256: str | None = None

    @field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        """A document from a store must not choose where its file is written (no path, no ``..``)."""
        if not is_plain_name(value):
            raise ValueError(
                f"ModelFile.filename must be a plain file name (letters, digits, '._+-', no folder), got {value!r}"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"ModelFile.sha256 must be 64 lower-case hex digits, got {value!r}")
        return value

    @classmethod
    def from_path(cls, path: str | Path, backend: str, type_map: list[str] | None = None, **kwargs) -> ModelFile:
        """Read a model file from disk.

        Raises
        ------
        FileNotFoundError: if ``path`` does not exist.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        raw = path.read_bytes()
        return cls(
            backend=backend,
            filename=path.name,
            sha256=hashlib.sha256(raw).hexdigest(),
            size_bytes=len(raw),
            content_b64=base64.b64encode(raw).decode("ascii"),
            type_map=list(type_map or []),
            **kwargs,
        )

    def to_bytes(self) -> bytes:
        """The file's bytes; raises ``ValueError`` if they do not match ``sha256``."""
        raw = base64.b64decode(self.content_b64)
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise ValueError(f"model {self.filename}: content does not match its sha256 {self.sha256[:12]}")
        return raw

    def materialize(self, directory: str | Path | None = None) -> Path:
        """Write the file (once) and return its path.

        With ``directory=None`` the file goes to the cache
        ``$PFD_MODEL_CACHE`` (default ``~/.cache/pfd_atomate/models``)/<sha256>/<filename>.
        """
        from pfd_atomate.settings import PFDSettings

        base = Path(directory) if directory is not None else Path(PFDSettings().MODEL_CACHE).expanduser() / self.sha256
        target = base / self.filename
        if target.resolve().parent != base.resolve():  # the validator makes this impossible; belt and braces
            raise ValueError(f"model file {self.filename!r} would be written outside {base}")
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == self.sha256:
            return target
        base.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(target)  # atomic: parallel workers never read a half-written model
        return target


def as_model_file(obj: ModelFile | dict | None) -> ModelFile | None:
    """Coerce a stored/serialized model file (dict from the JobStore) to :class:`ModelFile`."""
    if obj is None or isinstance(obj, ModelFile):
        return obj
    return ModelFile.model_validate({k: v for k, v in obj.items() if not k.startswith("@")})
