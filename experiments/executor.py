"""Where the stages of ``emae study`` and ``emae pipeline`` run: here (``--executor inline``, ``--jobs`` stages at a
time, :func:`experiments.runner.run_plan`), or as submitit jobs, one per chain (``--executor local``: processes of
this machine; ``--executor slurm``: SLURM jobs), each running its chain's stages likewise.

A plan's stages are named ``CHAIN/STEP``; a **chain** is one backbone's stages in plan order (a pre-training and
the evaluations of its checkpoint, a baseline's evaluations, the ``data/*`` stages), and a stage without a chain
(``report``) runs here once every chain has ended, over what finished. A chain **needs** another when one of its
stages reads what the other's stages write (:func:`experiments.runner.reads`: an ``--out``, ``--output-dir`` or
``--features-dir`` folder, or the records a ``budget_from`` reads: EMAE at MAE's time needs MAE's chain, a
detection needs ``data``). Chains whose needs have finished are submitted together (``executor.batch()``: one
SLURM job array); on SLURM the others wait in the queue with ``--dependency=afterok:...``, on this machine they
are submitted when their needs finish.

A job (:class:`ChainJob`) runs its chain through :func:`experiments.runner.run_plan` with its own state file,
``ROOT/chains/CHAIN.json``, so jobs never write one file; ``ROOT/chains/jobs.json`` holds the job ids. A job that
is pre-empted or reaches its time limit gets submitit's signal, checkpoints (:meth:`ChainJob.checkpoint`) and is
requeued; the requeued job continues the started stage as a re-run does (a pre-training from its checkpoint). A
failed chain ends only itself; the run reports it with its log, runs the report over the rest, and ends with an
error naming the failed chains. A re-run skips the chains that finished. ``--status ROOT`` prints each chain's
state from these files.

With ``--gpus-per-node G`` and ``--nodes N``, a pre-training runs as DDP on the job's ``N x G`` GPUs through
``torchrun`` (one submitit task per node; the first node's host is the rendezvous); evaluations run on the first
node alone. The pre-training keeps its single-process recipe's effective batch: a recipe with an
``effective_batch`` accumulates to it on any number of GPUs (:func:`emae.engine.accumulation_steps`), and one
without gets ``--batch-size B/(N x G) --effective-batch B``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, ClassVar

from emae.errors import EmaeError
from emae.settings import CommandConfig, read_json
from experiments.runner import (State, Stage, _context, chain_of, check_stages, log_path, outputs, pretrain_config,
                                print_summary, reads, run_plan, run_stage, run_stages, stage_times)

EXECUTORS = ("inline", "local", "slurm")
SLURM_ONLY = ("partition", "account", "nodes", "cpus_per_task")  # options of the SLURM executor alone
JOB_ONLY = ("gpus_per_node", "timeout_min", "slurm_folder")  # options of a job (local or slurm), not of inline
MASTER_PORT = 29500  # the rendezvous port of a multi-node pre-training, on the first node
WAIT_S = 2.0  # how often the submitting process looks at its running jobs
JOBS_FILE = "jobs.json"

EXECUTOR_HELP = {
    "executor": f"where the stages run: {' | '.join(EXECUTORS)} (inline: in this process; local: one process per "
                f"chain; slurm: one SLURM job per chain)",
    "jobs": "stages run at a time, here or in a chain's job, each on cores / jobs threads once what it reads is "
            "written (a pre-training runs alone, on every core)",
    "partition": "SLURM partition", "account": "SLURM account", "nodes": "SLURM nodes per job",
    "cpus_per_task": "SLURM CPUs per task (0: the cluster's default)",
    "gpus_per_node": "GPUs per job's node; above 1 a pre-training runs as DDP through torchrun",
    "timeout_min": "a job's time limit in minutes (a job that reaches it is requeued and continues)",
    "slurm_folder": "folder of submitit's job files and logs ('': ROOT/slurm)",
}


@dataclass(frozen=True)
class ExecutorConfig(CommandConfig):
    """The executor's settings, the fields every config of a plan's command includes (``StudyConfig``,
    ``PipelineConfig``); ``root`` is the subclass's."""

    executor: str = "inline"
    jobs: int = 2
    partition: str = ""
    account: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    timeout_min: int = 4320
    slurm_folder: str = ""

    help_for: ClassVar[dict[str, str]] = EXECUTOR_HELP

    def validate(self):
        if self.executor not in EXECUTORS:
            raise EmaeError(f"executor {self.executor!r} is unknown: choose one of {', '.join(EXECUTORS)}")
        defaults = {f.name: f.default for f in fields(ExecutorConfig)}
        for names, allowed, where in ((SLURM_ONLY, ("slurm",), "--executor slurm"),
                                      (JOB_ONLY, ("local", "slurm"), "--executor local or slurm")):
            for name in names:
                if getattr(self, name) != defaults[name] and self.executor not in allowed:
                    raise EmaeError(f"{name}={getattr(self, name)!r} is an option of {where}, but executor is "
                                    f"{self.executor!r}")
        for name, least in (("jobs", 1), ("nodes", 1), ("gpus_per_node", 0), ("cpus_per_task", 0), ("timeout_min", 1)):
            if getattr(self, name) < least:
                raise EmaeError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.nodes > 1 and self.gpus_per_node < 1:
            raise EmaeError(f"nodes={self.nodes}: a multi-node job runs a DDP pre-training, which needs "
                            f"gpus_per_node >= 1")
        return self

    @property
    def world_size(self) -> int:
        """The processes of a job's pre-training: one per GPU of every node (1 without GPUs)."""
        return self.nodes * max(self.gpus_per_node, 1)


@dataclass(frozen=True)
class Chain:
    name: str
    stages: tuple[Stage, ...]
    needs: tuple[str, ...]  # the chains whose outputs its stages read


def split_chains(plan: list[Stage]) -> tuple[list[Chain], list[Stage]]:
    """The chains of ``plan`` in the order they appear (each chain's stages in plan order, its needs found from
    the paths its stages read), and the stages of no chain, which run after them."""
    names = list(dict.fromkeys(chain_of(s) for s in plan if chain_of(s)))
    members = {name: tuple(s for s in plan if chain_of(s) == name) for name in names}
    written = {name: [out for s in members[name] for out in outputs(s)] for name in names}
    chains = [Chain(name, members[name], tuple(other for other in names if other != name and any(
        reads(s, out) for s in members[name] for out in written[other]))) for name in names]
    return chains, [s for s in plan if not chain_of(s)]


def chain_state_path(root: Path, chain: str) -> Path:
    return root / "chains" / f"{chain}.json"


def chain_done(chain: Chain, state: State) -> bool:
    """Whether every stage of ``chain`` that can run here finished."""
    return all(state.done(s.name) for s in chain.stages if s.available)


def launcher(stage: Stage, cfg: ExecutorConfig, node: int, master: str) -> tuple[str, ...]:
    """What a job runs ``stage`` through: ``torchrun`` on the job's GPUs for a pre-training of a multi-GPU job
    (``node``: this node's rank, ``master``: the first node's host), the fork server's child otherwise."""
    if stage.argv[:1] != ("pretrain",) or cfg.world_size == 1:
        return ()
    nodes = (f"--nnodes={cfg.nodes}", f"--node_rank={node}", f"--master_addr={master}",
             f"--master_port={MASTER_PORT}") if cfg.nodes > 1 else ("--standalone",)
    return (sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(cfg.gpus_per_node, 1)}", *nodes,
            "-m", "emae")


def distributed(stage: Stage, world: int) -> Stage:
    """A pre-training stage run on ``world`` processes with its single-process effective batch: unchanged where
    its recipe sets ``effective_batch``, else with ``--batch-size B/world --effective-batch B``."""
    if stage.argv[:1] != ("pretrain",) or world == 1:
        return stage
    cfg = pretrain_config(stage)
    if cfg.effective_batch:
        return stage
    if cfg.batch_size % world:
        raise EmaeError(f"stage {stage.name}: batch_size={cfg.batch_size} does not split over {world} processes "
                        f"(nodes x gpus_per_node); give --effective-batch in --pretrain-args")
    return replace(stage, argv=(*stage.argv, "--batch-size", str(cfg.batch_size // world), "--effective-batch",
                                str(cfg.batch_size)))


class ChainJob:
    """One chain as a submitit job: ``job()`` runs its stages with ``ROOT/chains/CHAIN.json`` as their state
    (on the first node; the other nodes of a multi-node job join its pre-trainings' DDP and run nothing else) and
    returns the stages' times; :meth:`checkpoint` is submitit's pre-emption and time-limit hook."""

    def __init__(self, chain: Chain, root: Path, cfg: ExecutorConfig):
        self.chain = replace(chain, stages=tuple(distributed(s, cfg.world_size) for s in chain.stages))
        self.root, self.cfg = root, cfg

    def __call__(self) -> dict[str, float]:
        import submitit

        env = submitit.JobEnvironment()
        logs = ", ".join(str(log_path(self.root, s)) for s in self.chain.stages)
        print(f"chain {self.chain.name}, job {env.job_id} on {env.hostname} (node {env.node}): this job's log "
              f"{env.paths.stdout}; the stages' logs {logs}", flush=True)
        state = State(chain_state_path(self.root, self.chain.name))
        context = _context()
        if env.node == 0:
            run_plan(context, list(self.chain.stages), self.root, state,
                     lambda stage: launcher(stage, self.cfg, 0, env.hostnames[0]), self.cfg.jobs)
            return state.data["done"]
        # another node of a multi-node job joins the DDP of every pre-training the first node has not finished (its
        # state says which, and whether it continues one), writing its output beside the stage's log and no state
        for stage in self.chain.stages:
            if stage.argv[:1] == ("pretrain",) and not state.done(stage.name):
                log = log_path(self.root, stage).with_suffix(f".node{env.node}.log")
                code = run_stage(context, stage, log, stage.resumes(stage.name in state.data["started"]),
                                 f"{stage.name} (node {env.node})",
                                 launcher(stage, self.cfg, env.node, env.hostnames[0]))
                if code != 0:
                    raise EmaeError(f"stage {stage.name} failed on node {env.node} (exit {code}); log: {log}")
        return {}

    def checkpoint(self):
        """The job to requeue after a pre-emption or a time limit: this one; the started stage continues from
        what it saved, as in any re-run."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def make_executor(cfg: ExecutorConfig, root: Path):
    """The submitit executor of ``cfg``, its job files and logs in ``cfg.slurm_folder`` (default ROOT/slurm)."""
    import submitit

    folder = Path(cfg.slurm_folder or root / "slurm") / "%j"
    if cfg.executor == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.timeout_min, gpus_per_node=cfg.gpus_per_node)
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    params = dict(job_name=f"emae-{root.name}", time=cfg.timeout_min, nodes=cfg.nodes, ntasks_per_node=1,
                  partition=cfg.partition or None, account=cfg.account or None,
                  cpus_per_task=cfg.cpus_per_task or None, gpus_per_node=cfg.gpus_per_node or None)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def read_jobs(root: Path) -> dict[str, dict]:
    path = root / "chains" / JOBS_FILE
    return read_json(path) if path.is_file() else {}


def _save_jobs(root: Path, jobs: dict[str, dict]) -> None:
    path = root / "chains" / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jobs, indent=2) + "\n")
    os.replace(tmp, path)


def _failure(chain: Chain, root: Path, job) -> str:
    """Why ``chain``'s job ended without finishing: the failed stage with its error and log, from its state, or
    the job's own log where no stage failed (the job was cancelled, or ended before a stage)."""
    state = State(chain_state_path(root, chain.name))
    for name, failed in state.data["failed"].items():
        return f"chain {chain.name} failed at {name}: {failed['error']} (log: {failed['log']})"
    return f"chain {chain.name}: job {job.job_id} ended as {job.state} (log: {job.paths.stdout})"


def _submit_ready(executor, cfg: ExecutorConfig, root: Path, waiting: list[Chain], finished: set[str],
                  running: dict, jobs_file: dict[str, dict]) -> int:
    """Submit the chains of ``waiting`` whose needs finished (on SLURM: or were submitted, which they wait for with
    ``afterok``), those with the same needs together as one batch; moves them to ``running``, records their
    jobs in ``jobs.json`` and returns how many were submitted."""
    ready = [c for c in waiting if all(n in finished or (cfg.executor == "slurm" and n in running) for n in c.needs)]
    waits_for = {c.name: tuple(n for n in c.needs if n in running) for c in ready}  # the needs still running
    for needs in dict.fromkeys(waits_for.values()):
        group = [c for c in ready if waits_for[c.name] == needs]
        if needs:
            executor.update_parameters(dependency="afterok:" + ":".join(running[n].job_id for n in needs),
                                       additional_parameters={"kill-on-invalid-dep": "yes"})
        with executor.batch():
            submitted = [executor.submit(ChainJob(c, root, cfg)) for c in group]
        if needs:
            executor.update_parameters(dependency=None, additional_parameters=None)
        for chain, job in zip(group, submitted):
            waiting.remove(chain)
            running[chain.name] = job
            jobs_file[chain.name] = {"job_id": job.job_id, "executor": cfg.executor, "log": str(job.paths.stdout)}
            print(f"chain {chain.name:<22} submitted: job {job.job_id}, log {job.paths.stdout}", flush=True)
        _save_jobs(root, jobs_file)
    return len(ready)


def run_jobs(plan: list[Stage], root: Path, cfg: ExecutorConfig, summary: Callable[[Path], str] | None = None) -> int:
    """Run ``plan`` as one submitit job per chain (:class:`ChainJob`), then its stages of no chain here over what
    finished, then print ``summary(root)`` and the stage times; raises EmaeError naming the failed chains."""
    import submitit

    check_stages(plan, root)
    cfg.save(root)
    started = time.perf_counter()
    chains, final = split_chains(plan)
    states = {c.name: State(chain_state_path(root, c.name)) for c in chains}
    executor = make_executor(cfg, root)
    jobs_file = read_jobs(root)
    finished = {c.name for c in chains if chain_done(c, states[c.name])}
    for name in finished:
        print(f"chain {name:<22} done earlier", flush=True)
    failed: dict[str, str] = {}
    running: dict[str, object] = {}  # chain -> its submitit job
    waiting = [c for c in chains if c.name not in finished]
    while waiting or running:
        for chain in [c for c in waiting if set(c.needs) & set(failed)]:
            waiting.remove(chain)
            needs = ", ".join(sorted(set(chain.needs) & set(failed)))
            failed[chain.name] = f"chain {chain.name} not run: it needs {needs}, which failed"
        while _submit_ready(executor, cfg, root, waiting, finished, running, jobs_file):
            pass
        ended = [name for name, job in running.items() if job.done()]
        if not ended:
            time.sleep(WAIT_S)
        for name in ended:
            job = running.pop(name)
            chain = next(c for c in chains if c.name == name)
            try:
                job.result()
            except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
                failed[name] = _failure(chain, root, job)
                print(failed[name], flush=True)
                continue
            finished.add(name)
            print(f"chain {name:<22} done (job {job.job_id})", flush=True)
    (root / "chains" / "final.json").unlink(missing_ok=True)  # the report is rebuilt on every run, over the chains
    final_state = State(root / "chains" / "final.json")        # finished by then
    if final:
        run_plan(_context(), final, root, final_state, jobs=cfg.jobs)
    states = [State(chain_state_path(root, c.name)) for c in chains] + [final_state]
    print_summary(root, summary, stage_times(plan, states), time.perf_counter() - started)
    if failed:
        raise EmaeError("; ".join(failed[c.name] for c in chains if c.name in failed))
    return 0


def status(plan: list[Stage], root: Path) -> str:
    """Each chain of ``plan`` and its state, one line each: done, running (its last started stage), failed (with
    its error and log), pending (a job was submitted and started no stage) or not started; read from the chains'
    state files and ``ROOT/chains/jobs.json``, or for an inline run from ``ROOT/pipeline.json``."""
    chains, final = split_chains(plan)
    jobs = read_jobs(root)
    inline = State(root / "pipeline.json") if (root / "pipeline.json").is_file() else None
    lines = []
    for chain in chains:
        path = chain_state_path(root, chain.name)
        state = State(path) if path.is_file() else inline
        job = f" (job {jobs[chain.name]['job_id']}, {jobs[chain.name]['executor']})" if chain.name in jobs else ""
        names = [s.name for s in chain.stages]
        failed = [n for n in names if state and n in state.data["failed"]]
        started = [n for n in names if state and n in state.data["started"] and not state.done(n)]
        if state and chain_done(chain, state):
            text = f"done ({sum(state.data['done'][n] for n in names if state.done(n)):.0f} s)"
        elif failed:
            text = (f"failed at {failed[0]}: {state.data['failed'][failed[0]]['error']} "
                    f"(log: {state.data['failed'][failed[0]]['log']})")
        elif started:
            text = f"running {started[0]} ({sum(state.done(n) for n in names)}/{len(names)} stages done)"
        elif job:
            text = "pending"
        else:
            text = "not started"
        lines.append(f"{chain.name:<24} {text}{job}")
    return "\n".join(lines)


def add_status_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", metavar="ROOT", default=None,
                        help="print the state of each chain of the run in ROOT (from ROOT/config.json) and exit")


def print_status(plan_of: Callable[[ExecutorConfig], list[Stage]], config_cls, root: Path) -> int:
    """``--status ROOT``: print :func:`status` of the plan ``plan_of`` makes of the config in ``ROOT/config.json``."""
    path = root / "config.json"
    if not path.is_file():
        raise EmaeError(f"--status {root}: {path} does not exist, so no run was started there")
    cfg = config_cls.from_dict(read_json(path), source=str(path))
    print(status(plan_of(replace(cfg, root=str(root))), root))
    return 0


def run(plan: list[Stage], cfg: ExecutorConfig, summary: Callable[[Path], str] | None = None) -> int:
    """Run ``plan`` where ``cfg.executor`` says: here (:func:`experiments.runner.run_stages`) or as jobs
    (:func:`run_jobs`)."""
    if cfg.executor == "inline":
        return run_stages(plan, Path(cfg.root), cfg, cfg.jobs, summary)
    return run_jobs(plan, Path(cfg.root), cfg, summary)
