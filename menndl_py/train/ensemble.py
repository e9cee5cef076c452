"""Several trained networks used as one (`search.keep_top`): each network's outputs, and those of its input's
test-time mirrorings mirrored back, combined as the task says (`Task.ensembled`)."""
from __future__ import annotations

from typing import Callable

import torch

from menndl_py.errors import UserError
from menndl_py.genome import Genome


class Ensemble(torch.nn.Module):
    """Called like one network, on a batch every network accepts (as in scoring and calibration); `outputs` is
    `Task.outputs` for the ensemble (each network on images of any size, as the task runs it alone)."""

    def __init__(self, task, members: list[tuple[Genome, torch.nn.Module]]):
        super().__init__()
        if not task.ensembled:
            raise UserError(f"task {task.name}: no ensembles: {task.not_ensembled}")
        if not members:
            raise UserError("an ensemble needs at least one network")
        self.task = task
        self.genomes = [genome for genome, _ in members]
        self.networks = torch.nn.ModuleList(model for _, model in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._combined(lambda model, genome, batch: model(batch), x)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._combined(self.task.outputs, x)

    def _combined(self, run: Callable, x: torch.Tensor) -> torch.Tensor:
        outputs = [flipped(run(model, genome, flipped(x, axes)), axes)
                   for genome, model in zip(self.genomes, self.networks) for axes in self.task.test_time_flips]
        if self.task.ensembled == "mean":
            return torch.stack([output.float() for output in outputs]).mean(0)
        return torch.stack([torch.softmax(output.float(), 1) for output in outputs]).mean(0).log()


def flipped(x: torch.Tensor, axes: tuple) -> torch.Tensor:
    """`x` mirrored along `axes`; `x` itself, not a copy, when there are none."""
    return x.flip(axes) if axes else x
