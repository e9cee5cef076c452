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


def channels_last_group() -> None:
    """A conv net laid out channels-last trained data-parallel by a HorovodGroup of 2 beside its NCHW twin (rank 1
    starting from other weights, each rank its own data); rank 0 prints how far the ranks, and the layouts, differ."""
    import copy

    import torch.nn as nn
    from mpi4py import MPI

    from menndl_py.train.device import laid_out
    from menndl_py.train.group import HorovodGroup

    torch.set_num_threads(1)
    group = HorovodGroup(MPI.COMM_WORLD)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 4))
    trained = {}
    for name, model in (("nchw", copy.deepcopy(net)), ("nhwc", laid_out(copy.deepcopy(net), torch.device("cpu")))):
        if group.rank == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        group.broadcast_parameters(model)
        optimizer = group.distributed_optimizer(torch.optim.SGD(model.parameters(), 0.05), model)
        data = torch.Generator().manual_seed(1 + group.rank)
        for _ in range(4):
            loss = model(torch.randn(16, 2, 16, 16, generator=data)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            group.step(optimizer)
        trained[name] = torch.cat([p.detach().contiguous().flatten() for p in model.parameters()])  # not the
        # BatchNorm statistics: each rank keeps its own data's
        trained[name + "_layout"] = model[0].weight.is_contiguous(memory_format=torch.channels_last)
    everyone = group.gather(trained)
    if group.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": float((everyone[0]["nhwc"] - everyone[1]["nhwc"]).abs().max()),
            "layouts": float((trained["nhwc"] - trained["nchw"]).abs().max()),
            "moved": float((trained["nhwc"] - torch.cat([p.detach().flatten() for p in net.parameters()])).abs().max()),
            "nhwc_is_channels_last": trained["nhwc_layout"]}), flush=True)


def one_rank_fails(data_dir: str) -> None:
    """A group of 2 trains one genome again and again, each time with a failure on one rank only (in building, a
    training step, scoring) or none; rank 0 prints the outcome each rank got."""
    from mpi4py import MPI

    from menndl_py.genome import Genome
    from menndl_py.tasks.elemnet.task import ElemNetTask
    from menndl_py.train.group import HorovodGroup
    from menndl_py.train.trainer import Budget, Trainer

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    group = HorovodGroup(comm)
    fault: dict = {}  # what fails on this rank in the current case

    class Faulty(ElemNetTask):
        def augment(self, x, y, generator):
            fault["steps"] = fault.get("steps", 0) + 1
            if fault.get("where") == "step" and fault["steps"] == fault["at"]:
                raise fault["raise"]("injected: step")
            return x, y

        def metric_sums(self, prediction, target):
            if fault.get("where") == "scoring":
                raise RuntimeError("injected: scoring")
            return super().metric_sums(prediction, target)

    task = Faulty({"train_size": 1000, "val_size": 200, "test_size": 200}, data_dir)
    data = {s: tuple(torch.as_tensor(a) for a in task.load(s, (group.rank, group.size))) for s in ("train", "val")}
    space = task.space()
    trainer = Trainer(task, space, group, data, Budget(epochs=1, time_budget=None, timeout=120),
                      device=torch.device("cpu"))
    build = trainer._build

    def faulty_build(genome, stage=None):
        if fault.get("where") == "build":
            raise RuntimeError("injected: build")
        return build(genome, stage)

    trainer._build = faulty_build
    genome = Genome([{"width": 32, "activation": "relu", "dropout": 0.0, "batch_norm": False}],
                    {"learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0})
    cases = [("build on rank 1", 1, {"where": "build"}),
             ("step 3 on rank 1", 1, {"where": "step", "at": 3, "raise": MemoryError}),
             ("step 5 on rank 0", 0, {"where": "step", "at": 5, "raise": RuntimeError}),
             ("scoring on rank 1", 1, {"where": "scoring"}),
             ("none", None, {})]
    for case, rank, faults in cases:
        fault.clear()
        if comm.rank == rank:
            fault.update(faults)
        outcome = trainer.evaluate(genome)
        both = comm.gather((str(outcome.status), outcome.message), root=0)
        if comm.rank == 0:  # one printer: the lines of two ranks could mix
            print("RESULT " + json.dumps({"case": case, "outcomes": both}), flush=True)


def precision_group(data_dir: str) -> None:
    """A group of 2 trains one genome in bf16 and in fp16 (with its gradient scaler), then in fp16 on from a state
    whose scale overflows the gradients, then in fp16 with step 3 failing on rank 1; rank 0 prints, for each case,
    every rank's outcome, final scale, and how far the ranks' parameters differ (batch-norm statistics are each
    rank's own)."""
    from mpi4py import MPI

    from menndl_py.genome import Genome
    from menndl_py.tasks.elemnet.task import ElemNetTask
    from menndl_py.train.group import HorovodGroup
    from menndl_py.train.trainer import Budget, Stage, Trainer

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    group = HorovodGroup(comm)
    failing: dict = {}

    class Faulty(ElemNetTask):
        def augment(self, x, y, generator):
            failing["steps"] = failing.get("steps", 0) + 1
            if failing.get("rank") == comm.rank and failing["steps"] == 3:
                raise RuntimeError("injected: step")
            return x, y

    task = Faulty({"train_size": 1000, "val_size": 200, "test_size": 200}, data_dir)
    data = {s: tuple(torch.as_tensor(a) for a in task.load(s, (group.rank, group.size))) for s in ("train", "val")}
    genome = Genome([{"width": 64, "activation": "relu", "dropout": 0.0, "batch_norm": True}] * 2,
                    {"learning_rate": 5e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0})

    def run(case: str, precision: str, stage=None) -> object:
        failing["steps"] = 0
        trainer = Trainer(task, task.space(), group, data, Budget(epochs=4, time_budget=None, timeout=120,
                                                                  precision=precision), device=torch.device("cpu"))
        torch.manual_seed(1000 + comm.rank)  # if broadcast_parameters failed, ranks would start apart
        outcome = trainer.evaluate(genome, stage=stage)
        flat = None if outcome.model is None else \
            torch.cat([p.detach().flatten() for p in outcome.model.parameters()]).numpy()
        scale = outcome.state["scaler"]["scale"] if outcome.state and "scaler" in outcome.state else None
        everyone = comm.gather((str(outcome.status), outcome.message, outcome.fitness, scale, flat), root=0)
        if comm.rank == 0:
            weights = [w for *_, w in everyone]
            diff = float(abs(weights[0] - weights[1]).max()) if weights[0] is not None else None
            print("RESULT " + json.dumps({"case": case, "outcomes": [r[:4] for r in everyone],
                                          "max_abs_diff": diff}), flush=True)
        return outcome

    run("bf16", "bf16")
    first = run("fp16", "fp16", Stage("epochs", 2.0, keep=True))
    state = {**first.state, "scaler": {**first.state["scaler"], "scale": 2.0 ** 40}}
    run("fp16 overflowing", "fp16", Stage("epochs", 4.0, state=state, keep=True))
    failing["rank"] = 1
    run("fp16 step 3 on rank 1", "fp16")


def predict_many(root: str) -> None:
    """`menndl predict` of the run in ROOT/runs/r 20 times in one job, over stacks of uneven image counts (and a
    file that is skipped every third time), with several batch sizes; rank 0 prints what each output holds."""
    import h5py

    from menndl_py.commands.predict import predict

    torch.set_num_threads(1)
    rank = MPI_rank()
    for i in range(20):
        n = 5 + 7 * i % 13
        inputs = [f"{root}/stack{n}.h5"] + ([f"{root}/corrupt.tif"] if i % 3 == 0 else [])
        output = f"{root}/out/{i}.h5"
        status = predict(f"{root}/runs/r", inputs, output, batch_size=1 + i % 3, progress=False)
        if rank == 0:
            with h5py.File(output, "r") as f:
                print("RESULT " + json.dumps({"i": i, "images": n, "status": status, "maps": len(f["maps"]),
                                              "skipped": len(f["skipped"])}), flush=True)


def MPI_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.rank


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
