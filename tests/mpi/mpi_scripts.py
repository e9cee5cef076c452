"""Programs that the MPI tests launch under mpirun: `mpirun -np N python mpi_scripts.py NAME ARGS...`."""
import json
import sys

import torch


def identical_weights(data_dir: str) -> None:
    """Train one genome data-parallel in each group of 2; each leader prints how far its group's weights differ."""
    from mpi4py import MPI

    from menndl_py.engine.transport.mpi import make_layout
    from menndl_py.genome import Genome
    from menndl_py.tasks import make_task
    from menndl_py.train.group import HorovodGroup
    from menndl_py.train.trainer import Budget, Trainer

    comm = MPI.COMM_WORLD
    layout = make_layout(comm, 2)
    if layout.group_index is None:
        return
    torch.set_num_threads(1)
    group = HorovodGroup(layout.group)
    task = make_task("elemnet", {"train_size": 2000, "val_size": 400, "test_size": 400}, data_dir)
    data = {s: tuple(torch.as_tensor(a) for a in task.load(s, (group.rank, group.size))) for s in ("train", "val")}
    genome = Genome([{"width": 64, "activation": "relu", "dropout": 0.1, "batch_norm": False},
                     {"width": 32, "activation": "elu", "dropout": 0.0, "batch_norm": False}],
                    {"learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0})
    space = task.space()
    trainer = Trainer(task, space, group, data, Budget(epochs=2, time_budget=None, timeout=120),
                      device=torch.device("cpu"), seed=layout.group_index)  # each group its own initial weights
    torch.manual_seed(1000 + comm.rank)  # if broadcast_parameters failed, ranks would start apart
    outcome = trainer.evaluate(genome)
    flat = torch.cat([p.detach().flatten() for p in outcome.model.parameters()]).numpy()
    shard_first_row = data["train"][0][0].numpy().tolist()
    everyone = layout.group.gather((flat, shard_first_row, outcome.fitness), root=0)
    if layout.is_leader:
        (w0, row0, fit0), (w1, row1, fit1) = everyone
        print("RESULT " + json.dumps({
            "group": layout.group_index, "status": outcome.status, "max_abs_diff": float(abs(w0 - w1).max()),
            "n_weights": int(w0.size), "same_shard": row0 == row1, "fitness": [fit0, fit1]}), flush=True)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
