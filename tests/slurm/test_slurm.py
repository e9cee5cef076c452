"""The batch scripts in slurm/ on a one-node Slurm cluster (launch/local-slurm.sh): a real search under
`sbatch --wait`, ranks started by `srun --mpi=pmix`, and the launch errors a user meets first. Every job has a
time-out, so a hang fails the test (and the job is cancelled)."""
import json
import subprocess
import sys
from pathlib import Path

import yaml
from search_jobs import rows, write_config

REPO = Path(__file__).resolve().parents[2]
CPU_SCRIPT = REPO / "slurm" / "menndl-cpu.sbatch"
GPU_SCRIPT = REPO / "slurm" / "menndl-gpu.sbatch"
MENNDL = str(Path(sys.executable).with_name("menndl"))


def test_cpu_script_runs_a_search_on_groups_of_two(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 8})
    job = slurm.sbatch(CPU_SCRIPT, "-n", "5", "--overcommit", args=(config,), cwd=tmp_path, timeout=600)
    assert job.returncode == 0, job.log[-3000:]
    assert "[menndl-cpu] menndl exited with status 0" in job.log
    run_dir = tmp_path / "runs" / "job"
    stored = rows(run_dir)
    assert len(stored) == 8
    assert {r["ranks"] for r in stored} == {"2"}
    assert {r["group"] for r in stored} == {"0", "1"}
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["finished"] is True
    assert (facts["world_size"], facts["groups"], facts["ranks_per_candidate"]) == (5, 2, 2)
    assert facts["hosts"] == [slurm.hostname]
    assert facts["scheduler"]["slurm_job_id"] == job.job_id
    assert facts["scheduler"]["slurm_job_nodelist"] == slurm.hostname
    assert facts["scheduler"]["slurm_tasks_per_node"] == "5"
    assert (run_dir / "best" / "model.pt").exists()


def test_gpu_script_places_the_master_beside_a_group_per_node(slurm, elemnet_data_dir, tmp_path):
    """No GPUs here: GPUS_PER_NODE=2 stands in for them, to check the layout (1 node x 2 ranks + the master)."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 2})
    scratch = tmp_path / "scratch"  # the job's TMPDIR: the host file is made in it by mktemp, and removed (torch
    # may leave its own cache folder there)
    scratch.mkdir()
    job = slurm.sbatch(GPU_SCRIPT, "-N", "1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
                       args=(config,), env={"GPUS_PER_NODE": "2", "TMPDIR": str(scratch)}, cwd=tmp_path,
                       timeout=600)
    assert job.returncode == 0, job.log[-3000:]
    assert not list(scratch.glob("menndl-hosts.*")) and not list(tmp_path.glob(".menndl-launch.*"))
    assert "1 nodes x 2 GPUs = 2 worker ranks + the master" in job.log
    run_dir = tmp_path / "runs" / "job"
    assert len(rows(run_dir)) == 2
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["finished"] is True
    assert (facts["world_size"], facts["groups"], facts["ranks_per_candidate"]) == (3, 1, 2)


def test_srun_without_a_process_manager_is_a_one_line_error(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir)
    out = slurm.srun("-n", "3", "--overcommit", "--mpi=none", MENNDL, "run", str(config), "--no-progress",
                     cwd=tmp_path, timeout=180)
    assert out.returncode == 2, out.stderr[-3000:]
    ours = [line for line in out.stderr.splitlines() if line.startswith("menndl: error:")]
    assert ours == ["menndl: error: srun started 3 tasks but gave them no MPI process manager: "
                    "use 'srun --mpi=pmix' (or --mpi=pmi2)"]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_world_that_cannot_form_groups_ends_the_job_with_status_2(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir)
    job = slurm.sbatch(CPU_SCRIPT, "-n", "4", "--overcommit", args=(config,), cwd=tmp_path, timeout=300)
    assert job.returncode == 2, job.log[-3000:]
    assert job.error_lines() == ["menndl: error: cluster.ranks_per_candidate: 4 ranks = 1 master + 3 workers, "
                                 "which cannot form groups of 2; launch 1 + a multiple of 2 ranks"]
    assert "Traceback" not in job.log
    assert not (tmp_path / "runs" / "job" / "results.csv").exists()


def test_a_run_directory_of_another_config_ends_the_job_with_status_2(slurm, tmp_path):
    def synthetic(seed: int) -> Path:
        cfg = {"run": {"name": "job", "directory": str(tmp_path / "runs")}, "task": {"name": "synthetic"},
               "search": {"population": 4, "max_evaluations": 6, "seed": seed}}
        path = tmp_path / f"seed{seed}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    first = subprocess.run([MENNDL, "run", str(synthetic(1)), "--no-progress"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "job"
    before = (run_dir / "results.csv").read_text()
    job = slurm.sbatch(CPU_SCRIPT, "-n", "3", "--overcommit", args=(synthetic(2),), cwd=tmp_path, timeout=300)
    assert job.returncode == 2, job.log[-3000:]
    assert len(job.error_lines()) == 1
    assert "runs/job: holds a run of another configuration" in job.error_lines()[0]
    assert (run_dir / "results.csv").read_text() == before
