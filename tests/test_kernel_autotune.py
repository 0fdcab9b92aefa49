"""Dispatch by measurement (fastscarlet.kernels.autotune): the decision logic with forced timings,
the verification step that rejects wrong candidates before timing, the on-disk cache (per device
and version, atomic, corrupt files rebuilt)."""

from __future__ import annotations

import json

import pytest

from fastscarlet.kernels import autotune
from fastscarlet.kernels.autotune import REFERENCE, Autotuner, BlockSignature, choose

GPU = "NVIDIA H200"


def _sig(device: str = GPU, training: bool = True, **kw) -> BlockSignature:
    base = dict(shapes=((256, 40, 28, 28),), dtype="bfloat16", stride=1, kernel=7, se=True,
                residual=True, training=training, device=device)  # fmt: skip
    base.update(kw)
    return BlockSignature(**base)


class ForcedTimer:
    """Returns the time given for each candidate (the candidates return their own name), and
    counts the calls."""

    def __init__(self, times: dict[str, float]) -> None:
        self.times = times
        self.calls: list[str] = []

    def __call__(self, fn) -> float:
        name = fn()
        self.calls.append(name)
        return self.times[name]


def _cands(*names: str) -> dict:
    return {n: (lambda n=n: n) for n in names}


@pytest.mark.parametrize(
    ("t_kernel", "expected"),
    [(0.90, "triton"), (0.96, "triton"), (0.98, REFERENCE), (1.00, REFERENCE), (1.20, REFERENCE)],
)
def test_choose_takes_a_kernel_only_beyond_the_margin(t_kernel: float, expected: str) -> None:
    """Reference 1.0 s: a kernel at 0.96 s (1.042x) wins, at 0.98 s (1.020x) it does not."""
    choice, why = choose({REFERENCE: 1.0, "triton": t_kernel})
    assert choice == expected, why


def test_choose_picks_the_fastest_kernel_and_needs_the_reference() -> None:
    assert choose({REFERENCE: 1.0, "triton": 0.8, "partial": 0.5})[0] == "partial"
    assert choose({REFERENCE: 1.0, "triton": 0.5, "partial": 0.99})[0] == "triton"
    assert choose({REFERENCE: 1.0})[0] == REFERENCE
    with pytest.raises(ValueError, match="reference"):
        choose({"triton": 1.0})


def test_signature_key_separates_every_field() -> None:
    base = _sig()
    variants = [
        _sig(shapes=((128, 40, 28, 28),)), _sig(dtype="float16"), _sig(stride=2), _sig(kernel=5),
        _sig(se=False), _sig(residual=False), _sig(training=False), _sig(device="NVIDIA H100"),
        _sig(grad=True), _sig(act="hswish"),
    ]  # fmt: skip
    keys = {v.key() for v in variants}
    assert base.key() not in keys and len(keys) == len(variants)


@pytest.mark.parametrize(("t_kernel", "expected"), [(0.9, "triton"), (0.99, REFERENCE)])
def test_decide_times_each_candidate_once_and_caches(tmp_path, t_kernel, expected) -> None:
    timer = ForcedTimer({REFERENCE: 1.0, "triton": t_kernel})
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0", timer=timer)
    d = tuner.decide(_sig(), _cands(REFERENCE, "triton"))
    assert (d.choice, d.cached) == (expected, False)
    assert sorted(timer.calls) == [REFERENCE, "triton"]
    assert d.times == {REFERENCE: 1.0, "triton": t_kernel}
    # a hit, in this tuner and in a new one reading the file: no timing
    assert tuner.decide(_sig(), _cands(REFERENCE, "triton")).cached
    fresh_timer = ForcedTimer({REFERENCE: 1.0, "triton": 0.1})
    again = Autotuner(GPU, directory=tmp_path, version="1.0", timer=fresh_timer)
    d2 = again.decide(_sig(), _cands(REFERENCE, "triton"))
    assert (d2.choice, d2.cached, fresh_timer.calls) == (expected, True, [])
    # another signature is measured
    again.decide(_sig(training=False), _cands(REFERENCE, "triton"))
    assert sorted(fresh_timer.calls) == [REFERENCE, "triton"]


def test_cache_is_per_device_and_version(tmp_path) -> None:
    def run(device: str, version: str, t_kernel: float) -> tuple[str, bool]:
        timer = ForcedTimer({REFERENCE: 1.0, "triton": t_kernel})
        d = Autotuner(device, directory=tmp_path, version=version, timer=timer).decide(
            _sig(device=device), _cands(REFERENCE, "triton")
        )
        return d.choice, d.cached

    assert run(GPU, "1.0", 0.5) == ("triton", False)
    assert run("NVIDIA H100 80GB HBM3", "1.0", 2.0) == (REFERENCE, False)  # measured again
    assert run(GPU, "1.1", 2.0) == (REFERENCE, False)  # a new version measures again
    assert run(GPU, "1.0", 2.0) == ("triton", True)  # the first entry is intact
    assert len(list(tmp_path.glob("dispatch-*.json"))) == 3
    assert not list(tmp_path.glob("*.tmp"))  # the atomic writes left no temporary file
    with pytest.raises(ValueError, match="device"):
        Autotuner(GPU, directory=tmp_path).decide(_sig(device="cpu"), _cands(REFERENCE))


@pytest.mark.parametrize(
    "content", ["{not json", '["a list"]', '{"format": 999, "entries": {}}', ""]
)
def test_corrupt_cache_warns_and_is_rebuilt(tmp_path, content: str) -> None:
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0",
                      timer=ForcedTimer({REFERENCE: 1.0, "triton": 0.5}))  # fmt: skip
    tuner.path.write_text(content)
    with pytest.warns(UserWarning, match="unreadable dispatch cache.*rebuilt"):
        d = tuner.decide(_sig(), _cands(REFERENCE, "triton"))
    assert (d.choice, d.cached) == ("triton", False)
    data = json.loads(tuner.path.read_text())
    assert data["entries"][_sig().key()]["choice"] == "triton"


def test_cached_choice_that_is_no_longer_a_candidate_is_measured_again(tmp_path) -> None:
    timer = ForcedTimer({REFERENCE: 1.0, "triton": 0.5, "partial": 0.4})
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0", timer=timer)
    assert tuner.decide(_sig(), _cands(REFERENCE, "triton", "partial")).choice == "partial"
    d = tuner.decide(_sig(), _cands(REFERENCE, "triton"))
    assert (d.choice, d.cached) == ("triton", False)


def test_verify_rejects_candidates_before_timing_and_the_cache_keeps_why(tmp_path) -> None:
    """A candidate the check rejects is never timed nor chosen, even if it would be fastest; the
    rejection is cached with its reason, so a new tuner does not run the check again."""
    timer = ForcedTimer({REFERENCE: 1.0, "triton": 0.1, "partial": 0.8})
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0", timer=timer)
    asked = []

    def verify(names):
        asked.append(sorted(names))
        return {"triton": "output: max error 3 > 0.05 x max|reference| 1"}

    d = tuner.decide(_sig(), _cands(REFERENCE, "triton", "partial"), verify)
    assert asked == [["partial", "triton"]]  # the reference is never "verified" against itself
    assert sorted(timer.calls) == ["partial", REFERENCE]
    assert d.choice == "partial" and "triton" not in d.times
    assert d.rejected == {"triton": "output: max error 3 > 0.05 x max|reference| 1"}
    assert "rejected: triton" in d.reason
    again = Autotuner(GPU, directory=tmp_path, version="1.0", timer=timer)
    hit = again.decide(_sig(), _cands(REFERENCE, "triton", "partial"), verify)
    assert hit.cached and hit.choice == "partial" and hit.rejected == d.rejected
    assert asked == [["partial", "triton"]] and again.cached(_sig(training=False)) is None


def test_all_candidates_rejected_leaves_the_reference(tmp_path) -> None:
    timer = ForcedTimer({REFERENCE: 1.0, "triton": 0.1})
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0", timer=timer)
    d = tuner.decide(_sig(), _cands(REFERENCE, "triton"), lambda names: dict.fromkeys(names, "x"))
    assert d.choice == REFERENCE and timer.calls == [REFERENCE]


def test_time_median_warms_up_then_takes_the_median() -> None:
    calls = []
    clock = iter([0.0, 1.0, 1.0, 1.5, 2.0, 5.0])  # timed calls of 1.0, 0.5, 3.0 s

    def fake_counter():
        return next(clock)

    import unittest.mock

    with unittest.mock.patch.object(autotune.time, "perf_counter", fake_counter):
        t = autotune.time_median(lambda: calls.append(1), warmup=2, reps=3)
    assert len(calls) == 5 and t == 1.0


def test_two_processes_writing_one_cache_merge_their_entries(tmp_path) -> None:
    """Each tuner loads the file once; a save re-reads it under the lock and merges, so a second
    process (here a second tuner) does not overwrite the first one's measurements."""
    a = Autotuner(
        GPU, directory=tmp_path, version="1.0", timer=ForcedTimer({REFERENCE: 1.0, "triton": 0.5})
    )
    b = Autotuner(
        GPU, directory=tmp_path, version="1.0", timer=ForcedTimer({REFERENCE: 1.0, "triton": 2.0})
    )
    a.decide(_sig(), _cands(REFERENCE, "triton"))
    b.cached(_sig(kernel=3))  # b loaded the file before a's next write
    a.decide(_sig(training=False), _cands(REFERENCE, "triton"))
    b.decide(_sig(kernel=3), _cands(REFERENCE, "triton"))
    entries = json.loads(a.path.read_text())["entries"]
    assert set(entries) == {_sig().key(), _sig(training=False).key(), _sig(kernel=3).key()}


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch) -> None:
    """Atomic write: the JSON goes to a temporary file that replaces the cache only when whole."""
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0",
                      timer=ForcedTimer({REFERENCE: 1.0, "triton": 0.5}))  # fmt: skip
    tuner.decide(_sig(), _cands(REFERENCE, "triton"))
    before = tuner.path.read_text()

    def half_dump(obj, f, **kw):
        f.write('{"format": 1, "entr')
        raise OSError("disk full")

    monkeypatch.setattr(autotune.json, "dump", half_dump)
    with pytest.raises(OSError, match="disk full"):
        tuner.decide(_sig(training=False), _cands(REFERENCE, "triton"))
    assert tuner.path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        tuner.path.name,
        tuner.path.name + ".lock",
    ]


def test_default_version_is_the_build(tmp_path, monkeypatch) -> None:
    """The installed library, torch, Triton and the kernels' sources: an edit of a kernel file
    makes a new cache (its candidates are checked and measured again)."""
    import importlib.metadata

    import torch

    tuner = Autotuner("cpu", directory=tmp_path)
    lib = importlib.metadata.version("fastscarlet")
    assert tuner.version.startswith(f"{lib}+torch{torch.__version__}+triton")
    assert "+src" in tuner.version and autotune._slug(tuner.version) in tuner.path.name
    autotune.build_id.cache_clear()
    monkeypatch.setattr(autotune.hashlib, "sha256", lambda: _FixedHash())
    try:
        assert autotune.build_id().endswith("+src0123456789")
    finally:
        autotune.build_id.cache_clear()


class _FixedHash:
    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return "0123456789abcdef"


def test_info_lists_the_cached_decisions(tmp_path, monkeypatch) -> None:
    """``fastscarlet info --dispatch`` reads every cache file of the folder: a count per choice,
    every decision with its times, and an unreadable file named as such."""
    from fastscarlet.cli.info import dispatch_report

    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    assert "no measured decisions yet" in dispatch_report()
    tuner = Autotuner(GPU, directory=tmp_path, version="1.0",
                      timer=ForcedTimer({REFERENCE: 1.0, "triton": 0.5}))  # fmt: skip
    tuner.decide(_sig(), _cands(REFERENCE, "triton"))
    tuner.decide(_sig(kernel=3), _cands(REFERENCE))
    (tmp_path / "dispatch-other-0.json").write_text("{broken")
    short, full = dispatch_report(), dispatch_report(full=True)
    assert f"{tuner.path.name}: {GPU} v1.0: 2 signatures (reference 1, triton 1)" in short
    assert "dispatch-other-0.json: unreadable" in short
    assert _sig().key() not in short
    assert f"{_sig().key()}: triton [reference 1000000.0 us, triton 500000.0 us]" in full
