"""One YAML/JSON configuration for a whole PFD run, mapping one to one onto the Makers.

Each section is a pydantic model generated from the dataclass it configures (its fields, types,
defaults and the descriptions of its docstring), so a key of the file is a field of a Maker or a
backend, nothing more:

==================  =====================================================================
key                 builds
==================  =====================================================================
``perturb``         :class:`~pfd_atomate.perturb.jobs.PerturbMaker`
``label``           :class:`~pfd_atomate.label.flows.LabelMaker` with ``labeller`` one of
                    ``{kind: vasp}`` (atomate2 ``StaticMaker``, MP settings),
                    ``{kind: cp2k, ...}`` (:func:`~pfd_atomate.label.cp2k.cp2k_static_maker`)
                    or ``{kind: forcefield, force_field_name: ...}``
``finetune``        :class:`~pfd_atomate.finetune.jobs.FinetuneMaker`; ``trainer`` is a
                    ``{backend: deepmd, ...}`` (:class:`DeepMDBackend`) or
                    ``{backend: chgnet, ...}`` (:class:`CHGNetBackend`)
``distill``         :class:`~pfd_atomate.distill.flows.DistillMaker` (``null``: no distillation)
==================  =====================================================================

plus ``structures`` (files: POSCAR, CIF, extxyz, anything pymatgen or ASE reads), ``run_dir``,
``workers`` and ``max_memory_gib``. Everything is validated when the file is read, before any job
exists: an unknown key or a bad value fails with its full key path and what is allowed
(:func:`load_config`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from atomate2.forcefields.jobs import ForceFieldStaticMaker
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import to_jsonable_python

from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.flows import PFDMaker
from pfd_atomate.label.cp2k import cp2k_static_maker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.presets import distillation_perturb, dpa4_teacher, se_e2_a_student
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.train.deepmd import DeepMDBackend


class ConfigError(ValueError):
    """A configuration that cannot run: every problem, each with its key path and what is allowed."""


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the "Parameters"/"Attributes" section of a class docstring."""
    docs: dict[str, str] = {}
    current: list[str] = []
    for line in (cls.__doc__ or "").splitlines():
        m = re.match(r"^    ([a-z_][a-z0-9_, ]*?): (.*)$", line)
        if m:
            current = [n.strip() for n in m.group(1).split(",")]
            docs.update(dict.fromkeys(current, m.group(2).strip()))
        elif current and line.startswith("        ") and line.strip():
            for name in current:
                docs[name] += " " + line.strip()
        else:
            current = []
    return docs


class _Section(BaseModel):
    """A configuration section that builds one object (``target``) from its fields."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    target: ClassVar[Callable[..., Any]]
    #: fields passed to the target under another name, or not at all (discriminators)
    skip: ClassVar[tuple[str, ...]] = ()

    def build(self) -> Any:
        """The object these settings describe (nested sections are built too)."""
        kwargs = {name: _build(getattr(self, name)) for name in type(self).model_fields if name not in self.skip}
        return type(self).target(**kwargs)

    @model_validator(mode="after")
    def _buildable(self) -> _Section:
        # the object's own checks (ranges, combinations) run when the file is read
        self.build()
        return self


def _build(value: Any) -> Any:
    if isinstance(value, _Section):
        return value.build()
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def section(cls: type, name: str, *, exclude: tuple[str, ...] = (), overrides: dict[str, tuple[Any, Any]] | None = None,
            extra: dict[str, tuple[Any, Any]] | None = None, defaults_from: Any = None) -> type[_Section]:
    """A :class:`_Section` model with the fields of dataclass ``cls``.

    Parameters
    ----------
    cls: the dataclass (a Maker or a backend).
    name: name of the model.
    exclude: fields not configurable from a file (job names, nested atomate2 Makers).
    overrides: ``{field: (type, default)}`` for fields whose type is another section.
    extra: more fields (``(type, default)``) that are not passed on (e.g. a discriminator).
    defaults_from: an instance whose values are the defaults (a preset), else the dataclass's.
    """
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    fields: dict[str, Any] = dict(extra or {})  # a discriminator first, as a file would have it
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if overrides and f.name in overrides:
            fields[f.name] = overrides[f.name]
            continue
        # pydantic reads a dataclass field's default or default_factory (none: required) itself
        default = f if defaults_from is None else Field(
            default_factory=lambda v=getattr(defaults_from, f.name): copy.deepcopy(v))
        fields[f.name] = (Annotated[hints[f.name], Field(description=docs.get(f.name))], default)
    model = create_model(name, __base__=_Section, __doc__=(cls.__doc__ or "").split("\n\n")[0], **fields)
    model.target = cls
    model.skip = tuple(extra or ())
    return model


DeepMDConfig = section(DeepMDBackend, "DeepMDConfig", extra={"backend": (Literal["deepmd"], "deepmd")},
                       defaults_from=dpa4_teacher())
DeepMDConfig.__doc__ = "deepmd-kit trainer (DeepMDBackend); the defaults are the DPA-4 teacher's."
StudentConfig = section(DeepMDBackend, "StudentConfig", extra={"backend": (Literal["deepmd"], "deepmd")},
                        defaults_from=se_e2_a_student())
StudentConfig.__doc__ = "deepmd-kit student trained from scratch (DeepMDBackend); the defaults are se_e2_a's."
# built through the preset, so that input_overrides from a file add to the default student's nets (as in Python)
StudentConfig.target = staticmethod(se_e2_a_student)
CHGNetConfig = section(CHGNetBackend, "CHGNetConfig", extra={"backend": (Literal["chgnet"], "chgnet")})
TrainerConfig = Annotated[Union[DeepMDConfig, CHGNetConfig], Field(discriminator="backend")]  # noqa: UP007

PerturbConfig = section(PerturbMaker, "PerturbConfig", exclude=("name",))
DistillPerturbConfig = section(PerturbMaker, "DistillPerturbConfig", exclude=("name",),
                               defaults_from=distillation_perturb())
DistillPerturbConfig.__doc__ = "Strained + rattled frames for the distillation teacher; the defaults are presets.distillation_perturb's."
SelectConfig = section(SelectMaker, "SelectConfig", exclude=("name",))


def _vasp_static_maker(user_incar_settings: dict, user_kpoints_settings: dict):
    from atomate2.vasp.jobs.core import StaticMaker
    from atomate2.vasp.sets.core import StaticSetGenerator

    generator = StaticSetGenerator(user_incar_settings=user_incar_settings, user_kpoints_settings=user_kpoints_settings)
    return StaticMaker(input_set_generator=generator)


class VaspLabeller(_Section):
    """atomate2's VASP ``StaticMaker`` with Materials Project settings (plus the changes given)."""

    target: ClassVar = staticmethod(_vasp_static_maker)
    skip: ClassVar = ("kind",)
    kind: Literal["vasp"] = "vasp"
    user_incar_settings: dict[str, Any] = Field(default_factory=dict, description="INCAR tags over MP's")
    user_kpoints_settings: dict[str, Any] = Field(default_factory=dict, description="k-point settings over MP's")


class Cp2kLabeller(_Section):
    """atomate2's CP2K ``StaticMaker`` through :func:`~pfd_atomate.label.cp2k.cp2k_static_maker`."""

    target: ClassVar = staticmethod(cp2k_static_maker)
    skip: ClassVar = ("kind",)
    kind: Literal["cp2k"] = "cp2k"
    basis_and_potential: dict[str, tuple[str, str]] | None = Field(
        None, description="{element: [basis, pseudopotential]} from cp2k-data (default: Si DZVP-MOLOPT-SR-GTH, GTH-PBE-q4)")
    kpoints: tuple[int, int, int] | None = Field((4, 4, 4), description="Monkhorst-Pack mesh; null: Gamma only")
    kpoint_density: float | None = Field(
        None, description="k-points per Å^-3: a mesh per input structure, kept for its frames (replaces kpoints)")
    cutoff: float = Field(300.0, description="plane-wave cutoff, Ry")
    rel_cutoff: float = Field(40.0, description="relative cutoff, Ry")
    xc_functional: str = "PBE"
    smearing_temperature: float | None = Field(300.0, description="Fermi-Dirac temperature, K; null: no smearing")
    spin_polarized: bool = False
    eps_scf: float = 1e-6
    eps_default: float = 1e-10
    mixing_alpha: float = 0.4
    basis_filename: str = "BASIS_MOLOPT"
    potential_filename: str = "GTH_POTENTIALS"


class ForceFieldLabeller(_Section):
    """atomate2's ``ForceFieldStaticMaker``: a machine-learned or classical force field as labeller."""

    target: ClassVar = ForceFieldStaticMaker
    skip: ClassVar = ("kind",)
    kind: Literal["forcefield"] = "forcefield"
    force_field_name: str | dict[str, Any] = Field(
        description="an atomate2 MLFF name (e.g. 'CHGNet') or {'@module': ..., '@callable': ...} of an ASE calculator")
    calculator_kwargs: dict[str, Any] = Field(default_factory=dict)


Labeller = Annotated[Union[VaspLabeller, Cp2kLabeller, ForceFieldLabeller], Field(discriminator="kind")]  # noqa: UP007


class LabelConfig(_Section):
    """:class:`~pfd_atomate.label.flows.LabelMaker`: the DFT (or other) labeller and its tolerance."""

    target: ClassVar = LabelMaker
    labeller: Labeller = Field(default_factory=VaspLabeller, description="the atomate2 static Maker")
    min_success_ratio: float = Field(0.9, description="the labelling fails below this fraction of labelled frames")
    batch_size: int | None = Field(None, description="frames per static job (force-field labellers only)")
    reuse_labels: bool = Field(True, description="reuse labels of the same frames and settings found in the store")
    pin_kpoints: bool = Field(True, description="label every frame of an input structure on that structure's "
                                                "automatic k-point mesh; false: each frame on its own cell's mesh")

    def build(self) -> LabelMaker:
        """The LabelMaker (``pin_kpoints``: ``PFDMaker`` sets the input structures as ``kpoint_references``)."""
        return LabelMaker(static_maker=self.labeller.build(), min_success_ratio=self.min_success_ratio,
                          batch_size=self.batch_size, reuse_labels=self.reuse_labels,
                          kpoint_references=None if self.pin_kpoints else [])


FinetuneConfig = section(FinetuneMaker, "FinetuneConfig", exclude=("name", "label", "md_maker"),
                         overrides={"trainer": (TrainerConfig, Field(default_factory=DeepMDConfig)),
                                    "select": (SelectConfig, Field(default_factory=SelectConfig))})
DistillConfig = section(DistillMaker, "DistillConfig", exclude=("name", "teacher", "md_maker", "static_maker"),
                        overrides={"student": (StudentConfig, Field(default_factory=StudentConfig)),
                                   "perturb": (Union[DistillPerturbConfig, None], Field(
                                       default_factory=DistillPerturbConfig,
                                       description="strained + rattled frames for the teacher to label (null: MD only)"))})


class PFDConfig(_Section):
    """A whole PFD run: input structures, where it runs, and the settings of every step."""

    target: ClassVar = PFDMaker
    skip: ClassVar = ("structures", "run_dir", "workers")
    structures: list[Path] = Field(min_length=1, description="structure files (POSCAR, CIF, extxyz, ...)")
    run_dir: Path = Field(Path("runs/pfd"), description="run folder (the embedded store; an existing one is resumed)")
    workers: int = Field(1, ge=1, description="parallel single-threaded workers of the local engine")
    perturb: PerturbConfig = Field(default_factory=PerturbConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    distill: DistillConfig | None = Field(default_factory=DistillConfig, description="null: no distillation")
    max_memory_gib: float | None = Field(None, description="refuse cells needing more memory (null: this machine's)")

    @model_validator(mode="before")
    @classmethod
    def _default_tags(cls, data: Any) -> Any:
        """``backend: deepmd`` and ``kind: vasp`` may be left out (the defaults' kinds)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section_key, key, tag, value in (("finetune", "trainer", "backend", "deepmd"),
                                             ("distill", "student", "backend", "deepmd"),
                                             ("label", "labeller", "kind", "vasp")):
            part = data.get(section_key)
            if isinstance(part, dict) and isinstance(part.get(key), dict) and tag not in part[key]:
                data[section_key] = {**part, key: {tag: value, **part[key]}}
        return data

    def load_structures(self, base: Path | None = None) -> list[Any]:
        """Read ``structures`` (relative paths against ``base``, the config file's folder).

        Raises
        ------
        ConfigError: a file that does not exist or that no reader understands.
        """
        return [read_structure(p if p.is_absolute() or base is None else base / p) for p in self.structures]


def read_structure(path: Path):
    """A pymatgen ``Structure`` from a file pymatgen reads (POSCAR, CIF, ...) or, failing that, ASE (extxyz, ...).

    Raises
    ------
    ConfigError: missing file, or no reader for it.
    """
    from pymatgen.core import Structure

    if not Path(path).is_file():
        raise ConfigError(f"structures: file not found: {path}")
    try:
        return Structure.from_file(str(path))
    except Exception:  # noqa: BLE001 - pymatgen raises many types for formats it does not read; ASE next
        pass
    try:
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(read(str(path)))
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"structures: cannot read {path} as a crystal structure ({err})") from err


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the section at ``loc`` (for 'unknown key' errors)."""
    current: Any = model
    for part in loc[:-1]:
        # a list index, or a discriminated union member's tag (pydantic puts it in the path), stays in the section
        fields = getattr(current, "model_fields", {})
        if part in fields:
            annotation = fields[part].annotation
            args = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = args[0] if args else annotation
    return sorted(getattr(current, "model_fields", {}) or []) or None


def format_errors(err: ValidationError, model: type[BaseModel] = PFDConfig) -> str:
    """One line per problem: ``key.path: message`` (and the allowed keys for an unknown one)."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("vasp", "cp2k", "forcefield",
                                                                                     "deepmd", "chgnet")))
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(e["loc"]))
            message = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        lines.append(f"{path or '<top>'}: {message}")
    return "\n".join(lines)


def load_config(source: str | Path | dict[str, Any]) -> PFDConfig:
    """Read and validate a PFD configuration (YAML or JSON file, or a dict).

    Raises
    ------
    ConfigError: unreadable file, or settings that fail validation (all problems, each with its
        key path).
    """
    if isinstance(source, dict):
        data = source
    else:
        text = Path(source).read_text()
        data = json.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a PFD configuration is a mapping of settings")
    try:
        return PFDConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err)) from None


def example_config() -> str:
    """A complete configuration with every default and a comment per key (``pfd config example``)."""
    config = PFDConfig(structures=[Path("POSCAR")])
    lines = ["# pfd-atomate configuration: every key with its default (pfd config schema gives the JSON schema)",
             "# Run with: pfd run this-file.yaml"]
    _emit(config, 0, lines)
    return "\n".join(lines) + "\n"


def _emit(model: BaseModel, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        comment = f"  # {info.description}" if info.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{comment}")
            _emit(value, indent + 1, lines)
            continue
        # JSON is YAML: one line per key, whatever the value
        lines.append(f"{pad}{name}: {json.dumps(to_jsonable_python(value), ensure_ascii=False)}{comment}")
