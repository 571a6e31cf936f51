"""Load a registered model: TorchScript archives and MONAI bundles, never pickles.

Two formats are accepted (:class:`~workbench.inference.registry.ModelFormat`):

``torchscript``
    One TorchScript archive written by ``torch.jit.save``, loaded with
    ``torch.jit.load``. TorchScript code runs in the TorchScript interpreter,
    not as Python.
``monai_bundle``
    A folder with ``configs/metadata.json``, ``configs/inference.json`` and
    either ``models/model.ts`` (TorchScript) or ``models/model.pt`` (a state
    dict read with ``torch.load(weights_only=True)`` into the network that
    ``monai.bundle.ConfigParser`` builds from ``network_def``). The network
    definition may only name classes of ``monai.networks.nets`` and may not
    contain expressions (``$...``), macros (``%...``) or references
    (``@...``), because those would run code from the bundle.

Anything else, in particular a pickled model object, is refused before it is
read: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.errors import ModelError
from workbench.inference.registry import (
    ModelFormat,
    ModelSpec,
    hash_model_files,
    model_digest,
    verify_model_files,
)

__all__ = ["LoadedModel", "load_model"]

_BUNDLE_METADATA = "configs/metadata.json"
_BUNDLE_INFERENCE = "configs/inference.json"
_BUNDLE_TS = "models/model.ts"
_BUNDLE_WEIGHTS = "models/model.pt"
_ALLOWED_MODULE = "monai.networks.nets"
_FORBIDDEN_KEYS = {"_requires_", "_disabled_", "_desc_"}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for inference.

    Attributes
    ----------
    module : torch.nn.Module
        In eval mode, on :attr:`device`.
    spec : ModelSpec
        What the model expects and produces.
    device : torch.device
        Where the module lives.
    path : Path
        The TorchScript file or bundle folder it was loaded from.
    file_hashes : dict of str to str
        SHA-256 of each model file at load time.
    digest : str
        :func:`~workbench.inference.registry.model_digest` of ``file_hashes``.
    source : str
        Which file held the network (``model.ts`` or ``model.pt`` for bundles).
    """

    module: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    path: Path
    file_hashes: dict[str, str] = field(repr=False)
    digest: str
    source: str


def _is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with a ``code/`` folder; a plain pickle is not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in name for name in names) and any(
        name.endswith("constants.pkl") or name.endswith("data.pkl") for name in names
    )


def _load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    if not _is_torchscript_archive(path):
        raise ModelError(
            f"Expected a TorchScript archive (torch.jit.save) at {path}. Found another kind "
            "of file (a pickle or a torch.save checkpoint?); those are refused because "
            "loading them can run arbitrary code. Export the model with torch.jit.script "
            "or torch.jit.trace and torch.jit.save."
        )
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        raise ModelError(f"Cannot load the TorchScript archive {path}: {error}") from error
    return module


def _check_network_def(node: Any, where: str = "network_def") -> None:
    """Refuse bundle configs that would run code other than building a MONAI network."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _FORBIDDEN_KEYS or (key == "_mode_" and value != "default"):
                raise ModelError(
                    f"Bundle {where}.{key}: only plain network definitions are accepted. "
                    f"Found the key {key!r}."
                )
            if key == "_target_":
                target = str(value)
                name = target.removeprefix(_ALLOWED_MODULE + ".")
                import monai.networks.nets as nets

                if "." in name or not isinstance(getattr(nets, name, None), type):
                    raise ModelError(
                        f"Bundle {where}._target_ should name a class of {_ALLOWED_MODULE}. "
                        f"Found {target!r}."
                    )
                continue
            _check_network_def(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_network_def(value, f"{where}[{index}]")
    elif isinstance(node, str) and node[:1] in ("$", "%", "@"):
        raise ModelError(
            f"Bundle {where}: expressions, macros and references are not accepted in a "
            f"network definition because they run code. Found {node!r}."
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"Expected the bundle file {path}. Found nothing there.") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"Expected JSON in {path}. Found unreadable content: {error}") from error
    if not isinstance(data, dict):
        raise ModelError(f"Expected a JSON object in {path}. Found {type(data).__name__}.")
    return data


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if (
        isinstance(loaded, dict)
        and loaded
        and all(isinstance(v, torch.Tensor) for v in loaded.values())
    ):
        return loaded
    if isinstance(loaded, dict):
        for key in ("model", "state_dict", "network"):
            inner = loaded.get(key)
            if isinstance(inner, dict):
                return _state_dict(inner, path)
    raise ModelError(
        f"Expected a state dict (name -> tensor) in {path}. Found {type(loaded).__name__}."
    )


def _load_bundle(root: Path, device: torch.device) -> tuple[torch.nn.Module, str]:
    if not root.is_dir():
        raise ModelError(f"Expected a MONAI bundle folder at {root}. Found a file or nothing.")
    _read_json(root / _BUNDLE_METADATA)
    config = _read_json(root / _BUNDLE_INFERENCE)
    if (root / _BUNDLE_TS).is_file():
        return _load_torchscript(root / _BUNDLE_TS, device), _BUNDLE_TS
    weights = root / _BUNDLE_WEIGHTS
    if not weights.is_file():
        raise ModelError(
            f"Expected {_BUNDLE_TS} or {_BUNDLE_WEIGHTS} in the bundle {root}. Found neither."
        )
    if "network_def" not in config:
        raise ModelError(
            f"Expected 'network_def' in {root / _BUNDLE_INFERENCE} to build the network for "
            f"{_BUNDLE_WEIGHTS}. Found keys {sorted(config)}."
        )
    network_def = config["network_def"]
    _check_network_def(network_def)
    from monai.bundle import ConfigParser

    try:
        network = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    except Exception as error:  # MONAI raises many types for bad configs
        raise ModelError(f"Cannot build the bundle's network_def: {error}") from error
    if not isinstance(network, torch.nn.Module):
        raise ModelError(
            f"Expected network_def to build a torch.nn.Module. Found {type(network).__name__}."
        )
    try:
        loaded = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors and containers
        raise ModelError(
            f"Refused to load {weights}: it is not a plain state dict ({error}). Save the "
            "weights with torch.save(model.state_dict(), ...)."
        ) from error
    try:
        network.load_state_dict(_state_dict(loaded, weights))
    except RuntimeError as error:
        raise ModelError(
            f"The weights in {weights} do not fit the bundle's network_def: {error}"
        ) from error
    return network.to(device), _BUNDLE_WEIGHTS


def load_model(
    path: str | Path,
    spec: ModelSpec,
    device: str | torch.device | None = None,
    *,
    expected_hashes: dict[str, str] | None = None,
) -> LoadedModel:
    """Load a registered model for inference.

    Parameters
    ----------
    path : str or Path
        TorchScript archive or MONAI bundle folder.
    spec : ModelSpec
        The registered specification; ``spec.format`` decides how to load.
    device : str or torch.device, optional
        Target device; by default :func:`~workbench.inference.environment.select_device`.
    expected_hashes : dict of str to str, optional
        The file hashes recorded at registration; when given, the files are
        verified first and a mismatch is refused before anything is read.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelIntegrityError
        The files differ from ``expected_hashes``.
    ModelError
        The files are not a TorchScript archive or a safe MONAI bundle.
    """
    from workbench.inference.environment import select_device

    root = Path(path)
    if expected_hashes is not None:
        verify_model_files(root, expected_hashes)
    hashes = hash_model_files(root)
    target = select_device(device)
    fmt = ModelFormat(spec.format)
    if fmt is ModelFormat.TORCHSCRIPT:
        if not root.is_file():
            raise ModelError(f"Expected a TorchScript file at {root}. Found a folder or nothing.")
        module, source = _load_torchscript(root, target), root.name
    else:
        module, source = _load_bundle(root, target)
    module.eval()
    return LoadedModel(
        module=module,
        spec=spec,
        device=target,
        path=root,
        file_hashes=hashes,
        digest=model_digest(hashes),
        source=source,
    )
