"""Load a registered model: TorchScript, ONNX and MONAI bundles, never pickles.

Three formats are accepted (:class:`~workbench.inference.registry.ModelFormat`):

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
``onnx``
    One ``.onnx`` file (a protobuf graph with its weights inside), run by ONNX
    Runtime with the CPU execution provider, and the CUDA provider first when
    the target device is CUDA and the installed ONNX Runtime has it. The file
    is read into memory and handed over as bytes, so external-data references
    cannot pull in files that were not registered and hashed.

Anything else, in particular a pickled model object, is refused before it is
read: unpickling can run arbitrary code.

Every format comes back as a :class:`LoadedModel` whose ``module`` is called
like a ``torch.nn.Module`` (ONNX sessions through :class:`OnnxModule`); a
multi-class or multi-label score output (``input.score_classes``) is reduced
to the positive class by :class:`ScoreSelector`, so the runner sees one score
per input whatever the format. :func:`check_model_runs` is the registration
test-load: one forward pass on a dummy input of the declared shape, with the
output shapes checked against the spec.
"""

from __future__ import annotations

import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import InferenceError, ModelError
from workbench.inference.registry import (
    ModelFormat,
    ModelSpec,
    ModelTask,
    ScoreActivation,
    hash_model_files,
    model_digest,
    verify_model_files,
)

__all__ = [
    "LoadedModel",
    "ModelCheck",
    "OnnxModule",
    "ScoreSelector",
    "check_model_runs",
    "load_model",
    "onnx_providers",
]

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}

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


def onnx_providers(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device``, in order of preference.

    Parameters
    ----------
    device : torch.device
        The target device of the run.

    Returns
    -------
    list of str
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when ``device``
        is CUDA and the installed ONNX Runtime offers CUDA (the
        ``onnxruntime-gpu`` build), otherwise ``["CPUExecutionProvider"]``.
        The CPU provider is always last, so every node has a provider.
    """
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


class OnnxModule(torch.nn.Module):
    """An ONNX Runtime session called like a ``torch.nn.Module``.

    ``forward(x)`` feeds ``x`` (converted to the graph input's float type) to
    the graph's single input and returns the single output as a tensor on
    ``x``'s device, or a dict ``{output name: tensor}`` when the graph has
    several outputs (``input.segmentation_output``/``input.score_output``
    name them).

    Parameters
    ----------
    session : onnxruntime.InferenceSession
    source : Path
        The ``.onnx`` file, for error messages.
    """

    def __init__(self, session: Any, source: Path) -> None:
        super().__init__()
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"Expected an ONNX graph with one input (the image) in {source}. Found "
                f"{len(inputs)}: {[i.name for i in inputs]}."
            )
        dtype = _ONNX_DTYPES.get(inputs[0].type)
        if dtype is None:
            raise ModelError(
                f"Expected a float input (float, float16 or double) in the ONNX graph {source}. "
                f"Found {inputs[0].type} for input {inputs[0].name!r}."
            )
        self._session = session
        self._dtype = dtype
        self.input_name: str = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        self.providers: list[str] = list(session.get_providers())

    def forward(self, x: torch.Tensor) -> Any:
        """Run the graph on ``x``; see the class docstring."""
        feed = {
            self.input_name: np.ascontiguousarray(x.detach().float().cpu().numpy(), self._dtype)
        }
        try:
            results = self._session.run(None, feed)
        except Exception as error:  # ONNX Runtime raises its own types (Fail, InvalidArgument)
            raise ModelError(
                f"ONNX Runtime failed on an input of shape {tuple(x.shape)} (graph input "
                f"{self.input_name!r} declared {self.input_shape}): {error}"
            ) from error
        tensors = [torch.from_numpy(np.asarray(r, dtype=np.float32)).to(x.device) for r in results]
        if len(tensors) == 1:
            return tensors[0]
        return dict(zip(self.output_names, tensors, strict=True))


def _load_onnx(path: Path, device: torch.device) -> OnnxModule:
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"Expected an ONNX file at {path}. Found a folder or nothing.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.use_deterministic_compute = True
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            path.read_bytes(), sess_options=options, providers=onnx_providers(device)
        )
    except Exception as error:  # ONNX Runtime raises InvalidProtobuf, Fail, ... for bad files
        raise ModelError(
            f"Expected an ONNX model at {path}. Found a file ONNX Runtime cannot load: "
            f"{str(error).rstrip('.')}. "
            "Export the model with torch.onnx.export (weights inside the file)."
        ) from error
    return OnnxModule(session, path)


class ScoreSelector(torch.nn.Module):
    """Reduce a multi-class or multi-label score output to the positive class.

    With ``score_activation='softmax'`` the output's logits become class
    probabilities (softmax over the classes) and the positive class's
    probability is returned; with ``'sigmoid'`` (multi-label) the positive
    class's logit is returned and the runner applies the sigmoid. Every other
    output passes through unchanged.

    Parameters
    ----------
    inner : torch.nn.Module
        The loaded network.
    spec : ModelSpec
        Declares ``input.score_classes`` and ``input.positive_class``.
    """

    def __init__(self, inner: torch.nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        classes = spec.input.score_classes
        if not classes or spec.input.positive_class is None:
            raise ModelError("ScoreSelector needs input.score_classes and input.positive_class.")
        self.inner = inner
        self.classes = list(classes)
        self.index = self.classes.index(spec.input.positive_class)
        self.softmax = spec.input.score_activation == ScoreActivation.SOFTMAX
        self.key = spec.input.score_output
        self.task = spec.task

    def _select(self, score: torch.Tensor) -> torch.Tensor:
        batch = int(score.shape[0]) if score.ndim else 1
        values = score.float().reshape(batch, -1)
        if values.shape[1] != len(self.classes):
            raise ModelError(
                f"score output: expected {len(self.classes)} class channels {self.classes} per "
                f"input, shape ({batch}, {len(self.classes)}). Found shape {tuple(score.shape)}."
            )
        if self.softmax:
            values = torch.softmax(values, dim=1)
        return values[:, self.index : self.index + 1]

    def forward(self, x: torch.Tensor) -> Any:
        """Call the network and replace its score output by the positive class's."""
        raw = self.inner(x)
        if isinstance(raw, dict) and self.key in raw:
            return {**raw, self.key: self._select(raw[self.key])}
        if isinstance(raw, (tuple, list)) and len(raw) == 2 and self.task == ModelTask.BOTH:
            return raw[0], self._select(raw[1])
        if isinstance(raw, torch.Tensor) and self.task == ModelTask.CLASSIFICATION:
            return self._select(raw)
        return raw


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
        TorchScript archive, ONNX file or MONAI bundle folder.
    spec : ModelSpec
        The registered specification; ``spec.format`` decides how to load.
        With ``input.score_classes`` the module is wrapped in
        :class:`ScoreSelector`.
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
        The files are not a TorchScript archive, an ONNX model or a safe MONAI bundle.
    """
    from workbench.inference.environment import select_device

    root = Path(path)
    if expected_hashes is not None:
        verify_model_files(root, expected_hashes)
    hashes = hash_model_files(root)
    target = select_device(device)
    fmt = ModelFormat(spec.format)
    module: torch.nn.Module
    if fmt is ModelFormat.TORCHSCRIPT:
        if not root.is_file():
            raise ModelError(f"Expected a TorchScript file at {root}. Found a folder or nothing.")
        module, source = _load_torchscript(root, target), root.name
    elif fmt is ModelFormat.ONNX:
        module, source = _load_onnx(root, target), root.name
    else:
        module, source = _load_bundle(root, target)
    if spec.input.score_classes:
        module = ScoreSelector(module, spec)
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


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """What the registration test-load saw.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of the dummy input: (batch, ``in_channels``, *``roi_size``).
    outputs : dict of str to tuple of int
        Shape of each output the spec uses (``"segmentation"``, ``"score"``, ``"marks"``).
    seconds : float
        Wall time of the forward pass.
    """

    input_shape: tuple[int, ...]
    outputs: dict[str, tuple[int, ...]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the audit trail)."""
        return {
            "input_shape": list(self.input_shape),
            "outputs": {k: list(v) for k, v in self.outputs.items()},
            "seconds": round(self.seconds, 3),
        }


def _split(raw: Any, spec: ModelSpec) -> tuple[Any, Any]:
    """Segmentation and score outputs, the way the runner takes them apart."""
    inp = spec.input
    if isinstance(raw, dict):
        seg = raw.get(inp.segmentation_output) if inp.segmentation_output else None
        score = raw.get(inp.score_output) if inp.score_output else None
        for wanted, key, found in (
            (spec.segments, inp.segmentation_output, seg),
            (spec.scores, inp.score_output, score),
        ):
            if wanted and found is None:
                raise ModelError(
                    f"Expected the output {key!r} (spec input.segmentation_output / "
                    f"input.score_output). Found outputs {sorted(raw)}."
                )
        return seg, score
    if isinstance(raw, (tuple, list)) and len(raw) == 2 and spec.task == ModelTask.BOTH:
        return raw[0], raw[1]
    if isinstance(raw, torch.Tensor) and spec.task != ModelTask.BOTH:
        return (raw, None) if spec.segments else (None, raw)
    expected = "a dict of outputs" if spec.task == ModelTask.BOTH else "a tensor or a dict"
    raise ModelError(
        f"Expected the model to return {expected} for task {spec.task.value!r}. "
        f"Found {type(raw).__name__}."
    )


def check_model_runs(loaded: LoadedModel, *, timeout_s: float = 300.0, seed: int = 0) -> ModelCheck:
    """Run a loaded model once on a dummy input and check its outputs against its spec.

    The input is uniform noise in [0, 1] (the range preprocessing produces) of
    shape ``(batch, input.in_channels, *input.roi_size)``, with ``batch =
    input.sw_batch_size`` for segmentation models (the sliding-window batch)
    and 1 otherwise. The segmentation output must have shape ``(batch,
    len(input.output_classes), *input.roi_size)``; the score output one value
    per input after :class:`ScoreSelector` (which checks ``score_classes``).

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`load_model`.
    timeout_s : float
        The forward pass runs in a daemon thread; a model that has not
        returned by then is refused (the thread cannot be stopped and runs on
        until the process ends).
    seed : int
        Seed of the dummy input.

    Returns
    -------
    ModelCheck

    Raises
    ------
    ModelError
        The model fails on the input, does not return in time, or returns
        outputs of another shape or class count than its spec declares;
        the message names the expected and the found shape.
    """
    spec = loaded.spec
    inp = spec.input
    batch = inp.sw_batch_size if spec.segments else 1
    shape = (batch, inp.in_channels, *inp.roi_size)
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand(shape, generator=generator).to(loaded.device)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.inference_mode():
                outcome["value"] = loaded.module(dummy)
        except BaseException as error:  # reported to the caller below
            outcome["error"] = error

    started = time.perf_counter()
    worker = threading.Thread(target=work, name="model-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    seconds = time.perf_counter() - started
    where = f"on a dummy input of shape {shape} (batch, input.in_channels, *input.roi_size)"
    if worker.is_alive():
        raise ModelError(f"The model did not return within {timeout_s:g} s {where}.")
    if "error" in outcome:
        error = outcome["error"]
        detail = f"{type(error).__name__}: {str(error).strip()}"
        if "Traceback" in detail:  # TorchScript errors end with the original error's line
            detail = detail.splitlines()[-1].removeprefix("builtins.")
        raise ModelError(f"The model failed {where}: {detail}"[:2000]) from error
    seg, score = _split(outcome["value"], spec)
    outputs: dict[str, tuple[int, ...]] = {}
    if spec.segments:
        expected = (batch, len(inp.output_classes), *inp.roi_size)
        found = tuple(int(n) for n in seg.shape) if isinstance(seg, torch.Tensor) else None
        if found != expected:
            raise ModelError(
                f"Wrong segmentation output {where}: expected shape {expected} (batch, "
                f"{len(inp.output_classes)} classes {inp.output_classes}, *input.roi_size). "
                f"Found {found if found is not None else type(seg).__name__}."
            )
        outputs["segmentation"] = found
    if spec.scores:
        found = tuple(int(n) for n in score.shape) if isinstance(score, torch.Tensor) else None
        if found is None or score.numel() != batch:
            channels = inp.score_channels
            raise ModelError(
                f"Wrong score output {where}: expected one score per input, shape ({batch}, "
                f"{channels})"
                + (f" for the classes {inp.score_classes}" if inp.score_classes else "")
                + f". Found {found if found is not None else type(score).__name__}."
            )
        outputs["score"] = found
    if spec.detects:
        from workbench.inference.detection import marks_output_rows

        try:
            rows = marks_output_rows(outcome["value"], inp)
        except InferenceError as error:
            raise ModelError(f"Wrong marks output {where}: {error}") from None
        outputs["marks"] = tuple(int(n) for n in rows.shape)
    return ModelCheck(input_shape=shape, outputs=outputs, seconds=seconds)
