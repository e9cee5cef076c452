"""Batch inference: the best network of a run over a table or images, sharded over MPI ranks. Tasks whose
predictions are rows (tables, one value per image) go to `predict_rows`; this module writes maps.

For maps, each rank takes every size-th image; rank 0 writes what all ranks find, as it arrives, to one HDF5 file
(a class map per image, the defect table, the skipped images and why) and a CSV of defects beside it. An image
that cannot be used is skipped with a one-line reason; the others go on. The task reads the network's outputs with
the calibration recorded beside its weights (for STEM defects, the detection thresholds in result.json).

`--network ensemble` runs the run's ensemble (`search.keep_top`: the networks in ensemble/, their outputs combined
as the task says, with the calibration in ensemble.json); `--network final_ensemble` the same networks trained again
(`menndl retrain --network ensemble`: final_ensemble/ and final_ensemble.json).

`--method fourier` runs the STEM task's Fourier filtering instead, with the parameters `menndl baseline` tuned
(RUN/baselines/fourier.json), and writes the same output, so that both can be compared on a user's images.

`--method network+dictionary` (EBSD) takes each pattern's orientation from the network, then the best match among
the dictionary patterns nearest it (`Dictionary.index_near`): dictionary indexing's tolerance of real patterns at
a fraction of its time. `dictionary` (resolution in degrees, patterns near each) defaults to the run's
`dictionary_resolution` and 100.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch
from tqdm import tqdm

from menndl_py.commands.common import check_output, opened_run
from menndl_py.commands.predict_rows import predict_rows, prepared
from menndl_py.config import check_setting
from menndl_py.engine.transport import mpi
from menndl_py.errors import UserError
from menndl_py.images import Reader, list_items
from menndl_py.rundir.networks import calibrated, kept_networks, load_network
from menndl_py.train.device import laid_out, pick_device
from menndl_py.train.ensemble import Ensemble

EXIT_SKIPPED = 1


class Output:
    """The output file (rank 0 only): class maps, the defect table and the skipped images, flushed as they come."""

    def __init__(self, path: Path, run_dir: Path, about: dict, class_names: tuple, overwrite: bool):
        """`about`: what made the predictions (the run and genome, or the method and its parameters), as
        attributes of the file."""
        self.check(path, run_dir, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = class_names
        self.h5 = h5py.File(path, "w")
        self.h5.attrs.update(run=str(run_dir), classes=json.dumps(list(class_names)), **about)
        self.maps = self.h5.create_group("maps")
        self.defects = self.h5.create_dataset("defects", (0, 5), np.float32, maxshape=(None, 5), chunks=(4096, 5))
        self.defects.attrs["columns"] = "image, y, x, class, confidence"
        text = h5py.string_dtype()
        self.skipped = self.h5.create_dataset("skipped", (0, 2), text, maxshape=(None, 2), chunks=(256, 2))
        self.csv_path = path.with_suffix(".csv")
        self.csv_file = open(self.csv_path, "w", newline="")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["image", "source", "y", "x", "class", "confidence"])
        self.n_images = self.n_defects = 0
        self.skips: list[tuple[str, str]] = []

    @staticmethod
    def check(path: Path, run_dir: Path, overwrite: bool) -> None:
        """UserError unless `path` (and the CSV beside it) may be written: an .h5 name, neither file a symbolic link
        (dangling or not) nor a directory, neither there unless `overwrite`, and not inside a run directory."""
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise UserError(f"--output: must name an .h5 file, got {str(path)!r}")
        check_output([(path, ""), (path.with_suffix(".csv"), " (the CSV written beside --output)")], run_dir,
                     overwrite, "predictions")

    def write(self, results: list[tuple]) -> None:
        for index, source, class_map, defects, reason in results:
            if reason:
                self.skips.append((source, reason))
                self.skipped.resize(len(self.skips), 0)
                self.skipped[-1] = (source, reason)
                tqdm.write(f"menndl: skipped {source}: {reason}", file=sys.stderr)
                continue
            dataset = self.maps.create_dataset(f"{index:07d}", data=class_map, compression="gzip",
                                               compression_opts=1)
            dataset.attrs["source"] = source
            if len(defects):
                n = len(self.defects)
                self.defects.resize(n + len(defects), 0)
                self.defects[n:] = np.column_stack([np.full(len(defects), index, np.float32), defects[:, :4]])
                for y, x, cls, conf in defects[:, :4]:
                    self.csv.writerow([index, source, f"{y:.2f}", f"{x:.2f}", self.class_names[int(cls)],
                                       f"{conf:.4f}"])
            self.n_images += 1
            self.n_defects += len(defects)
        self.h5.flush()
        self.csv_file.flush()

    def close(self) -> None:
        self.h5.close()
        self.csv_file.close()


def load_best(run_dir: Path, quiet: bool = False, network: Optional[str] = None):
    """(task, genome, model in eval mode on CPU) of a run's network to use (`network`: best, final or a Pareto
    front member's id; by default final/ after `menndl retrain`, else best/), the task calibrated for that network;
    unless `quiet`, a note on stderr when the network has no calibration and a fallback is used."""
    run, cfg, task = opened_run(run_dir)
    where = run.network_to_use() if network is None else run.network_named(network)
    genome, model, record = load_network(where, task.space().restricted(cfg.search.space))
    calibrated(task, where, record, lambda note: None if quiet else print(f"menndl: note: {note}", file=sys.stderr,
                                                                          flush=True))
    return task, genome, model


def load_ensemble(run_dir: Path, quiet: bool = False, retrained: bool = False) -> tuple:
    """(task, the first member's genome, Ensemble in eval mode on CPU) of a run's ensemble (`retrained`: its
    networks trained again by `menndl retrain --network ensemble`), the task calibrated for it (its record: written
    when the search ended, or by that retrain); UserError if the run has none, or its networks have changed."""
    run, cfg, task = opened_run(run_dir)
    kept, record = run.ensemble_files(retrained)
    facts = run.read_json(record)
    if not facts:
        raise UserError(f"{record}: missing; " + (f"'menndl retrain {run_dir} --network ensemble' writes it"
                                                  if retrained else "a search with search.keep_top (2 or more) "
                                                                    "writes it when it ends"))
    networks = kept_networks(kept, task.space().restricted(cfg.search.space), task.higher_is_better)
    ids = [work_id for work_id, _, _ in networks]
    if sorted(ids) != sorted(facts.get("members", [])):
        again = f"menndl retrain {run_dir} --network ensemble" if retrained else f"menndl resume {run_dir}"
        raise UserError(f"{kept}: holds ids {ids or 'none'}, but {record.name} is of ids {facts.get('members')}; "
                        f"it is written again by '{again}'")
    note = task.load_calibration(facts.get("calibration", {}))
    if note and not quiet:
        print(f"menndl: note: {record}: {note}", file=sys.stderr, flush=True)
    return task, networks[0][1], Ensemble(task, [(genome, model) for _, genome, model in networks]).eval()


@torch.no_grad()
def infer(outputs, task, ready: list, device) -> list[tuple]:
    """Run one batch through `outputs` (a network's or an ensemble's); class maps and defect tables per image."""
    x = torch.from_numpy(np.stack([array for _, _, array in ready])).to(device)
    found = task.interpret(outputs(x), x.shape[-2:])
    return [(index, source, class_map, defects, "") for (index, source, _), (class_map, defects)
            in zip(ready, found)]


METHODS = ("network", "fourier", "network+dictionary")


def predict(run_dir: str, inputs: list[str], output: str, *, batch_size: Optional[int] = None,
            dataset: Optional[str] = None, network: Optional[str] = None, overwrite: bool = False,
            progress: bool = True, method: str = "network", dictionary: tuple = (None, None)) -> int:
    """Run the best network of `run_dir` (or, with `method` 'fourier', Fourier filtering with the parameters file
    `run_dir` or the one of that baseline run) over `inputs`; 0 if every row or image was used, EXIT_SKIPPED
    otherwise."""
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {batch_size}")
    if method not in METHODS:
        raise UserError(f"--method: must be one of {', '.join(METHODS)}, got {method!r}")
    check_dictionary(method, *dictionary)
    share = mpi.share()
    if method == "fourier":
        from menndl_py.tasks.stem.fourier import FourierMethod

        fourier = FourierMethod(Path(run_dir))

        def found(ready: list) -> list[tuple]:
            return [(index, source, *fourier.find(array), "") for index, source, array in ready]

        return predict_maps(share, inputs, output, dataset, fourier.about, fourier.class_names, fourier.prepare,
                            found, run_dir=fourier.path.parent, dims=2, batch_size=1, overwrite=overwrite,
                            progress=progress)
    if network in ("ensemble", "final_ensemble"):
        task, genome, model = load_ensemble(Path(run_dir), quiet=share.rank != 0, retrained=network != "ensemble")
        outputs, about = model.outputs, {"ensemble": json.dumps([g.canonical() for g in model.genomes])}
    else:
        task, genome, model = load_best(Path(run_dir), quiet=share.rank != 0, network=network)
        outputs, about = (lambda x: task.outputs(model, genome, x)), {"genome": genome.canonical()}
    if method == "network+dictionary":
        if not hasattr(task, "use_dictionary"):
            raise UserError(f"--method network+dictionary: for EBSD patterns (task ebsd), not task {task.name}")
        made = task.use_dictionary(*dictionary, share=share)
        if share.rank == 0:
            print(f"[menndl] dictionary at {made.resolution:g}°: {len(made):,} patterns made in {made.seconds:.0f} s "
                  f"by {share.ranks_on_node} rank{'s' * (share.ranks_on_node > 1)} a node; each pattern matched "
                  f"among the {made.near} nearest the network's orientation", flush=True)
    device = pick_device(share.local_rank)
    laid_out(model, device, inference=True)
    if task.predicts in ("table", "images", "structures"):
        skipped = predict_rows(share, task, genome, model, device, inputs, output, run_dir=run_dir,
                               batch_size=batch_size, dataset=dataset, overwrite=overwrite, progress=progress)
        return EXIT_SKIPPED if skipped else 0
    if task.predicts != "maps":
        raise UserError(f"task {task.name}: 'menndl predict' does not run its networks (use 'menndl export')")
    return predict_maps(share, inputs, output, dataset, about, task.class_names,
                        lambda a: task.prepare_image(a, genome),
                        lambda ready: infer(outputs, task, ready, device), run_dir=Path(run_dir),
                        dims=task.image_dims, batch_size=batch_size or task.image_batch, overwrite=overwrite,
                        progress=progress)


def check_dictionary(method: str, resolution: Optional[float], near: Optional[int]) -> None:
    """One-line errors for network+dictionary's options: given with another method, or out of range."""
    for flag, value in (("--dictionary-resolution", resolution), ("--dictionary-near", near)):
        if value is not None and method != "network+dictionary":
            raise UserError(f"{flag}: only with --method network+dictionary")
    if resolution is not None:
        from menndl_py.tasks.ebsd.task import EbsdOptions

        check_setting("--dictionary-resolution", resolution, EbsdOptions, "dictionary_resolution")
    if near is not None and near < 1:
        raise UserError(f"--dictionary-near: must be >= 1, got {near}")


def predict_maps(share, inputs: list[str], output: str, dataset: Optional[str], about: dict, class_names: tuple,
                 prepare, found, *, run_dir: Path, dims: int, batch_size: int, overwrite: bool, progress: bool) \
        -> int:
    """Class maps and defects of images (`dims` 2) or volumes (3): `prepare` makes an input of a raw one (or
    SkipImage), `found` the results of a batch of prepared inputs of one shape."""
    items = list(enumerate(list_items(inputs, dataset, dims=dims)))
    if not items:
        raise UserError("INPUT: no images given")
    out, refusal = None, None
    if share.rank == 0:
        try:
            out = Output(Path(output), run_dir, about, class_names, overwrite)
        except UserError as exc:
            refusal = str(exc)
    refusal = share.bcast(refusal)  # the output is open (or refused) before anybody sends to it
    if refusal:
        raise UserError(refusal)
    bar = tqdm(total=len(items), unit="image", disable=not progress or share.rank != 0, file=sys.stderr)
    start, reader = time.monotonic(), Reader()
    mine = share.mine(items)

    def results():
        for ready, skipped in prepared(mine, reader, prepare, batch_size):
            yield [(index, source, None, None, reason) for index, source, reason in skipped] + \
                (found(ready) if ready else [])

    for chunk in share.to_root(results(), len(items) - len(mine)):
        out.write(chunk)
        bar.update(len(chunk))
    reader.close()
    if share.rank != 0:
        return EXIT_SKIPPED if share.bcast(None) else 0
    bar.close()
    out.close()
    seconds = time.monotonic() - start
    print(f"[menndl] {out.n_images:,} images, {out.n_defects:,} defects in {seconds:.1f} s "
          f"({out.n_images / max(seconds, 1e-9):.1f} images/s on {share.size} rank{'s' * (share.size > 1)}); "
          f"skipped {len(out.skips)}; written to {output} and {out.csv_path}", flush=True)
    return EXIT_SKIPPED if share.bcast(len(out.skips)) else 0
