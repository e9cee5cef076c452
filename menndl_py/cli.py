"""The `menndl` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from menndl_py.errors import UserError, os_error_line


def _overrides(data: dict, settings: list[str]) -> dict:
    """Apply `--set section.key=value` (value read as YAML) to the raw config mapping."""
    from menndl_py import config

    for setting in settings:
        key, sep, text = setting.partition("=")
        *path, last = key.split(".")
        if not sep or not all([*path, last]):
            raise UserError(f"--set {config.shown(setting)}: expected section.key=value")
        node = data
        for part in path:
            if node.get(part) is None:  # absent, or an empty section ('search:' with nothing under it)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise UserError(f"--set {config.shown(setting)}: {part} is not a section")
        node[last] = config.parse_yaml(text, f"--set {config.shown(setting)}")
    return data


def load_config(path: str, settings: list[str], name: str | None = None):
    """The config of file `path`, with run name `name` and the `--set` overrides `settings`, validated."""
    from menndl_py import config

    raw = config.read(path)
    if name is not None:
        run = raw.get("run")
        if run is None:
            raw["run"] = run = {}
        if not isinstance(run, dict):
            raise UserError(f"{path}: run: must be a mapping, got {config.shown(run)}")
        run["name"] = name
    return config.from_file_data(_overrides(raw, settings), path)


def config_of_run(run_dir: str):
    """The config a run directory was made with, its name and directory those of `run_dir`."""
    import os

    from menndl_py import config
    from menndl_py.rundir.layout import RunDir

    path = RunDir(run_dir).config
    if not path.is_file():
        raise UserError(f"{path}: missing; is {run_dir} a run directory?")
    raw = config.read(path)
    where = Path(run_dir)
    if where.name in ("", ".", ".."):  # '.' or 'runs/x/..': the directory's own name is that of its full path
        where = Path(os.path.abspath(run_dir))
    raw["run"] = {"directory": str(where.parent), "name": where.name}
    return config.from_file_data(raw, path)


def cmd_run(args) -> int:
    cfg = load_config(args.config, args.set, args.name)
    from menndl_py.commands.run import search

    return search(cfg, progress=not args.no_progress)


def cmd_resume(args) -> int:
    cfg = config_of_run(args.run_dir)
    from menndl_py.commands.run import search

    return search(cfg, resume=True, progress=not args.no_progress)


def cmd_report(args) -> int:
    from menndl_py.report.plots import make_report

    out = make_report(args.run_dir)
    print((out / "summary.md").read_text())
    print(f"[menndl] plots in {out}")
    return 0


def cmd_tasks(args) -> int:
    from menndl_py.tasks import BUILT_IN, task_class

    for name in BUILT_IN:
        cls = task_class(name)
        print(f"{name:16s} {cls.summary}")
    return 0


def cmd_data(args) -> int:
    from menndl_py.commands.data import make_data

    if args.set and not args.config:
        raise UserError("--set: needs --config (it overrides the config's keys)")
    cfg = load_config(args.config, args.set) if args.config else None
    return make_data(args.task, cfg, args.data_dir, args.force)


def cmd_baseline(args) -> int:
    from menndl_py import config
    from menndl_py.commands.baseline import run_baselines
    from menndl_py.commands.common import format_baselines, task_of
    from menndl_py.engine.transport import mpi
    from menndl_py.rundir.layout import RunDir

    target = Path(args.target)
    if target.is_file():
        cfg = load_config(args.target, args.set, args.name)
    elif Path("configs", f"{args.target}.yaml").is_file():
        cfg = load_config(str(Path("configs", f"{args.target}.yaml")), args.set, args.name)
    else:
        raw = {"task": {"name": args.target}, "run": {"name": args.name or f"{args.target}-baselines"}}
        cfg = config.from_dict(_overrides(raw, args.set))
    results = run_baselines(cfg, args.budget)
    if mpi.launcher_rank() == 0:
        task = task_of(cfg)
        print(format_baselines(results, task.metric, task.unit))
        print(f"[menndl] written to {RunDir(cfg.run_dir).baselines}")
    return 0


def cmd_retrain(args) -> int:
    import math

    from menndl_py.commands.retrain import retrain
    from menndl_py.config import SECONDS_PER_WEEK

    if math.isinf(args.budget) or args.budget > SECONDS_PER_WEEK:  # (retrain refuses the others)
        raise UserError(f"--budget: must be a finite number of seconds <= {SECONDS_PER_WEEK}, got {args.budget!r}")
    if args.epochs > 1_000_000:
        raise UserError(f"--epochs: must be <= 1000000, got {args.epochs}")
    retrain(config_of_run(args.run_dir), args.budget, args.epochs, args.lr_schedule, args.network, args.warm_start)
    return 0


def cmd_predict(args) -> int:
    from menndl_py.commands.predict import predict

    return predict(args.run_dir, args.inputs, args.output, batch_size=args.batch_size, dataset=args.dataset,
                   network=args.network, overwrite=args.overwrite, progress=not args.no_progress, method=args.method,
                   dictionary=(args.dictionary_resolution, args.dictionary_near))


def cmd_export(args) -> int:
    from menndl_py.commands.export import export

    export(args.run_dir, args.format, args.output, network=args.network, overwrite=args.overwrite)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="menndl", description="Evolutionary neural architecture search for "
                                "deep materials informatics, on one process or many MPI ranks.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start a search (or continue an unfinished one of the same config)")
    run.add_argument("config")
    run.add_argument("--name", help="run name (default: run.name of the config)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser("resume", help="continue a run that was stopped or killed")
    resume.add_argument("run_dir")
    resume.add_argument("--no-progress", action="store_true")
    resume.set_defaults(func=cmd_resume)

    report = sub.add_parser("report", help="summary table and plots of a run")
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)

    tasks = sub.add_parser("tasks", help="list the tasks")
    tasks.set_defaults(func=cmd_tasks)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="make a task's data set")
    make.add_argument("task")
    make.add_argument("--config", help="take the task options and data directory from this config")
    make.add_argument("--data-dir", help="where to write (default: data/)")
    make.add_argument("--force", action="store_true", help="make it again even if it exists")
    make.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    make.set_defaults(func=cmd_data)

    baseline = sub.add_parser("baseline", help="train a task's hand-made baselines on the search's data and budget")
    baseline.add_argument("target", help="a config file, or a task name (uses configs/<task>.yaml if present)")
    baseline.add_argument("--name", help="run directory to write baselines.json into (default: run.name)")
    baseline.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    baseline.add_argument("--budget", type=float, metavar="SECONDS",
                          help="train each baseline network this long (default: a candidate's budget)")
    baseline.set_defaults(func=cmd_baseline)

    retrain = sub.add_parser("retrain", help="train a run's best network again, from scratch (or on from its "
                                              "weights) and for longer (into RUN/final/, which predict then uses)")
    retrain.add_argument("run_dir")
    retrain.add_argument("--budget", type=float, default=600.0, help="seconds of training (default 600)")
    retrain.add_argument("--epochs", type=int, default=10_000, help="at most this many epochs")
    retrain.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                         help="the learning rate falls to 0 along the budget (cosine, default) or stays (constant)")
    retrain.add_argument("--network", metavar="ID", help="the id of another of the run's evaluations, or ensemble: "
                                                         "each of the ensemble's networks, into RUN/final_ensemble/ "
                                                         "(default: the best network)")
    retrain.add_argument("--warm-start", action="store_true",
                         help="start from the network's trained weights (a fresh optimizer), not from scratch: "
                              "to train it on for longer, or on the run's data after its task settings changed (an "
                              "evaluation's: its kept training state's, states/ID.pt)")
    retrain.set_defaults(func=cmd_retrain)

    predict = sub.add_parser("predict", help="run a run's best network over a table or images (shards over MPI "
                                            "ranks)",
                             description="Table tasks (tabular, composition, elemnet) read one CSV or Parquet table "
                                         "and write it with prediction columns; image tasks read images and write "
                                         "one row per image (images, homogenization, ebsd) or maps (segmentation, "
                                         "stem_defects, localization); crystal_graph reads structure files "
                                         "(CIF, POSCAR, extxyz) and writes one row per structure. Exit "
                                         "status: 0 when every row or image was used, 1 when some were skipped "
                                         "(each with its reason in the output), 2 on bad usage.")
    predict.add_argument("run_dir")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="a CSV or Parquet table, or HDF5, TIFF, PNG, NPY or NPZ files or folders of them")
    predict.add_argument("--output", required=True,
                         help="the file to write: .csv or .parquet for rows; .h5 for maps (a CSV of objects beside)")
    predict.add_argument("--dataset", help="the HDF5 dataset to read (default: every 2-D or 3-D dataset)")
    predict.add_argument("--batch-size", type=int, help="rows or images per batch (default: 4096 rows, 8 images, "
                                                        "64 EBSD patterns)")
    predict.add_argument("--network", metavar="NAME", help="best, final, ensemble (search.keep_top's networks as "
                                                            "one), final_ensemble (those retrained) or a Pareto "
                                                            "front or ensemble member's id (default: final/ after "
                                                            "'menndl retrain', else best/)")
    predict.add_argument("--method", default="network", metavar="METHOD",
                         help="network (default); fourier: STEM Fourier filtering, RUN_DIR then the fourier.json "
                              "'menndl baseline' wrote or its run directory; network+dictionary: EBSD, each "
                              "network's orientation then the best of the 100 dictionary patterns nearest it")
    predict.add_argument("--dictionary-resolution", type=float, metavar="DEG",
                         help="network+dictionary: the dictionary's resolution in degrees (default: the run's "
                              "dictionary_resolution)")
    predict.add_argument("--dictionary-near", type=int, metavar="K",
                         help="network+dictionary: dictionary patterns matched with each pattern (default 100)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser("export", help="a run's network for use elsewhere (with a JSON beside it: input, "
                                           "normalisation, classes, task, genome, metric), or its evaluations as an "
                                           "Optuna journal")
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, metavar="FORMAT",
                        help="onnx, torchscript, state-dict (the network) or optuna-journal (the evaluations)")
    export.add_argument("--output", required=True, help="the file to write (a network's JSON goes to FILE.json)")
    export.add_argument("--network", metavar="NAME",
                        help="best, final or a Pareto front member's id (default: final/ after 'menndl retrain', "
                             "else best/)")
    export.add_argument("--overwrite", action="store_true", help="replace existing output files")
    export.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    """The `menndl` command; returns its exit status: 2 after a user error or an OSError (one line), 1 after a bug
    (a traceback). Under MPI an error on one rank ends every rank with that status (engine.transport.mpi)."""
    from menndl_py.engine.transport import mpi

    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserError as exc:
        return mpi.leave_after_error(2, f"menndl: error: {exc}")
    except OSError as exc:
        return mpi.leave_after_error(2, f"menndl: error: {os_error_line(exc)}")
    except KeyboardInterrupt:
        return 130
    except BaseException:
        mpi.abort_world()  # an unexpected crash on one rank must not leave the others waiting forever
        raise
    return mpi.leave(code)


if __name__ == "__main__":
    sys.exit(main())
