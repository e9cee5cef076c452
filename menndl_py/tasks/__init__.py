"""The task registry. A task is named in the config by its short name, or as 'package.module:Class'."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from menndl_py.errors import UserError
from menndl_py.tasks.base import Task

BUILT_IN = {
    "composition": "menndl_py.tasks.files.tables:CompositionTask",
    "crystal_graph": "menndl_py.tasks.crystal_graph.task:CrystalGraphTask",
    "ebsd": "menndl_py.tasks.ebsd.task:EbsdTask",
    "elemnet": "menndl_py.tasks.elemnet.task:ElemNetTask",
    "homogenization": "menndl_py.tasks.microstructure.homogenization:HomogenizationTask",
    "images": "menndl_py.tasks.files.images:ImagesTask",
    "localization": "menndl_py.tasks.microstructure.localization:LocalizationTask",
    "segmentation": "menndl_py.tasks.files.segmentation:SegmentationTask",
    "stem_defects": "menndl_py.tasks.stem.task:StemDefectsTask",
    "synthetic": "menndl_py.tasks.synthetic:SyntheticTask",
    "tabular": "menndl_py.tasks.files.tables:TabularTask",
}


def task_class(name: str) -> type[Task]:
    target = BUILT_IN.get(name, name)
    if ":" not in target:
        raise UserError(f"task.name: unknown task {name!r} (built in: {', '.join(BUILT_IN)}; "
                        f"or give 'package.module:Class')")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"task.name: cannot load task {name!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UserError(f"task.name: {name!r} is not a menndl_py Task subclass")
    return cls


def make_task(name: str, options: Mapping[str, Any] | None = None, data_dir: str | Path = "data") -> Task:
    return task_class(name)(options, data_dir)
