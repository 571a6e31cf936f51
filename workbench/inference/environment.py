"""Device selection, deterministic settings and the software/hardware snapshot of a run.

A validation run records where it ran (:func:`snapshot`) and under which
numerical settings (:func:`deterministic_settings`), so that an auditor can
tell whether two runs are expected to give identical outputs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import torch

__all__ = [
    "select_device",
    "snapshot",
    "ray_cluster",
    "deterministic_settings",
    "deterministic_mode",
    "node_gpu_details",
]

_PACKAGES = ("torch", "monai", "numpy", "pydicom", "highdicom", "scipy", "pydantic")
_CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device inference runs on: CUDA when available, else CPU.

    Parameters
    ----------
    preferred : str or torch.device, optional
        Force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``). ``None`` picks
        ``cuda`` when ``torch.cuda.is_available()``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When a CUDA device is asked for on a machine without one.
    """
    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"Expected a CUDA device for {str(device)!r}. Found none; "
                "pass device='cpu' or leave it unset."
            )
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def snapshot(device: str | torch.device | None = None) -> dict[str, Any]:
    """The software and hardware a run used.

    Parameters
    ----------
    device : str or torch.device, optional
        The inference device; by default :func:`select_device`.

    Returns
    -------
    dict
        ``python``, ``platform``, ``packages`` (name -> version),
        ``device`` (type, name, CUDA/cuDNN/driver versions when CUDA),
        ``cpu_model``, ``cpu_count``, ``torch_threads``, ``torch_interop_threads``,
        ``deterministic`` (see :func:`deterministic_settings`); ``ray`` (see
        :func:`ray_cluster`) when this process is connected to a Ray cluster.
        JSON-serialisable.
    """
    chosen = select_device(device)
    info: dict[str, Any] = {"type": chosen.type, "name": "cpu"}
    if chosen.type == "cuda":
        index = chosen.index if chosen.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=props.name,
            index=index,
            total_memory_bytes=int(props.total_memory),
            capability=f"{props.major}.{props.minor}",
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            driver_version=_driver_version(),
        )
    result: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "device": info,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic": deterministic_settings(),
    }
    cluster = ray_cluster()
    if cluster is not None:
        result["ray"] = cluster
    return result


def ray_cluster(*, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """The Ray cluster this process is connected to, if any: version, nodes, GPUs, drivers.

    Parameters
    ----------
    timeout_s : float
        How long to wait for the GPU driver query of each GPU node.

    Returns
    -------
    dict or None
        ``None`` when Ray is not in use in this process (not imported or not
        connected). Otherwise ``version`` and ``nodes``: for each node its id,
        host name, address, whether alive, CPUs, GPUs, memory, accelerator type
        and, for alive GPU nodes, the GPU names and driver version reported by
        ``nvidia-smi`` on that node.
    """
    ray = sys.modules.get("ray")
    if (
        ray is None
        or not callable(getattr(ray, "is_initialized", None))
        or not ray.is_initialized()
    ):
        return None
    nodes: list[dict[str, Any]] = []
    for node in ray.nodes():
        resources = node.get("Resources", {}) or {}
        accelerators = sorted(
            key.removeprefix("accelerator_type:")
            for key in resources
            if key.startswith("accelerator_type:")
        )
        nodes.append(
            {
                "node_id": node.get("NodeID"),
                "hostname": node.get("NodeManagerHostname"),
                "address": node.get("NodeManagerAddress"),
                "alive": bool(node.get("Alive")),
                "cpus": float(resources.get("CPU", 0)),
                "gpus": float(resources.get("GPU", 0)),
                "memory_bytes": int(resources.get("memory", 0)),
                "accelerator_type": accelerators[0] if accelerators else None,
            }
        )
    gpu_nodes = [n for n in nodes if n["alive"] and n["gpus"] > 0]
    if gpu_nodes:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        query = ray.remote(num_cpus=0)(node_gpu_details)
        pending = {
            n["node_id"]: query.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)
            ).remote()
            for n in gpu_nodes
        }
        for node in gpu_nodes:
            try:
                node.update(ray.get(pending[node["node_id"]], timeout=timeout_s))
            except Exception as error:  # a node that cannot answer is recorded as such
                node["gpu_query_error"] = f"{type(error).__name__}: {error}"[:300]
    return {"version": ray.__version__, "nodes": nodes}


def deterministic_settings() -> dict[str, Any]:
    """The current settings that decide whether torch results are reproducible.

    Returns
    -------
    dict
        ``use_deterministic_algorithms``, ``cudnn_deterministic``,
        ``cudnn_benchmark``, ``cublas_workspace_config``, ``tf32_matmul``.
    """
    return {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get(_CUBLAS_ENV),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }


@contextmanager
def deterministic_mode() -> Iterator[dict[str, Any]]:
    """Run a block with deterministic torch algorithms, then restore the settings.

    Yields
    ------
    dict
        :func:`deterministic_settings` inside the block (what a run records).
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        os.environ.get(_CUBLAS_ENV),
    )
    # cuBLAS needs a fixed workspace for reproducible matmuls (CUDA >= 10.2).
    os.environ.setdefault(_CUBLAS_ENV, ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield deterministic_settings()
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]
        torch.backends.cuda.matmul.allow_tf32 = saved[4]
        if saved[5] is None:
            os.environ.pop(_CUBLAS_ENV, None)
        else:
            os.environ[_CUBLAS_ENV] = saved[5]


def node_gpu_details() -> dict[str, Any]:
    """GPUs of this process's node (names, driver) from ``nvidia-smi``, allocating nothing."""
    import subprocess

    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"gpus": [], "driver_version": None}
    rows = [
        [part.strip() for part in line.split(",")]
        for line in result.stdout.strip().splitlines()
        if result.returncode == 0 and line.strip()
    ]
    return {
        "gpus": [{"name": r[0], "memory": r[2] if len(r) > 2 else None} for r in rows],
        "driver_version": rows[0][1] if rows and len(rows[0]) > 1 else None,
    }
