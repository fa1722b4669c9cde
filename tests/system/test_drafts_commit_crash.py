"""A crash during commit: `artfs commit p/a/drafts/d` (no mount) killed with SIGKILL at
random moments, then run again. It must end with exactly one new version holding the
draft's content: never a partial version, never a duplicate."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import ARTFS_BIN, run_artfs, write_tree
from mounts import mounter  # noqa: F401  (a fixture)
from drafts_common import random_files, store_keys, version_files, write

pytestmark = pytest.mark.mount

ARTIFACT = "crash/a"
BASE = {**random_files(1, 40, prefix="base/"), "README.md": b"base\n"}


def intended(r: int) -> dict[str, bytes]:
    """What draft number `r` holds: the base with changes, additions, a rename and a deletion."""
    rnd = random.Random(100 + r)
    files = dict(BASE)
    files["README.md"] = f"draft {r}\n".encode()
    del files["base/f0003.bin"]
    files[f"moved/f0004-{r}.bin"] = files.pop("base/f0004.bin")
    files.update(random_files(200 + r, 60, max_size=9000, prefix=f"new{r}/"))
    for i in range(5):
        files[f"big/{r}-{i}.bin"] = rnd.randbytes(4 << 20)
    return files


def fill(draft: str, r: int) -> None:
    os.unlink(os.path.join(draft, "base/f0003.bin"))
    os.mkdir(os.path.join(draft, "moved"))
    os.rename(os.path.join(draft, "base/f0004.bin"), os.path.join(draft, f"moved/f0004-{r}.bin"))
    for name, data in intended(r).items():
        if name.startswith(("new", "big/")) or name == "README.md":
            path = os.path.join(draft, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write(path, data)


def registry_versions(store: str) -> list[int]:
    from artfs import Store
    from artfs.names import parse_artifact_name

    st = Store(store, os.path.join(os.path.dirname(store), "probe-cache"))
    return [r.number for r in st.registry.versions(parse_artifact_name(ARTIFACT))]


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def test_commit_killed_at_random_points_then_rerun_makes_exactly_one_version(mounter, store_url, tmp_path, procs):
    rounds = 1 if store_url.startswith("s3://") else 3  # every S3 CLI start costs ~1 s of boto3
    store, cache = store_url, mounter.new_dir("cache")
    src = write_tree(tmp_path / "base", BASE)
    run_artfs(["put", src, "--name", ARTIFACT, "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    # The drafts, all of v0, made through a mount that is then unmounted. Draft "cal" is
    # committed whole first, to time a commit: the kills then land anywhere in one.
    m = mounter(store, cache=cache, debug=False)
    for name, r in [("cal", 99)] + [(f"d{r}", r) for r in range(rounds)]:
        d = m.path(ARTIFACT, "drafts", name)
        os.mkdir(d)
        fill(d, r)
    m.umount()
    env = {**os.environ, "ARTFS_STORE": store, "ARTFS_CACHE": cache}
    started = time.monotonic()
    subprocess.run([ARTFS_BIN, "commit", f"{ARTIFACT}/drafts/cal"], env=env, check=True, capture_output=True)
    duration = time.monotonic() - started

    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    kills = 0
    story: list[str] = [f"seed {seed}, a whole commit takes {duration:.2f}s"]  # shown on failure
    for r in range(rounds):
        want = intended(r)
        known = list(range(r + 2))  # v0, v1 (cal) and the versions of earlier rounds
        new = f"{ARTIFACT}:v{len(known)}"
        done = None
        for attempt in range(8):
            p = subprocess.Popen(
                [ARTFS_BIN, "commit", f"{ARTIFACT}/drafts/d{r}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            # The first attempt is killed early enough that it never finishes (a commit can be
            # faster than the timed one: then no round would be killed at all); later ones
            # land anywhere, the end of a commit included.
            delay = rnd.uniform(0.1, 0.6 if attempt == 0 else 1.05) * duration
            try:
                out, err = p.communicate(timeout=delay)
                done = (p.returncode, out, err)
                story.append(f"round {r}: finished within {delay:.2f}s: {out.strip()} {err.strip()}")
                break
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.communicate(timeout=10)
                kills += 1
            now = registry_versions(store)
            story.append(f"round {r}: killed after {delay:.2f}s, versions {now}")
            assert now[: len(known)] == known and len(now) <= len(known) + 1, story
            if len(now) == len(known) + 1:  # a new version after a kill: it must be complete
                assert version_files(store, f"{ARTIFACT}:v{now[-1]}", tmp_path) == want, story
        if done is None or done[0] != 0:
            res = run_artfs(["commit", f"{ARTIFACT}/drafts/d{r}"], store=store, cache=cache, timeout=120)
            if res.returncode != 0:
                # Killed after the version was made, while the draft was being removed.
                res.fails("no draft")
                out = new
            else:
                out = res.out
        else:
            assert "Traceback" not in done[2], done[2]
            out = done[1].strip()
        assert out == new, story
        assert registry_versions(store) == known + [len(known)], f"exactly one new version; {story}"
        assert version_files(store, new, tmp_path) == want, story
    # A kill while the committed draft was being removed leaves nothing behind for long.
    assert [n for n in os.listdir(os.path.join(cache, "drafts")) if n not in (".lock", ".reserve", "crash")] == []
    # Only the notes of what each draft became (for a rerun after its draft is gone) stay.
    assert [n for n in os.listdir(os.path.join(cache, "drafts", "crash", "a")) if not n.startswith(".committed-")] == []
    listing = run_artfs(["ls", ARTIFACT], store=store, cache=cache).ok().stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == [f"v{n}" for n in range(rounds + 2)]
    assert kills >= 1, story
    if not store.startswith("s3://"):
        # Nothing holds the base for drafts that are gone (on S3 a kill can still land in
        # the one request between the draft's removal and the hold's: not asserted there).
        assert [k for k in store_keys(store) if k.startswith("holds/")] == [], story


def test_daemon_killed_during_a_mounted_commit_then_commit_again(mounter, tmp_path, procs):
    store, cache, mp = str(tmp_path / "store"), mounter.new_dir("cache"), mounter.new_dir("mnt")
    src = write_tree(tmp_path / "base", BASE)
    run_artfs(["put", src, "--name", ARTIFACT, "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    m = mounter(store, cache=cache, mp=mp, debug=False)
    d = m.path(ARTIFACT, "drafts", "d0")
    os.mkdir(d)
    fill(d, 0)
    env = {**os.environ, "ARTFS_STORE": store, "ARTFS_CACHE": cache}
    p = subprocess.Popen([ARTFS_BIN, "commit", d], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    time.sleep(random.uniform(0.3, 0.8))  # the CLI starts in ~0.3 s; the daemon's commit takes ~0.5 s
    os.kill(m.pid, signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert "Traceback" not in err, err
    if p.returncode != 0:  # one line that says what happened and what to do
        assert len(err.strip().splitlines()) == 1 and "mount it again" in err, err  # not "a plain folder"
    now = registry_versions(store)
    assert now in ([0], [0, 1]), now
    m = mounter(store, cache=cache, mp=mp, debug=False)
    if os.path.exists(m.path(ARTIFACT, "drafts", "d0")):
        assert commit_again(m, ARTIFACT) == f"{ARTIFACT}:v1"
    assert registry_versions(store) == [0, 1]
    assert version_files(store, f"{ARTIFACT}:v1", tmp_path) == intended(0)
    assert os.listdir(m.path(ARTIFACT, "drafts")) == []


def commit_again(m, artifact: str) -> str:
    return run_artfs(["commit", m.path(artifact, "drafts", "d0")], store=m.store, cache=m.cache).ok().out


def test_commit_on_a_mount_whose_daemon_died_says_so(mounter, tmp_path):
    store, cache = str(tmp_path / "store"), mounter.new_dir("cache")
    m = mounter(store, cache=cache, debug=False)
    d = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(d)
    write(os.path.join(d, "f.txt"), b"f")
    os.stat(d)  # attributes cached by the kernel: the path still looks like a folder
    os.kill(m.pid, signal.SIGKILL)
    run_artfs(["commit", d, "--type", "dataset"], store=store, cache=cache).fails("mount it again")
