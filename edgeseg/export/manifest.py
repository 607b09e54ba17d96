"""``manifest.json``: the record written beside every artifact.

One manifest per artifact folder. It says what the model is, how to feed it (input
spec), which components it has, and for every file in the folder (ONNX, quantized ONNX,
TFLite, TNN, TensorRT cache...) how it was made: graph, precision plan, calibration,
parity/fidelity figures and tool versions. Every step that writes into the folder
(export, calibrate, quantize, convert) appends itself to ``history``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.utils import atomic

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def tool_versions(*modules: str) -> dict[str, str]:
    """Versions of the named Python packages that are importable (never imports torch needlessly)."""
    from importlib import metadata

    import edgeseg

    out = {"edgeseg": edgeseg.__version__}
    for mod in modules:
        try:
            out[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Manifest:
    model: str
    model_cfg: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)  # InputSpec.to_dict()
    outputs: list[dict[str, Any]] = field(default_factory=list)  # [{name, shape}]
    components: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {module}
    presets: dict[str, str] = field(default_factory=dict)  # model's named precision plans
    weights: dict[str, Any] | None = None  # {path, sha256, format} or None (random init)
    # The model-family contract: which family's decoder / video strategy apply. A user's own
    # model has no family; ``decoder`` then names one (a family, or module:function) if given.
    family: str | None = None
    decoder: str | None = None
    source: dict[str, Any] | None = None  # user models: {"kind": "user", "entry": "file.py:fn"} / foreign ONNX
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> info
    history: list[dict[str, Any]] = field(default_factory=list)
    # Every file edgeseg wrote into the folder (relative paths): the only files a later
    # export, conversion or ``--overwrite`` may replace or remove (utils/outputs.py).
    files: list[str] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    # ----------------------------------------------------------------- artifacts
    def add_artifact(self, filename: str, **info: Any) -> dict[str, Any]:
        entry = self.artifacts.setdefault(filename, {})
        entry.update(info)
        return entry

    def add_files(self, *names: str) -> None:
        """Record files edgeseg wrote into the folder (side files such as logs and reports)."""
        self.files = sorted(set(self.files) | {str(n) for n in names if n})

    def written_files(self) -> set[str]:
        """Every file of the folder that edgeseg wrote: the manifest, the artifacts and the
        side files recorded with them (also for manifests written before ``files`` existed)."""
        out = {MANIFEST_NAME, *self.artifacts, *self.files}
        for name, info in self.artifacts.items():
            if not isinstance(info, dict):
                continue
            for key in ("log", "report"):  # TFLite's conversion log and I/O report
                if isinstance(info.get(key), str):
                    out.add(info[key])
            tnn = info.get("tnn")
            if isinstance(tnn, dict) and isinstance(tnn.get("model_file"), str):
                out.add(tnn["model_file"])
            if info.get("fidelity"):
                stem = name[:-len(".onnx")] if name.endswith(".onnx") else name
                out.update({f"{stem}.fidelity.json", f"{stem}.fidelity.md"})
        return out

    def artifact(self, filename: str) -> dict[str, Any]:
        if filename not in self.artifacts:
            raise EdgesegError(f"{filename} is not recorded in the manifest",
                               f"known artifacts: {', '.join(self.artifacts) or 'none'}")
        return self.artifacts[filename]

    def component_names(self) -> list[str]:
        return list(self.components)

    def plan(self, spec: str):
        """Parse a precision plan against this model's components and presets."""
        from edgeseg.quantize.plan import PrecisionPlan

        return PrecisionPlan.parse(spec, self.component_names(), self.presets)

    def record(self, step: str, **details: Any) -> None:
        self.history.append({"step": step, "time": _now(), **details})

    @classmethod
    def from_model(cls, model, weights: dict[str, Any] | None = None) -> "Manifest":
        """The model-level part of a manifest (no artifacts yet), read off a zoo model."""
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in getattr(model, "model_cfg", {}).items()}
        return cls(
            model=getattr(model, "model_name", type(model).__name__.lower()),
            model_cfg=cfg,
            input=model.input_spec.to_dict(),
            outputs=[{"name": n} for n in model.output_names],
            components={c: {"module": path} for c, path in model.component_map.components.items()},
            presets=dict(getattr(model, "precision_presets", {})),
            weights=weights,
            # Namespaced for user modules: their own children may be called "decoder" or "source".
            family=_str_or_none(getattr(model, "family", None)),
            decoder=_str_or_none(getattr(model, "edgeseg_decoder", None)),
            source=getattr(model, "edgeseg_source", None),
        )

    # ----------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": self.model,
            "model_cfg": self.model_cfg,
            "input": self.input,
            "outputs": self.outputs,
            "components": self.components,
            "presets": self.presets,
            "weights": self.weights,
            "family": self.family,
            "decoder": self.decoder,
            "source": self.source,
            "artifacts": self.artifacts,
            "history": self.history,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        if "model" not in d:
            raise EdgesegError("manifest has no 'model' field", "re-export the model with `edgeseg export`")
        return cls(
            model=d["model"], model_cfg=d.get("model_cfg", {}), input=d.get("input", {}),
            outputs=d.get("outputs", []), components=d.get("components", {}),
            presets=d.get("presets", {}),
            weights=d.get("weights"), artifacts=d.get("artifacts", {}),
            family=d.get("family"), decoder=d.get("decoder"), source=d.get("source"),
            history=d.get("history", []), files=list(d.get("files", [])),
            schema=d.get("schema", SCHEMA_VERSION),
        )

    def save(self, folder: str | os.PathLike) -> Path:
        return atomic.write_json(Path(folder) / MANIFEST_NAME, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Load from an artifact folder or from any file inside it."""
        p = find_manifest(path)
        if p is None:
            raise EdgesegError(f"no {MANIFEST_NAME} found for {path}",
                               "point at a folder written by `edgeseg export` (it holds manifest.json)")
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise EdgesegError(f"{p} is not valid JSON: {e}", "re-export the model with `edgeseg export`") from e


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def find_manifest(path: str | os.PathLike) -> Path | None:
    p = Path(path)
    candidates = [p / MANIFEST_NAME] if p.is_dir() else [p.parent / MANIFEST_NAME]
    if p.name == MANIFEST_NAME:
        candidates.insert(0, p)
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_written_files(folder: str | os.PathLike) -> set[str] | None:
    """The files an edgeseg ``manifest.json`` in ``folder`` says edgeseg wrote; None when the
    folder has no manifest, or one edgeseg cannot read (then it is the user's file)."""
    p = Path(folder) / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "model" not in data or not isinstance(data.get("artifacts", {}), dict):
            return None
        return Manifest.from_dict(data).written_files()
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _bare_model_fix(name: str) -> str:
    return f"move {name} to a folder of its own (without manifest.json) to use it as a bare model"


def verify_artifact(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any] | None:
    """The manifest entry of ``path`` after checking that it is the file edgeseg recorded.

    A manifest speaks for the files it lists: the model name, input spec and precision
    plan it records are only true of those files. A file beside it that it does not list
    (a foreign model dropped into an export folder), or a listed file whose sha256 no
    longer matches (replaced or edited after edgeseg wrote it), would otherwise be
    calibrated, evaluated or benchmarked as the recorded model. Returns ``None`` when
    there is no manifest beside ``path``, ``{}`` for a hand-written manifest that lists
    no artifacts (nothing to compare); ``sha256`` saves hashing a file twice.
    """
    p = Path(path)
    found = find_manifest(p)
    if found is None or p.name == MANIFEST_NAME:
        return None
    manifest = Manifest.load(found)
    if not manifest.artifacts:
        return {}
    entry = manifest.artifacts.get(p.name)
    if entry is None:
        listed = ", ".join(list(manifest.artifacts)[:6]) + (", ..." if len(manifest.artifacts) > 6 else "")
        raise EdgesegError(f"{p.name} is not one of the files recorded in {found} ({listed}), so that manifest "
                           f"cannot say which model it is or how to feed it",
                           _bare_model_fix(p.name) + ", or pass a file the manifest lists")
    checks = [(p, entry.get("sha256"))]
    companion = (entry.get("tnn") or {}).get("model_file")
    if companion and (entry.get("tnn") or {}).get("model_sha256"):
        checks.append((p.parent / companion, entry["tnn"]["model_sha256"]))
    for file, recorded in checks:
        if not recorded or not file.is_file():
            continue
        from edgeseg.utils.hashing import sha256_file

        actual = sha256 if (sha256 and file == p) else sha256_file(file)
        if actual != recorded:
            raise EdgesegError(
                f"{file.name} is not the file recorded in {found}: its sha256 is {actual[:12]}..., the manifest "
                f"records {recorded[:12]}... (it was replaced or changed after edgeseg wrote it)",
                f"re-run the step that wrote {file.name} (e.g. `edgeseg export`) into a fresh folder, or "
                + _bare_model_fix(file.name))
    return entry


def input_spec_of(manifest: Manifest):
    from edgeseg.data.preprocess import InputSpec

    return InputSpec.from_dict(manifest.input)


CHECKPOINT_METADATA_KEY = "edgeseg.manifest"


def manifest_for_artifact(path: str | os.PathLike) -> Manifest:
    """The manifest describing ``path``: ``manifest.json`` beside it, or, for a safetensors
    checkpoint written by ``save_weights``, the manifest embedded in its metadata.

    Lets every consumer (eval, track, bench) treat a trained checkpoint like any exported
    artifact: model name, config and input spec come with the file.
    """
    p = Path(path)
    if find_manifest(p) is not None:
        return Manifest.load(p)
    if p.suffix == ".safetensors" and p.is_file():
        try:
            from safetensors import safe_open

            with safe_open(os.fspath(p), framework="numpy") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises SafetensorError on corrupt headers
            raise EdgesegError(f"cannot read checkpoint {p}: {e}", "check the file is a safetensors checkpoint") from e
        if CHECKPOINT_METADATA_KEY in meta:
            return Manifest.from_dict(json.loads(meta[CHECKPOINT_METADATA_KEY]))
    raise EdgesegError(f"don't know which model {p.name} belongs to",
                       "pass --model NAME, or use a checkpoint saved by edgeseg (it embeds the model name)")
