"""training.precision under real MPI: a Horovod group of 2 trains in bf16 and in fp16, its gradient scaler
stepping after the group's allreduce, so that both ranks skip the same steps and keep the same weights. The job
runs in a subprocess with a timeout, so a hang fails the test."""
import math
from pathlib import Path

from launchers import PYTHON, mpirun, results_of

HERE = Path(__file__).parent


def test_a_group_of_two_trains_in_bf16_and_fp16(elemnet_data_dir, tmp_path):
    out = mpirun(2, PYTHON, str(HERE / "mpi_scripts.py"), "precision_group", str(elemnet_data_dir),
                 timeout=300, cwd=tmp_path)
    seen = {r["case"]: r for r in results_of(out)}
    assert set(seen) == {"bf16", "fp16", "fp16 overflowing", "fp16 step 3 on rank 1"}
    for case in ("bf16", "fp16", "fp16 overflowing"):
        (status, message, fitness, scale), partner = seen[case]["outcomes"]
        assert status == "ok" and message == "" and math.isfinite(fitness), (case, message)
        assert partner == [status, message, fitness, scale], case  # metrics reduced, scale kept alike
        assert seen[case]["max_abs_diff"] == 0.0, case  # the same steps taken (and skipped) on both ranks
    assert seen["bf16"]["outcomes"][0][3] is None and seen["fp16"]["outcomes"][0][3] == 2.0 ** 16
    overflowed = seen["fp16 overflowing"]["outcomes"][0][3]
    assert 2.0 ** 10 <= overflowed <= 2.0 ** 30  # backed off from 2**40 by skipping steps, then trained on
    assert seen["fp16 overflowing"]["outcomes"][0][2] < seen["fp16"]["outcomes"][0][2]
    assert [tuple(o[:2]) for o in seen["fp16 step 3 on rank 1"]["outcomes"]] == \
        [("error", "rank 1 of the group: RuntimeError: injected: step")] * 2
