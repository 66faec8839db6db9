"""Settings for pfd-atomate (pydantic-settings, atomate2 style).

Values come from, in order of precedence: environment variables with the ``PFD_`` prefix
(e.g. ``PFD_RUN_DIR=/scratch/pfd``), the YAML file named by ``PFD_CONFIG_FILE``
(default ``~/.pfd.yaml``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEFAULT_CONFIG_FILE = "~/.pfd.yaml"


class PFDSettings(BaseSettings):
    """User settings; see the module docstring for where they are read from."""

    CONFIG_FILE: str = Field(_DEFAULT_CONFIG_FILE, description="YAML file with settings")
    RUN_DIR: Path = Field(Path("runs"), description="Root folder of embedded (on-disk) runs")
    MODEL_CACHE: Path = Field(
        Path("~/.cache/pfd_atomate/models").expanduser(), description="Where model files from the store are written"
    )

    TRAIN_CHECKPOINT_DIR: Path | None = Field(
        None,
        description="Folder (absolute, seen by every worker) where training jobs run, one subfolder per job; a "
        "training job run again after its worker was lost continues from its last checkpoint. None: in the job's "
        "own run folder, which FireWorks and jobflow-remote replace on a rerun",
    )

    model_config = SettingsConfigDict(env_prefix="PFD_", extra="ignore")

    @field_validator("TRAIN_CHECKPOINT_DIR")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """A relative folder would follow each launch's run folder, and a rerun would not find its checkpoints."""
        if value is not None and not value.expanduser().is_absolute():
            raise ValueError(f"TRAIN_CHECKPOINT_DIR (PFD_TRAIN_CHECKPOINT_DIR) must be an absolute path, got {str(value)!r}")
        return None if value is None else value.expanduser()

    @model_validator(mode="before")
    @classmethod
    def _load_yaml(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Fill values missing from the environment from the YAML config file.

        The file is parsed as plain YAML (``yaml.safe_load``): no tag or ``@module``/``@class``
        entry builds an object, so a settings file cannot run code.

        Raises
        ------
        ValueError: the file is not a mapping of settings.
        """
        import yaml

        config_file = Path(os.path.expanduser(values.get("CONFIG_FILE", os.environ.get("PFD_CONFIG_FILE", _DEFAULT_CONFIG_FILE))))
        if config_file.is_file():
            loaded = yaml.safe_load(config_file.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{config_file} must hold a mapping of settings, got {type(loaded).__name__}")
            return {k.upper().removeprefix("PFD_"): v for k, v in loaded.items()} | values  # the environment wins
        return values
