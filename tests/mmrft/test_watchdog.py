"""The watchdog: a phase or a reward call past its limit stops the run naming it, with the stack of every
thread (every rank's, under torchrun) written to the run directory, in seconds."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmrft.errors import RewardTimeout, Stalled
from mmrft.watchdog import SIGNAL, Watchdog, time_limit

PLUGINS = str(Path(__file__).with_name("guard_plugins.py"))
ROOT = str(Path(__file__).resolve().parents[2])
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses on a shared 2-core machine


def _slow_generation():
    time.sleep(30)


def test_a_phase_past_its_limit_stops_naming_it_with_the_stacks(tmp_path):
    before = signal.getsignal(SIGNAL)
    t = time.monotonic()
    with pytest.raises(Stalled) as e:
        with Watchdog(tmp_path / "stacks", rank=0, grace_s=5) as wd:
            wd.phase("generation", "grpo step 3", 0.5, "watchdog.generation_s")
            _slow_generation()
    assert time.monotonic() - t < 5  # interrupted at the limit, not after the 30 s sleep
    path = tmp_path / "stacks" / "rank0.txt"
    assert str(e.value) == (
        f"the generation phase ran past watchdog.generation_s=0.5 s in grpo step 3; the stack of every thread "
        f"of rank 0 is in {path}"
    )
    stacks = path.read_text()
    assert "rank 0 pid" in stacks and "Thread MainThread" in stacks
    assert "in _slow_generation" in stacks and "time.sleep(30)" in stacks  # where the main thread was
    assert signal.getsignal(SIGNAL) == before  # handler restored


def test_a_call_limit_inside_a_phase_raises_its_own_error():
    with Watchdog(None, grace_s=5) as wd:
        wd.phase("reward", "grpo step 0", 60, "watchdog.reward_s")
        with pytest.raises(
            RewardTimeout, match=r"^reward 'slow' ran past rewards\[1\].timeout_s=0.3 s in grpo step 0;"
        ):
            with time_limit("reward 'slow'", 0.3, "rewards[1].timeout_s", RewardTimeout):
                time.sleep(30)


def test_nothing_fires_within_limits_and_nothing_is_left_behind(tmp_path):
    with Watchdog(tmp_path / "stacks", grace_s=5) as wd:
        for name in ("generation", "reward", "update"):
            wd.phase(name, "grpo step 0", 5, f"watchdog.{name}_s")
            with time_limit("a collective", 5, "watchdog.collective_s"):
                time.sleep(0.01)
        wd.phase(None)
        time.sleep(0.2)
    assert wd.fired is None and not (tmp_path / "stacks").exists()  # an unused stack file is removed
    with time_limit("no watchdog running", 0.01, "x"):  # without an active watchdog: no limit
        time.sleep(0.05)


def _script(tmp_path, body: str) -> list[str]:
    f = tmp_path / "script.py"
    f.write_text(textwrap.dedent(body))
    return [sys.executable, str(f), str(tmp_path / "stacks")]


def test_a_main_thread_that_cannot_be_interrupted_ends_the_process_after_the_grace(tmp_path):
    # SIGUSR2 blocked: as when the main thread waits inside C code (a collective) and never sees it
    cmd = _script(
        tmp_path,
        """
        import signal, sys, time
        from pathlib import Path
        from mmrft.watchdog import Watchdog
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        with Watchdog(Path(sys.argv[1]), rank=3, grace_s=0.5) as wd:
            wd.phase("update", "grpo step 7", 0.5, "watchdog.update_s")
            time.sleep(60)
    """,
    )
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert time.monotonic() - t < 30
    assert proc.returncode == 1
    path = tmp_path / "stacks" / "rank3.txt"
    assert proc.stderr.strip() == (
        f"watchdog: the update phase ran past watchdog.update_s=0.5 s in grpo step 7; the stack of every thread "
        f"of rank 3 is in {path} (the run did not stop within watchdog.grace_s)"
    )
    assert "time.sleep(60)" in path.read_text()


def test_sigterm_writes_every_thread_stack(tmp_path):
    """What torchrun sends the other ranks when one fails: their stacks land in the run dir too."""
    cmd = _script(
        tmp_path,
        """
        import sys, time
        from pathlib import Path
        from mmrft.watchdog import Watchdog
        def waiting_for_a_peer():
            print("ready", flush=True)  # inside the frame the stack must show (the signal may come at once)
            time.sleep(60)
        with Watchdog(Path(sys.argv[1]), rank=1):
            waiting_for_a_peer()
    """,
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    stacks = (tmp_path / "stacks" / "rank1.txt").read_text()
    assert "most recent call first" in stacks and "waiting_for_a_peer" in stacks


def _train_cmd(tmp_path, tiny_model_dir, shapes_dir, *extra) -> list[str]:
    return [
        sys.executable, "-m", "mmrft", "train", f"train.output_dir={tmp_path / 'run'}",
        f"model.path={tiny_model_dir}", f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        "data.eval_file=null", "model.tiny=null", "sft.steps=0", "grpo.steps=2", "rollout.group_size=4", "rollout.max_completion_length=8",
        "train.prompts_per_step=4", "train.micro_batch_size=8", "train.progress_bar=false",
        "train.tensorboard=false", "train.plot=false", *extra,
    ]  # fmt: skip


def test_a_hanging_reward_fails_the_step_naming_it(tmp_path, tiny_model_dir, shapes_dir):
    marker = tmp_path / "hang_began"
    cmd = _train_cmd(tmp_path, tiny_model_dir, shapes_dir,
                     f"rewards=[{{name: '{PLUGINS}:hang', timeout_s: 1, params: {{marker: '{marker}'}}}}]")  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=ROOT, env=ENV)
    ended = time.time()
    assert proc.returncode == 1, proc.stderr[-3000:]
    # the reward would sleep 600 s; the run ends about 1 s (its timeout) after the hang began
    assert ended - float(marker.read_text()) < 20
    path = tmp_path / "run" / "stacks" / "rank0.txt"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"reward error: reward 'hang' ran past rewards[0].timeout_s=1 s in grpo step 0; the stack of every "
        f"thread of rank 0 is in {path}"
    )
    assert "Traceback" not in proc.stderr
    stacks = path.read_text()
    assert "guard_plugins.py" in stacks and "in hang" in stacks and "in grpo_step" in stacks


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["watchdog", "backend"])
def test_a_hanging_collective_stops_every_rank_with_its_stack(tmp_path, tiny_model_dir, shapes_dir, limit):
    """torchrun, 2 processes on CPU (gloo): rank 1 hangs in its reward, rank 0 waits in the reward
    all-gather. Rank 0 stops, naming the collective: by the watchdog's limit (it cannot interrupt the C++
    wait, so it ends the process after the grace), or by the process group's own timeout; torchrun's SIGTERM
    then makes rank 1 write its stack too."""
    marker = tmp_path / "hang_began"
    limits = (
        ["watchdog.collective_s=2", "distributed.timeout_s=300"]
        if limit == "watchdog"
        else ["watchdog.collective_s=0", "distributed.timeout_s=3"]
    )
    cmd = _train_cmd(tmp_path, tiny_model_dir, shapes_dir,
                     f"rewards=[{{name: '{PLUGINS}:hang_on_rank1', timeout_s: 0, params: {{marker: '{marker}'}}}}]",
                     "watchdog.grace_s=1", *limits)  # fmt: skip
    cmd[1:4] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmrft.train"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=ROOT, env=ENV)
    ended = time.time()
    out = proc.stdout + proc.stderr
    # rank 1 would sleep 600 s: rank 0 gives up a few seconds after reaching the gather, then torchrun
    # stops rank 1 (SIGTERM); the whole job is gone well within a minute of the hang
    assert ended - float(marker.read_text()) < 60
    assert proc.returncode != 0
    stacks = tmp_path / "run" / "stacks"
    what = "a collective (the all-gather of rewards; another rank is stuck or gone)"
    if limit == "watchdog":
        expected = f"watchdog: {what} ran past watchdog.collective_s=2 s in grpo step 0;"
    else:
        expected = f"watchdog: {what} timed out after distributed.timeout_s=3 s in grpo step 0 ("
    assert expected in out, out[-4000:]
    assert f"the stack of every thread of rank 0 is in {stacks / 'rank0.txt'}" in out
    assert "in grpo_step" in (stacks / "rank0.txt").read_text()
    rank1 = (stacks / "rank1.txt").read_text()
    assert "hang_on_rank1" in rank1 and "most recent call first" in rank1
    assert not (tmp_path / "run" / "final").exists()
