"""The trainer tests' data: ElemNet on 1,500 training and 500 validation compounds, loaded once per module."""
import pytest
import torch

from menndl_py.tasks.elemnet.task import ElemNetTask


@pytest.fixture(scope="module")
def task(elemnet_data_dir):
    return ElemNetTask({"train_size": 1500, "val_size": 500}, elemnet_data_dir)


@pytest.fixture(scope="module")
def data(task, cpu):
    return {split: tuple(torch.as_tensor(a) for a in task.load(split)) for split in ("train", "val")}
