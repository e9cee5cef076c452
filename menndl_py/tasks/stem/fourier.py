"""Fourier filtering as a method to run again: its tuned parameters as a JSON mapping (what `menndl baseline`
writes to RUN/baselines/fourier.json), read back by `menndl predict --method fourier` to find defects in new
images, written as the network's predictions are."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from menndl_py.errors import UserError
from menndl_py.physics import stem_analysis
from menndl_py.rundir.layout import RunDir
from menndl_py.tasks.base import SkipImage

METHOD = "fourier"


def record(fourier: stem_analysis.FourierFilterBaseline, class_names: tuple, pixel_size: float) -> dict:
    """The parameters file's contents."""
    return {"method": METHOD, "classes": list(class_names), "pixel_size": pixel_size,
            "disk_radius": fourier.disk_radius, "peak_snr": fourier.peak_snr, "parameters": fourier.params}


class FourierMethod:
    """Fourier filtering with the parameters of a file: `find` gives an image's class map and defect table."""

    def __init__(self, path: Path):
        self.path = self.file_of(Path(path))
        try:
            data = json.loads(self.path.read_text())
            if data.get("method") != METHOD:
                raise ValueError(f"'method' is {data.get('method')!r}, not {METHOD!r}")
            self.class_names = tuple(data["classes"])
            self.fourier = stem_analysis.FourierFilterBaseline(data["disk_radius"], data["peak_snr"],
                                                               **data["parameters"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{self.path}: not a Fourier filtering parameters file ({exc}); 'menndl baseline "
                            f"stem_defects' writes one to RUN/baselines/{METHOD}.json") from None
        self.about = {"method": METHOD, "parameters_file": str(self.path), "parameters": json.dumps(data)}

    @staticmethod
    def file_of(path: Path) -> Path:
        """The parameters file named, or the one a baseline run directory holds."""
        if path.is_dir():
            path = RunDir(path).baseline_outputs / f"{METHOD}.json"
        if not path.is_file():
            raise UserError(f"{path}: missing; give the {METHOD}.json that 'menndl baseline stem_defects' writes "
                            f"(RUN/baselines/{METHOD}.json) or its run directory")
        return path

    def prepare(self, image: np.ndarray) -> np.ndarray:
        if image.dtype.kind not in "uif":
            raise SkipImage(f"wrong dtype {image.dtype}; expected integer or floating-point pixels")
        if image.ndim != 2:
            raise SkipImage(f"shape {image.shape}; expected a 2-D grayscale image")
        if not np.isfinite(image).all():
            raise SkipImage("contains NaN or infinite pixels")
        if float(image.std()) == 0.0:
            raise SkipImage("a blank image (every pixel the same)")
        return image.astype(np.float64)

    def find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        defects = self.fourier.predict(image)
        return self.fourier.predict_map(image, defects), defects
