"""An EBSD dictionary made by the ranks of a node together: each projects a part into memory they share, and every
rank then reads the whole, the same as one process makes alone."""
import numpy as np
from launchers import PYTHON, mpirun, results_of

from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.ebsd_dictionary import Dictionary

SCRIPT = """
import json, sys
import numpy as np
from menndl_py.engine.transport import mpi
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.ebsd_dictionary import Dictionary

share = mpi.share()
dictionary = Dictionary(EbsdSettings(), 15.0, share=share)
np.save(f"{sys.argv[1]}/unit{share.rank}.npy", dictionary.unit)
found, _ = dictionary.index_near(dictionary.unit[:2].reshape(2, 60, 60), dictionary.quaternions[:2], k=3)
everyone = share.comm.gather({"rank": share.rank, "ranks_on_node": share.ranks_on_node, "found": found.tolist()})
if share.rank == 0:
    print("RESULT " + json.dumps(everyone))
"""


def test_three_ranks_share_one_dictionary_the_same_as_one_process_makes(tmp_path):
    out = mpirun(3, PYTHON, "-c", SCRIPT, str(tmp_path), timeout=240, cwd=tmp_path)
    results, = results_of(out)
    assert [r["rank"] for r in results] == [0, 1, 2] and {r["ranks_on_node"] for r in results} == {3}
    alone = Dictionary(EbsdSettings(), 15.0)
    for rank in range(3):  # each rank made a third: the rest it reads from the others
        np.testing.assert_array_equal(np.load(tmp_path / f"unit{rank}.npy"), alone.unit)
    for r in results:
        np.testing.assert_allclose(np.abs(r["found"]), np.abs(alone.quaternions[:2]), atol=1e-6)
