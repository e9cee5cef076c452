"""The ranks that train one candidate together: one process alone, or a Horovod group on an MPI sub-communicator."""
from __future__ import annotations

from typing import Any, Optional

import torch


class LocalGroup:
    """A group of one process: collectives are identities (see HorovodGroup for what each does)."""

    size, rank = 1, 0

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        pass

    def distributed_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module):
        return optimizer

    def step(self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def first(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> list:
        return [value]


class Contiguous:
    """Horovod's gradient compression slot used to make each gradient contiguous before it is reduced: Horovod takes
    only contiguous tensors, and a 2-D conv net's weights (and so their gradients) are channels-last on a CPU
    (`device.laid_out`). A contiguous gradient is passed as it is."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, None]:
        return tensor.contiguous(), None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: None) -> torch.Tensor:
        return tensor


class HorovodGroup:
    """Data-parallel training over an MPI sub-communicator. Horovod is initialised once per process."""

    def __init__(self, comm):
        import horovod.torch as hvd

        hvd.init(comm=comm)
        self.hvd = hvd
        self.size, self.rank = hvd.size(), hvd.rank()

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Rank 0's weights and buffers on every rank (through contiguous copies of channels-last ones)."""
        state = model.state_dict()
        sent = {name: tensor.contiguous() for name, tensor in state.items()}
        self.hvd.broadcast_parameters(sent, root_rank=0)
        for name, tensor in state.items():
            if sent[name] is not tensor:
                tensor.copy_(sent[name])

    def distributed_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module):
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             compression=Contiguous)

    def step(self, optimizer, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """One step of the distributed `optimizer` on the group's mean gradients. With fp16's `scaler`, the
        gradients are allreduced before it unscales them and looks for inf or NaN, so that every rank skips the
        same steps and keeps the same scale (Horovod's recipe: synchronize, unscale_, step without a second
        allreduce, update)."""
        if scaler is None:
            optimizer.step()  # allreduces the gradients first
            return
        optimizer.synchronize()
        scaler.unscale_(optimizer)
        with optimizer.skip_synchronize():
            scaler.step(optimizer)
        scaler.update()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        # synchronous calls: one name each is safe
        return self.hvd.allreduce(tensor, op=self.hvd.Sum, name="menndl.sum")

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Max, name="menndl.max")

    def first(self, value: Any) -> Any:
        """The value of the lowest rank whose value is not None (None if every rank's is)."""
        return next((v for v in self.gather(value) if v is not None), None)

    def gather(self, value: Any) -> list:
        """Every rank's (picklable) value, in rank order, on every rank."""
        return self.hvd.allgather_object(value, name="menndl.gather")
