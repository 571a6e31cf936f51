"""Detection models: marks (points or boxes) placed in patient coordinates, on real CT.

The series is built from pydicom's ``CT_small.dcm`` (a real GE CT slice), six slices 5 mm
apart. A model that returns fixed rows shows where each model-input index lands; the
expected positions come from the DICOM geometry alone (Image Position and Orientation
(Patient), Pixel Spacing), worked out here without the workbench's preprocessing code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from workbench.errors import InferenceError, ModelError
from workbench.inference.detection import marks_output_rows
from workbench.inference.loading import check_model_runs, load_model
from workbench.inference.registry import InputSpec, ModelSpec, ModelSpecError, parse_model_spec
from workbench.inference.runner import CaseInput, CaseStatus, run_inference

N_SLICES = 6
SLICE_GAP = 5.0


@pytest.fixture(scope="module")
def real_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], pydicom.Dataset]:
    folder = tmp_path_factory.mktemp("ct")
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series, frame = generate_uid(), generate_uid()
    paths = []
    for k in range(N_SLICES):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        x, y, z = (float(v) for v in template.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + SLICE_GAP * k]
        path = folder / f"{k:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths, template


def expected_lps(template: pydicom.Dataset, column: float, row: float, slice_: float) -> np.ndarray:
    """Patient position (LPS mm) of a (column, row, slice) voxel index, from the headers."""
    origin = np.array([float(v) for v in template.ImagePositionPatient])
    orientation = np.array([float(v) for v in template.ImageOrientationPatient])
    along_row, along_column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in template.PixelSpacing)
    normal = np.cross(along_row, along_column)
    return (
        origin
        + column * column_spacing * along_row
        + row * row_spacing * along_column
        + slice_ * SLICE_GAP * normal
    )


class FixedMarks(torch.nn.Module):
    """Returns the same rows whatever the input (checks only where they land)."""

    def __init__(self, rows: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"marks": self.rows + 0.0 * image.mean(), "other": image.mean().reshape(1)}


class FixedMarkTensor(FixedMarks):
    """The same, returning the marks tensor itself (a single-output model)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.rows + 0.0 * image.mean()


def _spec(template: pydicom.Dataset, **changes: object) -> ModelSpec:
    rows_, cols = int(template.Rows), int(template.Columns)
    row_spacing, column_spacing = (float(v) for v in template.PixelSpacing)
    values: dict[str, object] = {
        # the native grid in LPS axis order: no resampling, no resizing
        "target_spacing": (SLICE_GAP, row_spacing, column_spacing),
        "orientation": "LPS",
        "roi_size": (cols, rows_, N_SLICES),
        "hu_window": (-160.0, 240.0),
        "mark_format": "points",
    }
    values.update(changes)
    return ModelSpec(
        name="fixed-marks",
        version="1",
        task="detection",
        format="torchscript",
        input=InputSpec.model_validate(values),
        intended_use="Tests only.",
    )


def _run(module: torch.nn.Module, spec: ModelSpec, paths: list[Path], out: Path) -> list[dict]:
    model_path = out / "model.ts"
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(model_path))
    loaded = load_model(model_path, spec, device="cpu")
    check = check_model_runs(loaded)
    assert check.outputs["marks"][1] == spec.input.mark_format.width
    got = []
    summary = run_inference(
        [CaseInput("case1", tuple(paths))],
        loaded,
        spec,
        out_dir=out / "run",
        device="cpu",
        on_case=got.append,
    )
    assert summary.completed == 1, got[0].reason
    (output,) = got
    assert output.status == CaseStatus.COMPLETED and output.mask_path is None
    assert output.marks_path is not None and output.n_marks == len(
        json.loads(output.marks_path.read_bytes())
    )
    return json.loads(output.marks_path.read_bytes())


def test_points_on_the_native_grid_land_where_the_dicom_geometry_says(
    real_ct: tuple[list[Path], pydicom.Dataset], tmp_path: Path
) -> None:
    paths, template = real_ct
    cols, rows_ = int(template.Columns), int(template.Rows)
    # (score, i, j, k): i along L (columns), j along P (rows), k along S (slices)
    points = [
        [0.9, 0.0, 0.0, 0.0],
        [0.7, cols - 1.0, rows_ - 1.0, N_SLICES - 1.0],
        [0.3, 10.5, 20.0, 2.0],
    ]
    marks = _run(FixedMarks(points), _spec(template), paths, tmp_path)
    assert [m["score"] for m in marks] == pytest.approx([0.9, 0.7, 0.3])
    for mark, (_, i, j, k) in zip(marks, points, strict=True):
        want = expected_lps(template, i, j, k)
        assert [mark["x"], mark["y"], mark["z"]] == pytest.approx(list(want), abs=1e-4)
        assert mark["x_min"] is None  # a point mark has no box


def test_boxes_after_reorientation_and_resizing_land_where_the_dicom_geometry_says(
    real_ct: tuple[list[Path], pydicom.Dataset], tmp_path: Path
) -> None:
    paths, template = real_ct
    cols, rows_ = int(template.Columns), int(template.Rows)
    # RAS: axis 0 runs towards R (decreasing column), axis 1 towards A (decreasing row);
    # the model sees the native grid resized to half in-plane.
    half = (cols // 2, rows_ // 2, N_SLICES)
    spec = _spec(template, orientation="RAS", roi_size=half, mark_format="boxes")
    box = [0.8, 4.0, 6.0, 1.0, 9.0, 13.0, 3.0]
    (mark,) = _run(FixedMarkTensor([box]), spec, paths, tmp_path)

    def column_of(m: float) -> float:  # resized index -> native RAS index -> column
        return cols - 1 - ((m + 0.5) * cols / half[0] - 0.5)

    def row_of(m: float) -> float:
        return rows_ - 1 - ((m + 0.5) * rows_ / half[1] - 0.5)

    corners = np.array(
        [
            expected_lps(template, column_of(i), row_of(j), k)
            for i in (box[1], box[4])
            for j in (box[2], box[5])
            for k in (box[3], box[6])
        ]
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    assert [mark["x_min"], mark["y_min"], mark["z_min"]] == pytest.approx(list(low), abs=1e-4)
    assert [mark["x_max"], mark["y_max"], mark["z_max"]] == pytest.approx(list(high), abs=1e-4)
    centre = expected_lps(template, column_of(6.5), row_of(9.5), 2.0)
    assert [mark["x"], mark["y"], mark["z"]] == pytest.approx(list(centre), abs=1e-4)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0.5, 1.0, 2.0]], r"expected \(N, 4\) rows of \(score, i, j, k\).*found \(1, 3\)"),
        ([[float("nan"), 1.0, 2.0, 3.0]], "NaN or infinite"),
    ],
)
def test_a_wrong_marks_output_is_refused_at_registration_and_fails_the_case(
    real_ct: tuple[list[Path], pydicom.Dataset], tmp_path: Path, rows: list, message: str
) -> None:
    paths, template = real_ct
    spec = _spec(template)
    model_path = tmp_path / "bad.ts"
    torch.jit.script(FixedMarks(rows)).save(str(model_path))
    loaded = load_model(model_path, spec, device="cpu")
    with pytest.raises(ModelError, match="Wrong marks output .*" + message):
        check_model_runs(loaded)
    got = []
    run_inference(
        [CaseInput("case1", tuple(paths))],
        loaded,
        spec,
        out_dir=tmp_path / "run",
        on_case=got.append,
    )
    assert got[0].status == CaseStatus.FAILED
    assert "marks output" in (got[0].reason or "") or "NaN" in (got[0].reason or "")


def test_marks_rows_checks() -> None:
    spec = InputSpec(target_spacing=(1.0, 1.0, 1.0), roi_size=(4, 4, 4), mark_format="boxes")
    good = torch.tensor([[[0.5, 0, 0, 0, 1, 1, 1]]])  # a batch axis of 1 is dropped
    assert marks_output_rows(good, spec).shape == (1, 7)
    with pytest.raises(InferenceError, match="maximum lies below its minimum"):
        marks_output_rows(torch.tensor([[0.5, 2, 0, 0, 1, 1, 1]]), spec)
    with pytest.raises(InferenceError, match="Expected the marks output 'marks'"):
        marks_output_rows({"boxes": good}, spec)
    assert marks_output_rows(torch.zeros((0, 7)), spec).shape == (0, 7)  # no finding


def test_a_2d_detection_spec_is_refused() -> None:
    with pytest.raises(ModelSpecError, match="expected 3 for a detection model"):
        parse_model_spec(
            {
                "name": "d",
                "version": "1",
                "task": "detection",
                "format": "torchscript",
                "input": {"spatial_dims": 2, "roi_size": [64, 64]},
            }
        )


def test_an_onnx_detection_model_places_its_marks_like_torchscript(
    real_ct: tuple[list[Path], pydicom.Dataset], tmp_path: Path
) -> None:
    import warnings

    paths, template = real_ct
    box = [[0.6, 2.0, 3.0, 0.0, 8.0, 9.0, 2.0], [0.9, 20.0, 30.0, 1.0, 25.0, 40.0, 4.0]]
    spec = _spec(template, roi_size=(64, 64, N_SLICES), mark_format="boxes")
    onnx_path = tmp_path / "marks.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FixedMarkTensor(box).eval(),
            (torch.zeros((1, 1, 64, 64, N_SLICES)),),
            str(onnx_path),
            input_names=["image"],
            output_names=["marks"],
            dynamo=False,
        )
    onnx_spec = spec.model_copy(update={"format": "onnx"})
    loaded = load_model(onnx_path, onnx_spec, device="cpu")
    assert check_model_runs(loaded).outputs["marks"] == (2, 7)
    got: list = []
    run_inference(
        [CaseInput("case1", tuple(paths))],
        loaded,
        onnx_spec,
        out_dir=tmp_path / "onnx-run",
        on_case=got.append,
    )
    from_onnx = json.loads(got[0].marks_path.read_bytes())
    from_torchscript = _run(FixedMarkTensor(box), spec, paths, tmp_path / "ts")
    assert [m["score"] for m in from_onnx] == pytest.approx([0.9, 0.6])  # highest first
    for a, b in zip(from_onnx, from_torchscript, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
