"""The model manifest: which model files Recognize uses, their hashes, and where to get them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator, model_validator)

from ex_app.config import MANIFEST_PATH


ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")]


class ManifestError(ValueError):
    """The manifest file is unreadable or an entry in it is invalid."""


class _Entry(BaseModel):
    """Immutable; a field it does not know is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class UrlSource(_Entry):
    """An HTTP(S) download of the model file."""

    url: str = Field(pattern=r"^https?://\S+$")


class PackageSource(_Entry):
    """A model file shipped inside an installed Python package, used in place."""

    python_package: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    path: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _stays_inside_package(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError("must be a relative path inside the package")
        return value


class DerivedSource(_Entry):
    """A model file made here from other models by a converter ("module:function").

    The converter is called as ``convert(*source_paths, output_path)``, the sources in the
    order ``derived_from`` names them (one name or a list). Its output must be deterministic:
    the manifest pins its sha256 like any other file's.
    """

    derived_from: tuple[ModelName, ...] = Field(min_length=1)
    converter: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @field_validator("derived_from", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


ModelSource = UrlSource | PackageSource | DerivedSource


class ModelSpec(_Entry):
    """One model file: what it is for, its exact bytes (sha256, size), and its sources in order.

    ``sha256: null`` says the hash of the published file could not be learned when the entry
    was written; such an entry must set ``pin_on_first_download: true``: the store then pins
    the hash of the first copy it gets (warning) and verifies every later copy against it,
    and ``size`` is the published size, used for progress and as a bound, not verified.
    """

    name: ModelName
    task: str
    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    pin_on_first_download: bool = False
    licence: str
    inputs: str
    sources: tuple[ModelSource, ...] = Field(min_length=1)
    # Another entry with the same inputs and outputs, used (with a warning) when no source
    # gives this one: a lesser model that a fresh machine can always have.
    fallback: ModelName | None = None

    @model_validator(mode="after")
    def _hash_or_pin(self) -> ModelSpec:
        if self.sha256 is None and not self.pin_on_first_download:
            raise ValueError("sha256 is null: set pin_on_first_download: true (and say why)")
        if self.sha256 is not None and self.pin_on_first_download:
            raise ValueError("pin_on_first_download is only for entries with sha256: null")
        return self

    @field_validator("sources")
    @classmethod
    def _one_package_at_most(cls, sources: tuple[ModelSource, ...]) -> tuple[ModelSource, ...]:
        for kind, field in ((PackageSource, "python_package"), (DerivedSource, "derived_from")):
            if sum(isinstance(s, kind) for s in sources) > 1:
                raise ValueError(f"at most one {field} source")
        return sources

    @property
    def urls(self) -> tuple[str, ...]:
        """The download URLs, in the order to try them."""
        return tuple(s.url for s in self.sources if isinstance(s, UrlSource))

    @property
    def package(self) -> PackageSource | None:
        """The installed Python package that ships this file, if any."""
        return next((s for s in self.sources if isinstance(s, PackageSource)), None)

    @property
    def derivation(self) -> DerivedSource | None:
        """How to make this file from another model, if it can be made here."""
        return next((s for s in self.sources if isinstance(s, DerivedSource)), None)


def _describe(error: ValidationError) -> str:
    errors = error.errors()
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in errors)


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelSpec]:
    """Read and validate the manifest; production sources must be https."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"{path}: cannot read manifest: {error}") from error
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ManifestError(f"{path}: expected a non-empty 'models' mapping")

    manifest: dict[str, ModelSpec] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: model {name!r}: expected a mapping of fields")
        try:
            spec = ModelSpec.model_validate({**entry, "name": name})
        except ValidationError as error:
            raise ManifestError(f"{path}: model {name!r}: {_describe(error)}") from error
        if insecure := [url for url in spec.urls if not url.startswith("https://")]:
            raise ManifestError(f"{path}: model {name!r}: sources must be https: {insecure}")
        manifest[name] = spec
    for spec in manifest.values():
        lesser = manifest.get(spec.fallback) if spec.fallback is not None else None
        if spec.fallback is not None and (lesser is None or lesser is spec or lesser.fallback):
            raise ManifestError(
                f"{path}: model {spec.name!r}: fallback {spec.fallback!r} must be another "
                "entry without a fallback of its own"
            )
        sources = spec.derivation.derived_from if spec.derivation else ()
        if unknown := [name for name in sources if name not in manifest]:
            raise ManifestError(
                f"{path}: model {spec.name!r}: derived from unknown model(s) {unknown}"
            )
    return manifest
