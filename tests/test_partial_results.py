"""`vaelab.evaluation.batches.PartialResults` keyed by points: batches shared by evaluations of more or fewer
points, compressed files, and the conversion of an earlier version's per-evaluation keys.

`seeded_batches` runs a function of the batch's points and seed, so that a batch read back from disk and one
computed afresh can be told apart (the calls are counted) and compared (the values are the same).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest
import torch

from vaelab.errors import ConfigError, CorruptRunFile, OutOfTime
from vaelab.evaluation import batches
from vaelab.evaluation.batches import (
    PartialResults,
    Saved,
    digest,
    partials_needed,
    read_back,
    remove_partials,
    saved_batches,
    seeded_batches,
)

KEY = {"evaluation": "test", "batch_size": 3, "seed": 11}
X = torch.arange(20.0).reshape(10, 2)


def _run(x, directory=None, calls=None):
    """Per-point values of `x` in batches of 3 (seed 11): x's row sums plus one normal draw from the batch's seed."""

    def fn(batch, seed):
        if calls is not None:
            calls.append(batch.start)
        g = torch.Generator().manual_seed(seed)
        return {"v": x[batch].sum(1) + torch.randn(batch.stop - batch.start, generator=g)}

    store = None if directory is None else PartialResults(directory, KEY, points=(x,), batch_size=3)
    parts = seeded_batches(fn, x.shape[0], 3, 11, partials=store, progress=False)
    return torch.cat([p["v"] for p in parts])


def test_evaluations_of_more_or_fewer_points_share_their_full_batches(tmp_path):
    directory, calls = tmp_path / "partial", []
    whole = _run(X)
    assert torch.equal(_run(X[:7], directory, calls), whole[:7]) and calls == [0, 3, 6]
    assert sorted(p.name for p in directory.glob("batch-*")) == ["batch-000000.pt.gz", "batch-000001.pt.gz"]
    raw = (directory / "batch-000000.pt.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    assert torch.equal(torch.load(io.BytesIO(gzip.decompress(raw)), weights_only=True)["result"]["v"], whole[:3])

    calls.clear()  # 10 points: batches 0 and 1 read back, batch 2 (now full) computed and kept, batch 3 not
    assert torch.equal(_run(X, directory, calls), whole) and calls == [6, 9]
    assert saved_batches(directory) == 3 and saved_batches(directory, below=2) == 2
    calls.clear()
    assert torch.equal(_run(X[:4], directory, calls)[:3], whole[:3])
    assert calls == [3]  # batch 1 of 4 points is point 3 alone: computed, and the saved full batch 1 left as it is
    assert saved_batches(directory) == 3

    assert not remove_partials(directory, 6, 3) and saved_batches(directory) == 3  # batch 2 is a longer one's
    assert not remove_partials(directory, 9, 3) and saved_batches(directory) == 3  # 10 points were asked for
    other = X.clone()
    other[4] += 1  # batch 1 holds other points now
    with pytest.raises(ConfigError, match="other points than points 3 to 5"):
        _run(other, directory)
    assert remove_partials(directory, 10, 3) and not directory.exists()


def _legacy(directory, n, x, results, key=KEY):
    """Partial results as vaelab wrote them before they were keyed by points: `n` and `data` (the digest of all
    the points) in the manifest, and uncompressed `batch-<j>.pt` files tagged with the whole manifest's digest."""
    manifest = {**key, "n": n, "data": digest(x[:n])}
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    tag = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    for j, v in results.items():
        torch.save({"tag": tag, "result": {"v": v}}, directory / f"batch-{j:06d}.pt")


def test_an_earlier_versions_partial_results_are_converted(tmp_path):
    whole = _run(X)
    directory, calls = tmp_path / "partial", []
    _legacy(directory, 7, X, {0: whole[:3], 1: whole[3:6], 2: whole[6:7] + 100})  # batch 2 short: dropped
    assert torch.equal(_run(X, directory, calls), whole) and calls == [6, 9]
    assert sorted(p.name for p in directory.glob("batch-*")) == [f"batch-00000{j}.pt.gz" for j in range(3)]
    assert json.loads((directory / "manifest.json").read_text()) == KEY

    stopped = tmp_path / "stopped"  # a conversion stopped after it wrote batch 0 anew, before the manifest
    _legacy(stopped, 7, X, {0: whole[:3], 1: whole[3:6]})
    (tmp_path / "new").mkdir()
    PartialResults(tmp_path / "new", KEY, points=(X,), batch_size=3).save(0, slice(0, 3), {"v": whole[:3]})
    (tmp_path / "new" / "batch-000000.pt.gz").rename(stopped / "batch-000000.pt.gz")
    (stopped / "batch-000000.pt").unlink()
    calls.clear()
    assert torch.equal(_run(X, stopped, calls), whole) and calls == [6, 9]

    for points, n in [(X[:5], 5), (X + 1, 10)]:  # too few points, or other points, to check the saved digest on
        old = tmp_path / f"old-{n}"
        _legacy(old, 7, X, {0: whole[:3]})
        with pytest.raises(ConfigError, match=r"all 7 points .* evaluate those first 7 points once"):
            _run(points, old)
        assert (old / "batch-000000.pt").is_file()  # left as it was


def test_a_key_that_keeps_the_number_of_points_converts_only_its_own(tmp_path):
    """An evaluation whose points depend on their number (BDMC simulates them n at a time) keeps `n` in its key:
    an earlier version's results of the same n are converted, those of another n are refused naming it."""
    x, keyed = X[:6], {**KEY, "n": 6}
    directory = tmp_path / "same"
    _legacy(directory, 6, x, {0: torch.zeros(3)}, key=KEY)
    store = PartialResults(directory, keyed, points=(x,), batch_size=3)
    assert store.open() == 1 and torch.equal(store.load(0, slice(0, 3))["v"], torch.zeros(3))
    other = tmp_path / "other"
    _legacy(other, 9, X, {0: torch.zeros(3)}, key=KEY)
    with pytest.raises(ConfigError, match="n: 9 there, 6 now"):
        PartialResults(other, keyed, points=(x,), batch_size=3).open()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_an_unreadable_manifest_is_one_line_saying_what_to_do(tmp_path, text):
    directory = tmp_path / "partial"
    directory.mkdir()
    (directory / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CorruptRunFile, match="delete .*partial to start"):
        PartialResults(directory, KEY, points=(X,), batch_size=3).open()


def test_an_unreadable_batch_file_is_computed_again(tmp_path, capsys):
    """A batch file that is not a gzip of a saved result (truncated, or another file) is warned about and computed
    again, and the new result replaces it."""
    directory, calls = tmp_path / "partial", []
    whole = _run(X[:6], directory, calls)
    (directory / "batch-000000.pt.gz").write_bytes(b"\x1f\x8b truncated")
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    (directory / "batch-000001.pt.gz").write_bytes(gzip.compress(buffer.getvalue()))
    calls.clear()
    assert torch.equal(_run(X[:6], directory, calls), whole) and calls == [0, 3]
    assert capsys.readouterr().err.count("computing that batch again") == 2
    calls.clear()
    assert torch.equal(_run(X[:6], directory, calls), whole) and not calls


def test_the_temporary_file_of_a_killed_write_is_no_batch(tmp_path):
    """A write killed before its rename (SIGKILL) leaves `batch-<j>.pt.gz.tmp`: it is not counted as a saved batch,
    and the batch is computed again."""
    directory, calls = tmp_path / "partial", []
    whole = _run(X[:6], directory, calls)
    (directory / "batch-000001.pt.gz").rename(directory / "batch-000001.pt.gz.tmp")
    assert saved_batches(directory) == 1
    calls.clear()
    assert torch.equal(_run(X[:6], directory, calls), whole) and calls == [3]


def test_each_saved_batch_records_the_time_it_took(tmp_path, monkeypatch, capsys):
    """Each batch file keeps the seconds its computation took, so that an evaluation continued from saved batches
    can report its whole cost (`read_back`); the files of an earlier vaelab, which recorded none, are counted as
    untimed, and so is an unreadable file (without a warning: that is given when it is computed again)."""
    clock = iter(range(0, 1000, 2))  # each reading 2 s after the last: a batch takes 2 s
    monkeypatch.setattr(batches.time, "monotonic", lambda: float(next(clock)))
    directory = tmp_path / "partial"
    _run(X[:7], directory)  # batches 0 and 1 kept, the short batch 2 not
    assert read_back(directory) == Saved(2, 4.0, 0) and read_back(directory, below=1) == Saved(1, 2.0, 0)
    assert read_back(tmp_path / "none") == Saved(0, 0.0, 0)

    whole, old = _run(X), tmp_path / "old"
    _legacy(old, 7, X, {0: whole[:3], 1: whole[3:6]})
    _run(X[:7], old)  # converted: the files keep what they recorded, which is nothing
    assert read_back(old) == Saved(2, 0.0, 2)
    (directory / "batch-000001.pt.gz").write_bytes(b"\x1f\x8b truncated")
    assert read_back(directory) == Saved(2, 2.0, 1) and not capsys.readouterr().err


def test_partials_are_needed_while_a_longer_evaluation_uses_them(tmp_path):
    """`partials_needed` is what `remove_partials` checks: batches beyond an evaluation's own, or more points asked
    for by one that opened the directory."""
    directory = tmp_path / "partial"
    _run(X[:6], directory)
    assert partials_needed(directory, 6, 3) is False and partials_needed(directory, 3, 3)  # batch 1 lies beyond 3
    _run(X[:7], directory)  # no batch beyond the first 6 points saved, but 7 points asked for
    assert partials_needed(directory, 6, 3) and not partials_needed(directory, 7, 3)
    _run(X[:10], directory)  # batch 2 now saved, and 10 points asked for
    assert partials_needed(directory, 9, 3)
    assert not partials_needed(directory, 10, 3) and remove_partials(directory, 10, 3)


def _timed_run(x, directory, monkeypatch, now, deadline, calls):
    """`_run`'s batches, each taking 10 s of a fake clock (`now[0]`), with `deadline` on that clock."""
    monkeypatch.setattr(batches.time, "monotonic", lambda: now[0])

    def fn(batch, seed):
        calls.append(batch.start)
        now[0] += 10.0
        g = torch.Generator().manual_seed(seed)
        return {"v": x[batch].sum(1) + torch.randn(batch.stop - batch.start, generator=g)}

    store = PartialResults(directory, KEY, points=(x,), batch_size=3)
    parts = seeded_batches(fn, x.shape[0], 3, 11, partials=store, progress=False, deadline=deadline)
    return torch.cat([p["v"] for p in parts])


def test_a_deadline_stops_before_a_batch_that_would_end_after_it(tmp_path, monkeypatch):
    """With a deadline no batch starts that is expected, from the batches' recorded times, to end after it: the
    first batch of a fresh evaluation runs (nothing is known yet) unless the deadline has passed; `OutOfTime` says
    how many batches are saved and left; the same call continues, and the result equals an uninterrupted one's."""
    whole, directory, now, calls = _run(X), tmp_path / "partial", [0.0], []
    with pytest.raises(OutOfTime) as stopped:  # batch 0 ends at 10 s; batch 1 would end at 20 s
        _timed_run(X, directory, monkeypatch, now, 15.0, calls)
    assert calls == [0] and (stopped.value.saved, stopped.value.left, stopped.value.expected) == (1, 3, 10.0)
    assert "3 batches left (about 10 s each), 1 saved in" in str(stopped.value)
    calls.clear()
    with pytest.raises(OutOfTime) as stopped:  # from 10 s: batch 0 read back, 1 and 2 run; the short batch 3 not
        _timed_run(X, directory, monkeypatch, now, 35.0, calls)
    assert calls == [3, 6] and now[0] == 30.0 and (stopped.value.saved, stopped.value.left) == (3, 1)
    calls.clear()
    assert torch.equal(_timed_run(X, directory, monkeypatch, now, None, calls), whole) and calls == [9]

    late = tmp_path / "late"
    with pytest.raises(OutOfTime, match="4 batches left, 0 saved"):  # past the deadline: not even the first
        _timed_run(X, late, monkeypatch, now, now[0] - 1, calls)
    with pytest.raises(ValueError, match="needs partial results"):
        seeded_batches(lambda b, s: {}, 3, 3, 11, deadline=1.0)


def test_ranks_stop_together_when_any_would_end_late(tmp_path, monkeypatch):
    """Under a process group the ranks decide together: rank 1 of 2 (batches 1 and 3), never late itself, stops
    before its batch 3 in the round where rank 0 reports a late batch 2, so no rank waits in a gather for one that
    stopped."""
    from vaelab import distributed

    directory, calls = tmp_path / "partial", []
    _run(X[:6], directory, calls)  # batches 0 and 1 saved
    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    monkeypatch.setattr(distributed, "on_rank0", lambda fn: fn())
    told = []

    def gather(mine):  # rank 0 says it would end late in the second round (batch 2)
        told.append(mine)
        return [(len(told) == 2, 40.0), mine]

    monkeypatch.setattr(distributed, "all_gather_object", gather)
    calls.clear()
    with pytest.raises(OutOfTime) as stopped:
        _run_sharded(X, directory, calls, deadline=1e9)
    assert not calls and [late for late, _ in told] == [False, False]  # batch 1 read back; batch 3 was in time
    assert (stopped.value.saved, stopped.value.left, stopped.value.expected) == (2, 2, 40.0)


def _run_sharded(x, directory, calls, deadline):
    def fn(batch, seed):
        calls.append(batch.start)
        return {"v": x[batch].sum(1)}

    store = PartialResults(directory, KEY, points=(x,), batch_size=3)
    return seeded_batches(fn, x.shape[0], 3, 11, shard=True, partials=store, progress=False, deadline=deadline)
