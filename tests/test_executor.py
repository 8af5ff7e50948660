"""``emae study|pipeline --executor``: chains as submitit jobs on this machine and on SLURM (against stand-in
``sbatch``, ``srun``, ``sacct``, ``scontrol``, ``squeue`` and ``scancel`` that run the submitted script here),
their resume after a kill or a requeue, ``--status`` and the executor's settings."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from emae import cli
from emae.errors import EmaeError
from experiments import executor
from experiments.executor import ChainJob, ExecutorConfig, chain_state_path, split_chains, status
from experiments.pipeline import PipelineConfig, stages
from experiments.runner import Stage, State
from experiments.study import StudyConfig, study_stages

PRETRAIN = "--subset 512 --batch-size 32 --num-workers 0"  # 16 updates an epoch of the fmnist-tiny ViT
EVAL = "--train-limit 1024 --val-limit 256 --threads 1 --num-workers 0"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first (Linux's /proc/PID/task/PID/children)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in path.read_text().split()] if path.exists() else []
    return [d for c in children for d in (c, *_descendants(c))]


def _kill_when_checkpointed(root: Path, chain: str, checkpoint: Path, killed: list[int]) -> None:
    """Kill (SIGKILL) the local job of ``chain`` and every process under it once ``checkpoint`` exists."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (checkpoint.is_file() and chain in executor.read_jobs(root)):
        time.sleep(0.05)
    controller = int(executor.read_jobs(root)[chain]["job_id"])
    for pid in [controller, *_descendants(controller)]:
        with contextlib.suppress(ProcessLookupError):  # a process that ended on its own meanwhile
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)


@pytest.mark.fmnist
@pytest.mark.slow
def test_a_local_study_killed_mid_pretraining_reports_the_rest_and_a_rerun_resumes_it(tmp_path, capsys):
    """Three chains as real local processes (the two baselines and MAE); MAE's job is killed once its first
    epoch's checkpoint exists: the others finish, the report runs over them and the run ends with an error naming
    the killed chain; ``--status`` tells; the re-run skips the finished chains and continues MAE's pre-training
    from its checkpoint to the report."""
    root = tmp_path / "study"
    argv = ["study", "--root", str(root), "--runs", "mae:3", "--seeds", "0", "--preset", "fmnist-tiny",
            "--pretrain-args", PRETRAIN, "--eval-args", EVAL, "--executor", "local", "--timeout-min", "30"]
    checkpoint = root / "mae-ep3-seed0" / "pretrain" / "checkpoint.pth"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_checkpointed, args=(root, "mae-ep3-seed0", checkpoint, killed))
    killer.start()
    assert cli.main(argv) == 2
    killer.join()
    out, err = capsys.readouterr()
    assert killed
    for chain in ("untrained-seed0", "pixels-seed0"):
        assert re.search(rf"chain {chain} +done \(job \d+\)", out)
    assert re.search(r"error: chain mae-ep3-seed0: job \d+ ended as \w+ \(log: .*\.out\)", err)
    assert (root / "report" / "report.md").is_file()  # over the chains that finished
    assert (root / "untrained-seed0" / "knn" / "records.jsonl").is_file()
    assert not (root / "mae-ep3-seed0" / "knn").exists()

    assert cli.main(["study", "--status", str(root)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in shown] == ["untrained-seed0", "pixels-seed0", "mae-ep3-seed0"]
    assert re.fullmatch(r"untrained-seed0 +done \(\d+ s\) \(job \d+, local\)", shown[0])
    assert re.fullmatch(r"mae-ep3-seed0 +running mae-ep3-seed0/pretrain \(0/3 stages done\) \(job \d+, local\)",
                        shown[2])

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for chain in ("untrained-seed0", "pixels-seed0"):
        assert re.search(rf"chain {chain} +done earlier", out)
    assert re.search(r"chain mae-ep3-seed0 +submitted: job \d+, log ", out)
    log = (root / "logs" / "mae-ep3-seed0-pretrain.log").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ emae pretrain")]
    assert len(commands) == 2 and not commands[0].endswith("--resume") and commands[1].endswith("--resume")
    assert log.count('"epochs_run"') == 1  # the killed run printed no summary; the resumed one did
    assert (root / "mae-ep3-seed0" / "linprobe" / "records.jsonl").is_file()
    assert cli.main(["study", "--status", str(root)]) == 0
    assert all(" done (" in line for line in capsys.readouterr().out.splitlines())


FAKE_SBATCH = r'''
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

state = Path(os.environ["FAKE_SLURM"])


def job_state(job_id):
    path = state / f"state-{job_id}"
    return path.read_text() if path.exists() else ""


def run(job, script):
    # the job, in the background as SLURM runs it: after its dependencies, each array task in turn, requeued
    # when it asked for it (scontrol requeue), signalled once as a job near its time limit is (sbatch --signal)
    text = Path(script).read_text()
    dependency = re.search(r"^#SBATCH --dependency=afterok:(\S+)", text, re.M)
    needs = dependency.group(1).split(":") if dependency else []
    while any(job_state(n) != "COMPLETED" for n in needs):
        if any(job_state(n) in ("FAILED", "CANCELLED") for n in needs):  # --kill-on-invalid-dep=yes
            (state / f"state-{job}").write_text("CANCELLED")
            return
        time.sleep(0.1)
    array = re.search(r"^#SBATCH --array=0-(\d+)", text, re.M)
    for task in range(int(array.group(1)) + 1) if array else [None]:
        job_id = f"{job}_{task}" if array else str(job)
        env = dict(os.environ, SLURM_JOB_ID=str(job if task is None else job + 1 + task), SLURM_NTASKS="1",
                   SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
                   SLURM_JOB_NODELIST="localhost", FAKE_SLURM_JOB=job_id)
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task))
        while True:
            (state / f"state-{job_id}").write_text("RUNNING")
            process = subprocess.Popen(["bash", script], env=env, stdout=subprocess.DEVNULL)
            when, signalled = os.environ.get("FAKE_SLURM_SIGNAL_WHEN", ""), state / "signalled"
            while process.poll() is None:
                if when and Path(when).exists() and not signalled.exists() and (state / f"pid-{job_id}").exists():
                    signalled.write_text(job_id)
                    os.kill(int((state / f"pid-{job_id}").read_text()), signal.SIGUSR2)
                time.sleep(0.05)
            requeue = state / f"requeue-{job_id}"
            if not requeue.exists():
                (state / f"state-{job_id}").write_text("COMPLETED" if process.returncode == 0 else "FAILED")
                break
            requeue.unlink()


if sys.argv[1] == "--run":
    run(int(sys.argv[2]), sys.argv[3])
    sys.exit(0)
counter = state / "next_id"
job = int(counter.read_text()) if counter.exists() else 100
counter.write_text(str(job + 10))
with open(state / "submissions.jsonl", "a") as f:
    f.write(json.dumps({"job_id": job, "argv": sys.argv[1:], "script": Path(sys.argv[-1]).read_text()}) + "\n")
subprocess.Popen([sys.executable, os.path.abspath(sys.argv[0]), "--run", str(job), sys.argv[-1]],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
'''
FAKE_SRUN = r'''
import os, sys
from pathlib import Path

args, files = sys.argv[1:], {}
while args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
job = os.environ["FAKE_SLURM_JOB"]
main, _, task = job.partition("_")
Path(os.environ["FAKE_SLURM"], f"pid-{job}").write_text(str(os.getpid()))
for flag, fd in (("--output", 1), ("--error", 2)):
    path = files[flag].replace("%A", main).replace("%a", task).replace("%j", job).replace("%t", "0")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, fd)
os.execvp(args[0], args)
'''
FAKE_SACCT = r'''
import os
from pathlib import Path

print("JobID|State|NodeList")
for path in sorted(Path(os.environ["FAKE_SLURM"]).glob("state-*")):
    print(f"{path.name[len('state-'):]}|{path.read_text()}|localhost")
'''
FAKE_RECORDER = r'''
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
with open(Path(os.environ["FAKE_SLURM"], "calls.jsonl"), "a") as f:
    f.write(json.dumps([name, *sys.argv[1:]]) + "\n")
if name == "scontrol" and sys.argv[1] == "requeue":
    Path(os.environ["FAKE_SLURM"], f"requeue-{sys.argv[2]}").write_text("")
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Stand-in SLURM commands first on PATH; returns the folder where they record what they were asked."""
    bin_dir, state = tmp_path / "bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT),
                       ("scontrol", FAKE_RECORDER), ("squeue", FAKE_RECORDER), ("scancel", FAKE_RECORDER)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.setattr(executor, "WAIT_S", 0.2)
    return state


@pytest.mark.fmnist
@pytest.mark.slow
def test_slurm_jobs_carry_the_resources_wait_for_their_needs_and_a_requeued_job_continues(tmp_path, fake_slurm,
                                                                                           monkeypatch, capsys):
    """Two independent chains go as one job array with the resources asked for; the chain reading MAE's
    pre-training waits on it with afterok; MAE's job is signalled after its first epoch's checkpoint, as SLURM
    signals a job near its time limit: it checkpoints, requeues itself (scontrol requeue) and the requeued job
    continues the pre-training from that checkpoint."""
    root = tmp_path / "run"
    mae = root / "mae" / "pretrain"
    empty = tmp_path / "no-records"
    empty.mkdir()
    plan = [Stage("mae/pretrain", ("pretrain", "--preset", "fmnist-tiny", "--method", "mae", "--subset", "512",
                                   "--epochs", "3", "--batch-size", "32", "--num-workers", "0", "--output-dir",
                                   str(mae)), resume_argv=("--resume",), state=str(mae / "checkpoint.pth")),
            Stage("other/report", ("report", "--records", str(empty), "--out", str(root / "other"))),
            Stage("after/report", ("report", "--records", str(mae), "--out", str(root / "after")))]
    monkeypatch.setenv("FAKE_SLURM_SIGNAL_WHEN", str(mae / "checkpoint.pth"))
    cfg = StudyConfig(root=str(root), executor="slurm", partition="gpu", account="emae", gpus_per_node=1,
                      cpus_per_task=2, timeout_min=30)
    assert executor.run_jobs(plan, root, cfg, summary=lambda root: "SUMMARY") == 0
    out = capsys.readouterr().out
    submissions = [json.loads(line) for line in (fake_slurm / "submissions.jsonl").read_text().splitlines()]
    assert [s["job_id"] for s in submissions] == [100, 110]
    array, after = (s["script"] for s in submissions)
    for script in (array, after):
        for option in ("--partition=gpu", "--account=emae", "--gpus-per-node=1", "--cpus-per-task=2", "--time=30",
                       "--nodes=1", "--ntasks-per-node=1", "--signal=USR2@90", "--open-mode=append",
                       "--job-name=emae-run"):
            assert f"#SBATCH {option}\n" in script, option
        assert f"#SBATCH --output={root}/slurm/" in script
        assert "\nsrun --unbuffered --output " in script and "-m submitit.core._submit" in script
    assert "#SBATCH --array=0-1%2\n" in array and "--dependency" not in array
    assert "#SBATCH --dependency=afterok:100_0\n" in after and "#SBATCH --kill-on-invalid-dep=yes\n" in after
    assert "--array" not in after
    calls = [json.loads(line) for line in (fake_slurm / "calls.jsonl").read_text().splitlines()]
    assert calls == [["scontrol", "requeue", "100_0"]]
    # a job is done for submitit once its result is written; the stand-in marks it COMPLETED when its process exits
    def states() -> dict[str, str]:
        return {p.name: p.read_text() for p in fake_slurm.glob("state-*")}

    deadline = time.monotonic() + 30
    while "RUNNING" in states().values() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert states() == {"state-100_0": "COMPLETED", "state-100_1": "COMPLETED", "state-110": "COMPLETED"}
    log = (root / "logs" / "mae-pretrain.log").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ emae pretrain")]
    assert len(commands) == 2 and commands[1].endswith("--resume")
    assert log.count('"epochs_run"') == 1
    job_log = Path(executor.read_jobs(root)["mae"]["log"]).read_text()
    assert "chain mae, job 100_0 on" in job_log and str(root / "logs" / "mae-pretrain.log") in job_log
    assert job_log.count("chain mae, job 100_0") == 2  # the job and its requeued run
    assert (root / "after" / "report.md").is_file() and "SUMMARY" in out
    assert set(State(chain_state_path(root, "mae")).data["done"]) == {"mae/pretrain"}


def test_chains_and_their_needs_follow_what_each_stage_reads(tmp_path):
    chains, final = split_chains(stages(PipelineConfig(root=str(tmp_path))))
    assert {c.name: c.needs for c in chains} == {"data": (), "untrained": ("data",), "pixels": (), "mae": ("data",),
                                                 "emae": ("data", "mae")}
    assert [s.name for s in final] == ["report"]
    assert [s.name for s in next(c for c in chains if c.name == "pixels").stages] == ["pixels/knn", "pixels/linprobe"]
    chains, final = split_chains(study_stages(StudyConfig(root=str(tmp_path), runs=("mae:1", "emae:2"), seeds=(0, 1))))
    assert [c.name for c in chains][:4] == ["untrained-seed0", "pixels-seed0", "mae-ep1-seed0", "emae-ep2-seed0"]
    assert len(chains) == 8 and all(c.needs == () for c in chains)
    assert [s.name for s in chains[2].stages] == ["mae-ep1-seed0/pretrain", "mae-ep1-seed0/knn",
                                                  "mae-ep1-seed0/linprobe"]


def test_a_multi_gpu_job_pretrains_through_torchrun_with_the_recipe_effective_batch(tmp_path):
    cfg = StudyConfig(root=str(tmp_path), executor="slurm", nodes=2, gpus_per_node=4)
    plan = study_stages(StudyConfig(root=str(tmp_path), runs=("mae:1",), seeds=(0,), preset="fmnist-small"))
    chain = next(c for c in split_chains(plan)[0] if c.name == "mae-ep1-seed0")
    job = ChainJob(chain, tmp_path, cfg)
    pretrain, knn = job.chain.stages[0], job.chain.stages[1]
    # fmnist-small has no effective_batch: its per-process batch splits over the 8 processes, the update is the same
    assert pretrain.argv[-4:] == ("--batch-size", "32", "--effective-batch", "256")
    assert knn == chain.stages[1]
    assert executor.launcher(pretrain, cfg, 1, "node-a") == (
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", "--nnodes=2", "--node_rank=1",
        "--master_addr=node-a", "--master_port=29500", "-m", "emae")
    assert executor.launcher(knn, cfg, 0, "node-a") == ()
    single = StudyConfig(root=str(tmp_path), executor="local", gpus_per_node=2)
    assert executor.launcher(pretrain, single, 0, "here")[3:5] == ("--nproc_per_node=2", "--standalone")
    imagenet = Stage("x/pretrain", ("pretrain", "--preset", "imagenet-vit-b", "--output-dir", str(tmp_path / "x")))
    assert executor.distributed(imagenet, 8) == imagenet  # effective_batch=4096 accumulates on any number of GPUs
    odd = Stage("y/pretrain", ("pretrain", "--preset", "fmnist-small", "--batch-size", "20"))
    with pytest.raises(EmaeError, match=r"stage y/pretrain: batch_size=20 does not split over 8 processes"):
        executor.distributed(odd, 8)


def test_status_reads_each_chain_state_and_job(tmp_path, capsys):
    root = tmp_path / "study"
    cfg = StudyConfig(root=str(root), runs=("mae:1", "emae:1"), seeds=(0,), executor="local")
    plan = study_stages(cfg)
    cfg.save(root)
    states = {"untrained-seed0": {"done": {"untrained-seed0/pretrain": 1.0, "untrained-seed0/knn": 2.0,
                                           "untrained-seed0/linprobe": 3.0}, "started": [], "failed": {}},
              "pixels-seed0": {"done": {"pixels-seed0/knn": 1.0}, "started": ["pixels-seed0/linprobe"],
                               "failed": {"pixels-seed0/linprobe": {"log": "L.log", "error": "error: broke"}}},
              "mae-ep1-seed0": {"done": {"mae-ep1-seed0/pretrain": 5.0}, "started": ["mae-ep1-seed0/knn"],
                                "failed": {}}}
    for name, data in states.items():
        path = chain_state_path(root, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    (root / "chains" / "jobs.json").write_text(json.dumps(
        {name: {"job_id": str(i), "executor": "slurm", "log": "x"} for i, name in enumerate(
            ["untrained-seed0", "pixels-seed0", "mae-ep1-seed0", "emae-ep1-seed0"])}))
    assert cli.main(["study", "--status", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "untrained-seed0          done (6 s) (job 0, slurm)",
        "pixels-seed0             failed at pixels-seed0/linprobe: error: broke (log: L.log) (job 1, slurm)",
        "mae-ep1-seed0            running mae-ep1-seed0/knn (1/3 stages done) (job 2, slurm)",
        "emae-ep1-seed0           pending (job 3, slurm)"]
    # an inline run's state (ROOT/pipeline.json) tells the same; a chain with no job and no state is not started
    inline = tmp_path / "inline"
    State(inline / "pipeline.json").save()
    data = State(inline / "pipeline.json")
    data.data["done"] = {"mae-ep1-seed0/pretrain": 4.0, "mae-ep1-seed0/knn": 1.0, "mae-ep1-seed0/linprobe": 1.0}
    data.save()
    assert status(plan, inline).splitlines()[2:4] == ["mae-ep1-seed0            done (6 s)",
                                                      "emae-ep1-seed0           not started"]
    with pytest.raises(EmaeError, match=rf"--status {tmp_path / 'none'}: .*config.json does not exist"):
        executor.print_status(study_stages, StudyConfig, tmp_path / "none")


@pytest.mark.parametrize("command", ["study", "pipeline"])
def test_bad_executor_settings_are_one_error_naming_the_value(command, tmp_path, capsys):
    for flags, message in [
        (["--executor", "kubernetes"], "executor 'kubernetes' is unknown: choose one of inline, local, slurm"),
        (["--partition", "gpu"], "partition='gpu' is an option of --executor slurm, but executor is 'inline'"),
        (["--executor", "local", "--account", "a"], "account='a' is an option of --executor slurm, but executor "
                                                    "is 'local'"),
        (["--executor", "local", "--nodes", "2"], "nodes=2 is an option of --executor slurm, but executor is 'local'"),
        (["--gpus-per-node", "8"], "gpus_per_node=8 is an option of --executor local or slurm, but executor is "
                                   "'inline'"),
        (["--slurm-folder", "x"], "slurm_folder='x' is an option of --executor local or slurm, but executor is "
                                 "'inline'"),
        (["--executor", "slurm", "--timeout-min", "0"], "timeout_min must be >= 1, got 0"),
        (["--executor", "slurm", "--nodes", "2"], "nodes=2: a multi-node job runs a DDP pre-training, which needs "
                                                  "gpus_per_node >= 1"),
    ]:
        assert cli.main([command, "--root", str(tmp_path / "r"), *flags]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"
    (tmp_path / "bad.yaml").write_text("executor: slurm\ncpus_per_task: -1\n")
    assert cli.main([command, "--config", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err.strip() == "error: cpus_per_task must be >= 0, got -1"
    assert ExecutorConfig().validate() == ExecutorConfig()
