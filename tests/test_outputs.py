"""The output folder of `opensora sample`: honest reruns, claims, stale parts, room (services/outputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from opensora_cli.models.registry import write_random_model_folder
from opensora_cli.services import outputs
from opensora_cli.utils.io import atomic_path, part_owner

from .helpers import opensora_executable, write_image

FAST = ["--steps", "2", "--num-frames", "5", "--crop-for-hw", "--height", "64", "--width", "96", "--fps", "8"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    write_random_model_folder(root, seed=3)
    return root


@pytest.fixture
def run(cli, tmp_path, model_dir):
    write_image(tmp_path / "a.png", 72, 100)
    (tmp_path / "p.txt").write_text("a red square\na blue square\n")
    (tmp_path / "c.txt").write_text("a.png\na.png\n")

    def sample(*extra, out="out"):
        return cli("sample", "-p", "p.txt", "-c", "c.txt", "--model", model_dir, "-o", tmp_path / out, "--json",
                   *FAST, *extra)

    return sample


def test_rerun_skips_only_the_same_request_and_names_what_differs(run, tmp_path):
    first = run()
    assert first.code == 0, first.err
    again = run()
    assert again.code == 0 and all(r["skipped"] for r in json.loads(again.out)["results"])

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    changed = run("--steps", "3", "--guidance-scale", "2")
    said = changed.out + changed.err  # refusals are listed like validate-inputs' problems
    assert changed.code == 1
    assert "2 output(s)" in said and "steps 2 -> 3" in said and "guidance_scale 7.5 -> 2.0" in said
    assert "--overwrite" in said and "no model was loaded" in said
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before  # nothing touched

    redo = run("--steps", "3", "--overwrite")
    assert redo.code == 0 and not any(r["skipped"] for r in json.loads(redo.out)["results"])
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["steps"] == 3 and sidecar["models"]["transformer"]["config_sha256"]


def test_a_changed_condition_file_is_a_changed_request(run, tmp_path):
    assert run().code == 0
    write_image(tmp_path / "a.png", 72, 100, color=(10, 200, 10))
    changed = run()
    assert changed.code == 1 and "condition file contents changed" in changed.out + changed.err


def test_an_output_without_its_sidecar_is_made_again(run, tmp_path):
    assert run().code == 0
    next((tmp_path / "out").glob("0001_*.json")).unlink()  # as a crash between video and sidecar once left it
    again = json.loads(run().out)["results"]
    assert [r["skipped"] for r in again] == [False, True]


def test_a_failed_write_leaves_neither_video_nor_sidecar(run, tmp_path):
    out = tmp_path / "out"
    (out / "0001_a-red-square_s0.json").mkdir(parents=True)  # the sidecar cannot be renamed into place
    result = run()
    assert result.code == 1
    assert "0001_a-red-square_s0.mp4: cannot write the output" in result.err and "Traceback" not in result.err
    assert not (out / "0001_a-red-square_s0.mp4").exists() and not list(out.glob(".*part*"))


@pytest.mark.parametrize("case", ["file", "parent-file", "full"])
def test_the_output_folder_is_checked_before_any_model_loads(run, tmp_path, monkeypatch, case):
    if case == "file":
        (tmp_path / "out").write_text("not a folder")
        expected = "'" + str(tmp_path / "out") + "' is a file"
        result = run()
    elif case == "parent-file":
        (tmp_path / "f").write_text("")
        expected = "is a file"
        result = run(out="f/out")
    else:
        usage = outputs.shutil._ntuple_diskusage(total=10**9, used=10**9 - 1000, free=1000)
        monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: usage)
        expected = "not enough free space"
        result = run()
    said = result.out + result.err
    assert result.code == 1 and expected in said and "no model was loaded" in said, said


def test_stale_parts_of_dead_writers_go_and_live_ones_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    with atomic_path(tmp_path / "v.mp4") as mine:
        mine.write_bytes(b"x")
        assert part_owner(mine)[1] == os.getpid()
        stale = mine.with_name(mine.name.replace(f".{os.getpid()}@", f".{dead_pid}@"))
        stale.write_bytes(b"half")
        unrelated = tmp_path / ".notes.txt"
        unrelated.write_text("keep")
        removed = outputs.remove_stale_parts(tmp_path)
        assert removed == [stale] and mine.exists() and unrelated.exists()


def test_claims_are_exclusive_and_released_when_the_owner_is_gone(tmp_path):
    video = tmp_path / "v.mp4"
    claim, owner = outputs.try_claim(video)
    assert claim is not None and owner is None
    second, owner = outputs.try_claim(video)
    assert second is None and owner.endswith(f":{os.getpid()}")
    claim.release()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    outputs.claim_path(video).write_text(json.dumps({"host": outputs._HOST, "pid": int(dead.stdout)}))
    taken, _ = outputs.try_claim(video)
    assert taken is not None
    taken.release()

    elsewhere = outputs.claim_path(video)
    elsewhere.write_text(json.dumps({"host": "another-machine", "pid": 1}))
    assert outputs.try_claim(video)[0] is None  # fresh heartbeat: assumed alive
    old = time.time() - outputs.CLAIM_STALE_SECONDS - 5
    os.utime(elsewhere, (old, old))
    assert outputs.try_claim(video)[0] is not None


@pytest.mark.slow
def test_two_runs_on_one_folder_make_each_video_once(tmp_path, model_dir):
    write_image(tmp_path / "a.png", 72, 100)
    lines = 4
    (tmp_path / "p.txt").write_text("".join(f"shape {i} moves\n" for i in range(lines)))
    (tmp_path / "c.txt").write_text("a.png\n" * lines)
    command = [opensora_executable(), "sample", "-p", "p.txt", "-c", "c.txt", "--model", str(model_dir), "-o",
               "out", "--json", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    made = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        made.append({r["line"] for r in json.loads(out)["results"] if not r["skipped"]})
    assert not made[0] & made[1]  # no video made twice
    assert made[0] | made[1] == set(range(1, lines + 1))
    assert len(list((tmp_path / "out").glob("*.mp4"))) == lines
    assert not list((tmp_path / "out").glob(".*"))  # no claims or parts left


@pytest.mark.slow
def test_ctrl_c_says_what_was_written_and_how_to_go_on(tmp_path):
    import signal

    write_image(tmp_path / "a.png", 72, 100)
    (tmp_path / "p.txt").write_text("a red square\na blue square\n")
    (tmp_path / "c.txt").write_text("a.png\na.png\n")
    proc = subprocess.Popen([opensora_executable(), "sample", "-p", "p.txt", "-c", "c.txt", "--steps", "1000",
                             "-o", "out"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the plan is made and the work has begun: every later phase answers Ctrl-C
        if "encoding prompts" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Interrupted: 0 of 2 video(s) written; rerun the same command to finish" in err, err
    assert "Traceback" not in err and not list((tmp_path / "out").glob("*.mp4"))
    assert not list((tmp_path / "out").glob(".*"))  # the claim was released
