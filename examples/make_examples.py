"""Write the example files of the README's "Search a network for your own data": one small data set per generic task,
in the formats users bring, made offline from what the installed packages ship and from the STEM simulator.

    python examples/make_examples.py            # examples/data/: band_gap.csv, debye.csv, bulk_modulus.csv,
                                                # stem_sites.h5 + stem_sites_labels.csv, stem_maps.npz (about 20 s)
    python examples/make_examples.py --oqmd-volume  # also volume_per_atom.csv: all 341,700 OQMD rows

- band_gap.csv (tabular, classification): AFLOW's band gaps (the table CrabNet bundles) as `conductor`, metal (no gap)
  or nonmetal, beside the 22 magpie descriptors averaged over each composition (formulas of elements outside
  ElemNet's 86 left out); CrabNet's split in a `split` column.
- debye.csv (tabular, regression): AFLOW's Debye temperatures, with the same descriptors and split.
- bulk_modulus.csv (composition): AFLOW's bulk moduli (GPa) by formula, with the `split` column.
- stem_sites.h5 + stem_sites_labels.csv (images): 24×24-pixel HAADF crops centred on atomic columns of simulated
  WSe2 images, labelled by the column's defect class (one label per image, in a CSV by row order).
- stem_maps.npz (segmentation): 64×64 simulated HAADF images with their defect masks, AtomAI's (N, H, W) arrays.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from menndl_py.physics import stem_sim
from menndl_py.tasks.elemnet.data import crabnet_data, fractions
from menndl_py.tasks.elemnet.descriptors import table

SPLITS = ("train", "val", "test")
CROP = 24  # pixels a side of an images-task crop
SITES_PER_CLASS = 400
MAP_IMAGES = 240
DENSE_DEFECTS = dict(chalcogen_vacancy_density=0.04, double_vacancy_density=0.015, dopant_density=0.04,
                     metal_vacancy_density=0.015)  # more defects per image than the STEM task, for small examples


def crabnet_table(name: str) -> pd.DataFrame:
    """CrabNet's bundled benchmark `name` as one table: formula, target, split."""
    folder = crabnet_data(f"benchmark_data/{name}", tuple(f"{s}.csv" for s in SPLITS))
    return pd.concat([pd.read_csv(folder / f"{s}.csv").assign(split=s) for s in SPLITS], ignore_index=True)


def with_magpie(name: str) -> pd.DataFrame:
    """CrabNet's table `name` (formula, target, split) with the magpie descriptors averaged over each composition
    (formulas of elements outside ElemNet's 86, noble gases, left out)."""
    rows = crabnet_table(name)
    rows = rows[[usable(f) for f in rows["formula"]]].reset_index(drop=True)
    magpie = pd.read_csv(crabnet_data("element_properties", ("magpie.csv",)) / "magpie.csv", index_col=0).columns
    averages = np.stack([fractions(f) for f in rows["formula"]]) @ table("magpie")
    features = pd.DataFrame(averages, columns=[f"magpie_{c}" for c in magpie[:averages.shape[1]]])
    return pd.concat([rows[["formula"]], features, rows[["target", "split"]]], axis=1)


def band_gap(out: Path) -> None:
    frame = with_magpie("aflow__Egap").rename(columns={"target": "band_gap_eV"})
    frame.insert(len(frame.columns) - 1, "conductor", np.where(frame["band_gap_eV"] > 0, "nonmetal", "metal"))
    frame.to_csv(out / "band_gap.csv", index=False)


def debye(out: Path) -> None:
    frame = with_magpie("aflow__ael_debye_temperature").rename(columns={"target": "debye_temperature_K"})
    frame.to_csv(out / "debye.csv", index=False)


def usable(formula: str) -> bool:
    try:
        fractions(formula)
    except ValueError:
        return False
    return True


def bulk_modulus(out: Path) -> None:
    rows = crabnet_table("aflow__ael_bulk_modulus_vrh").rename(columns={"target": "bulk_modulus_GPa"})
    rows.to_csv(out / "bulk_modulus.csv", index=False)


def volume_per_atom(out: Path) -> None:
    rows = crabnet_table("OQMD_Volume_per_atom").rename(columns={"target": "volume_per_atom_A3"})
    rows.to_csv(out / "volume_per_atom.csv", index=False)


def stem_sites(out: Path, rng: np.random.Generator) -> None:
    """Crops centred on columns until every class has SITES_PER_CLASS (intact columns drawn as often)."""
    settings = stem_sim.StemSettings(image_size=128, **DENSE_DEFECTS)
    half, crops = CROP // 2, {c: [] for c in range(len(stem_sim.CLASSES))}
    while min(len(v) for v in crops.values()) < SITES_PER_CLASS:
        seed = rng.integers(2**63)
        image = stem_sim.simulate(settings, np.random.default_rng(seed)).image
        columns = stem_sim.specimen(settings, np.random.default_rng(seed))  # the same draws: the same columns
        for (y, x), cls in zip(np.rint(columns.yx).astype(int), columns.classes):
            if half <= y < settings.image_size - half and half <= x < settings.image_size - half \
                    and len(crops[cls]) < SITES_PER_CLASS and (cls > 0 or rng.random() < 0.05):
                crops[cls].append(image[y - half:y + half, x - half:x + half])
    labels = [stem_sim.CLASSES[c] for c in crops for _ in crops[c]]
    images = np.stack([crop for c in crops for crop in crops[c]])
    order = rng.permutation(len(images))
    with h5py.File(out / "stem_sites.h5", "w") as f:
        f.create_dataset("images", data=images[order])
    pd.DataFrame({"label": np.asarray(labels)[order]}).to_csv(out / "stem_sites_labels.csv", index=False)


def stem_maps(out: Path, rng: np.random.Generator) -> None:
    settings = stem_sim.StemSettings(image_size=64, **DENSE_DEFECTS)
    samples = [stem_sim.simulate(settings, np.random.default_rng(rng.integers(2**63))) for _ in range(MAP_IMAGES)]
    np.savez_compressed(out / "stem_maps.npz", images=np.stack([s.image for s in samples]),
                        masks=np.stack([s.labels for s in samples]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"), help="folder to write (made)")
    parser.add_argument("--oqmd-volume", action="store_true", help="also the full OQMD volume-per-atom table")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    band_gap(out)
    debye(out)
    bulk_modulus(out)
    stem_sites(out, rng)
    stem_maps(out, rng)
    if args.oqmd_volume:
        volume_per_atom(out)
    print(f"examples written to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


if __name__ == "__main__":
    main()
