"""The explorer's 2D view of a real radiograph: explanation map, reference overlay, export.

The radiograph is pydicom-data's ``RG3_UNCI.dcm`` (CR, MONOCHROME1, 1760 x 1760), the
same file as the 2D test of ``test_case_explorer.py``. The map is computed by
:func:`workbench.inference.explain.explain_case` with a small 2D TorchScript
classifier whose score depends on one known region only, and the reference overlay is
a real DICOM SEG of the radiograph written with highdicom.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from streamlit.testing.v1 import AppTest
from torch import nn

from workbench.app import _mpr
from workbench.inference import explain
from workbench.inference.registry import ModelSpec

RADIOGRAPH = str(get_testdata_file("RG3_UNCI.dcm"))
#: The region (rows, columns of the 64 x 64 model input) that drives the score.
REGION = (slice(8, 24), slice(36, 56))


class RegionScore(nn.Module):
    """Score: a sigmoid of the mean intensity of :data:`REGION` of the model input."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        region = image[:, :, 8:24, 36:56]
        return {"malignancy": torch.sigmoid((region.mean(dim=[1, 2, 3]) - 0.3) * 8.0)[:, None]}


@pytest.fixture(scope="module")
def radiograph_map(tmp_path_factory: pytest.TempPathFactory) -> explain.Explanation:
    """Occlusion map of :class:`RegionScore` on the radiograph, on the image's pixel grid."""
    folder = tmp_path_factory.mktemp("cr-model")
    model = folder / "region.ts"
    torch.jit.script(RegionScore()).save(str(model))
    spec = ModelSpec.model_validate(
        {
            "name": "cr-region",
            "version": "1.0",
            "task": "classification",
            "format": "torchscript",
            "intended_use": "Test fixture on a real radiograph; not a clinical model.",
            "input": {
                "spatial_dims": 2,
                "roi_size": [64, 64],
                "normalization": "min_max",
                "segmentation_output": None,
                "score_output": "malignancy",
            },
        }
    )
    return explain.explain_case([RADIOGRAPH], model, spec, "occlusion", {"patch": 8, "stride": 4})


@pytest.fixture(scope="module")
def reference_seg(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """A DICOM SEG of the radiograph (one rectangle), and its mask."""
    import highdicom as hd
    from highdicom.seg import (
        SegmentAlgorithmTypeValues,
        Segmentation,
        SegmentationTypeValues,
        SegmentDescription,
    )
    from pydicom.sr.codedict import codes

    source = pydicom.dcmread(RADIOGRAPH)
    mask = np.zeros((1, int(source.Rows), int(source.Columns)), dtype=bool)
    mask[0, 300:700, 1000:1500] = True
    seg = Segmentation(
        source_images=[source],
        pixel_array=mask,
        segmentation_type=SegmentationTypeValues.BINARY,
        segment_descriptions=[
            SegmentDescription(
                segment_number=1,
                segment_label="Lesion",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=90,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Validation Workbench tests",
        manufacturer_model_name="fixture",
        software_versions="1",
        device_serial_number="1",
    )
    path = tmp_path_factory.mktemp("cr-seg") / "reader1.dcm"
    seg.save_as(path)
    return str(path), mask[0]


def test_the_map_is_on_the_radiograph_grid_where_the_model_looks(
    radiograph_map: explain.Explanation,
) -> None:
    heat = radiograph_map.heat
    assert heat.shape == (1760, 1760)
    rows = slice(REGION[0].start * 1760 // 64, REGION[0].stop * 1760 // 64)
    cols = slice(REGION[1].start * 1760 // 64, REGION[1].stop * 1760 // 64)
    inside = float(heat[rows, cols].mean())
    outside = heat.copy()
    outside[rows, cols] = np.nan
    assert inside > 3 * float(np.nanmean(outside))  # the map points at the region that scores


def _page(seg_path: str, heat_path: str) -> None:
    import numpy as np
    import streamlit as st

    from workbench.app import _mpr

    stored = np.load(heat_path)
    show = st.toggle("map", value=True, key="show-map")

    def heat(shape: tuple[int, ...]) -> tuple[np.ndarray, str] | None:
        return (stored["heat"], str(stored["label"])) if show else None

    def export(png: bytes) -> None:
        st.session_state["exported"] = png
        st.download_button("Download this view (PNG)", png, file_name="cr.png", key="cr-dl")

    _mpr.show_image2d(
        "cr",
        st.session_state["path"],
        caption="Run R, case cr",
        overlays={"Reference (reader1)": ([seg_path], (0, 200, 255))},
        heat=heat,
        on_export=export,
    )


def test_the_radiograph_view_draws_map_and_overlay_and_exports_them(
    radiograph_map: explain.Explanation,
    reference_seg: tuple[str, np.ndarray],
    tmp_path: Path,
) -> None:
    seg_path, mask = reference_seg
    heat_path = tmp_path / "heat.npz"
    np.savez(heat_path, heat=radiograph_map.heat, label=np.array(radiograph_map.label))
    at = AppTest.from_function(_page, args=(seg_path, str(heat_path)), default_timeout=90)
    at.session_state["path"] = RADIOGRAPH
    at.run()
    assert not at.exception, at.exception
    assert not at.warning and not at.error
    png = at.session_state["exported"]
    view = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    ramp_top = (_mpr.heat_colours(np.array([1.0])) + 0.5).astype(int)[0]
    assert (view == ramp_top).all(axis=2).any(), "the heat ramp is in the legend"
    text = _mpr.png_text(png)
    assert "Occlusion sensitivity" in text["Description"]
    assert "aid to review, not evidence of correctness" in text["Description"]
    assert "Reference (reader1)" in text["Description"] and "Disclaimer" in text
    assert text["Title"].startswith("Run R, case cr")
    # The SEG's rectangle is outlined in blue at the place of the mask (640 px wide view).
    scale = 640 / 1760
    top, left = 6 + 20, 6  # the view's corner in the composed image (gap + title, gap)
    picture = view[top : top + 640, left : left + 640]
    rows, cols = (np.abs(picture - (0, 200, 255)).sum(axis=2) < 30).nonzero()
    assert rows.size
    assert abs(rows.min() / scale - 300) < 6 and abs(rows.max() / scale - 700) < 6
    assert abs(cols.min() / scale - 1000) < 6 and abs(cols.max() / scale - 1500) < 6
    below = " ".join(str(m.value).replace("\\", "") for m in at.markdown)
    assert "Reference (reader1)" in below and "aid to review" in below
    # The map is tinted into the pixels: turning it off changes the view below the legend.
    at.toggle(key="show-map").set_value(False).run()
    assert not at.exception, at.exception
    plain = np.asarray(Image.open(io.BytesIO(at.session_state["exported"])).convert("RGB"))
    assert "Disclaimer" not in _mpr.png_text(at.session_state["exported"])
    without = plain[top : top + 640, left : left + 640].astype(int)
    changed = (without != picture).any(axis=2)
    assert changed.sum() > 1000
    assert mask.any()
