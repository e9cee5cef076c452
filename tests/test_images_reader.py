"""menndl_py/images.py: `.npy` and `.npz` stacks, and 3-D arrays read as one volume (a 4-D array as a stack of
volumes) for 3-D tasks, while 2-D reading stays as it was."""
import h5py
import numpy as np
import pytest
import tifffile

from menndl_py.images import Reader, list_items
from menndl_py.tasks.base import SkipImage


def read_all(inputs, **options):
    items, reader = list_items([str(i) for i in inputs], **options), Reader()
    try:
        return [(item.source, reader.read(item)) for item in items]
    finally:
        reader.close()


def test_npy_and_npz_stacks_are_read_image_by_image(tmp_path):
    stack = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    np.save(tmp_path / "a.npy", stack)
    np.savez(tmp_path / "b.npz", images=stack * 2, other=stack[0])
    got = read_all([tmp_path / "a.npy", tmp_path / "b.npz"])
    assert [source for source, _ in got] == [f"{tmp_path / 'a.npy'}[{i}]" for i in range(3)] + \
        [f"{tmp_path / 'b.npz'}:images[{i}]" for i in range(3)]
    for (_, image), expected in zip(got, [*stack, *(stack * 2)]):
        np.testing.assert_array_equal(image, expected)
    (_, one), = read_all([tmp_path / "b.npz"], dataset="other")
    np.testing.assert_array_equal(one, stack[0])


def test_a_missing_npz_array_or_a_broken_file_is_skipped_with_the_reason(tmp_path):
    np.savez(tmp_path / "b.npz", masks=np.zeros((2, 4, 4)))
    (tmp_path / "c.npy").write_bytes(b"not numpy at all")
    items = list_items([str(tmp_path / "b.npz"), str(tmp_path / "c.npy")])
    assert "no array 'images' in this file (it holds masks)" in items[0].error
    assert items[1].error.startswith("cannot read")
    with pytest.raises(SkipImage, match="no array 'images'"):
        Reader().read(items[0])


@pytest.mark.parametrize("suffix", [".h5", ".npy", ".npz", ".tif"])
def test_3d_tasks_read_a_3d_array_as_one_volume_and_a_4d_array_as_a_stack(tmp_path, suffix):
    volume = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    stack = np.stack([volume, volume + 1])
    for name, array in (("one", volume), ("two", stack)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".h5":
            with h5py.File(path, "w") as f:
                f["images"] = array
        elif suffix == ".npy":
            np.save(path, array)
        elif suffix == ".npz":
            np.savez(path, images=array)
        else:
            tifffile.imwrite(path, array, photometric="minisblack")
    got = read_all([tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"], dims=3)
    assert len(got) == 3
    for (_, array), expected in zip(got, [volume, volume, volume + 1]):
        np.testing.assert_array_equal(array, expected)
    assert len(read_all([tmp_path / f"one{suffix}"])) == 4  # 2-D reading: a stack of 4 images, as before


@pytest.mark.parametrize("name", ["nordif/Pattern.dat", "edax_binary/edax_binary.up1", "oxford_binary/patterns.ebsp"])
def test_vendor_ebsd_files_are_read_pattern_by_pattern_as_kikuchipy_reads_them(tmp_path, name):
    import shutil
    from pathlib import Path

    import kikuchipy

    shipped = Path(kikuchipy.__file__).parent / "data" / name  # kikuchipy's own small test scans
    for f in shipped.parent.glob("*"):  # with a NORDIF scan's Setting.txt beside it
        shutil.copy(f, tmp_path) if f.is_file() else None
    expected = kikuchipy.load(shipped).data
    expected = expected.reshape(-1, *expected.shape[-2:])
    got = read_all([tmp_path / shipped.name])
    assert [source for source, _ in got] == [f"{tmp_path / shipped.name}[{i}]" for i in range(len(expected))]
    for (_, pattern), want in zip(got, expected):
        np.testing.assert_array_equal(pattern, want)


def test_a_nordif_scan_without_its_settings_is_skipped_with_kikuchipys_reason(tmp_path):
    (tmp_path / "Pattern.dat").write_bytes(bytes(60 * 60 * 4))
    (item,) = list_items([str(tmp_path / "Pattern.dat")])
    assert item.error.startswith("cannot read: No setting file found")
