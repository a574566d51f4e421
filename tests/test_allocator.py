"""vaelab.allocator.tune_malloc: glibc's mmap and trim thresholds set at a command's start, or nothing at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from vaelab import allocator
from vaelab.app.cli import main


class FakeLibc:
    """Stands in for `ctypes.CDLL(None)`: records the mallopt calls, answers `result`."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result
        self.mallopt_result = lambda param, value: self.result  # mallopt's answer to (param, value)
        outer = self

        class Mallopt:
            argtypes = restype = None

            def __call__(self, param: int, value: int) -> int:
                outer.calls.append((param, value))
                return outer.mallopt_result(param, value)

        self.mallopt = Mallopt()


@pytest.fixture
def libc(monkeypatch):
    """A glibc Linux process whose libc is a `FakeLibc`, with no malloc settings in its environment."""
    fake = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.os, "confstr", lambda name: "glibc 2.36", raising=False)
    return fake


def test_applied_when_enabled(libc):
    assert allocator.tune_malloc({}) is True
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, 64 * 2**20), (allocator.M_TRIM_THRESHOLD, 2**30)]
    assert allocator.tune_malloc({allocator.VARIABLE: "1"}, mmap_threshold=2**21) is True
    assert libc.calls[-2] == (allocator.M_MMAP_THRESHOLD, 2**21)


@pytest.mark.parametrize(
    "environ",
    [
        {"VAELAB_MALLOC_TUNING": "0"},
        {"VAELAB_MALLOC_TUNING": " 0 "},
        {"MALLOC_TRIM_THRESHOLD_": "1000000"},  # the user's own glibc settings win
        {"MALLOC_MMAP_THRESHOLD_": "1000000"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000000"},
    ],
)
def test_no_op_when_disabled_or_set_by_the_user(libc, environ):
    assert allocator.tune_malloc(environ) is False
    assert libc.calls == []


def test_other_glibc_tunables_do_not_disable_it(libc):
    assert allocator.tune_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) is True


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_no_op_off_linux(libc, monkeypatch, platform):
    monkeypatch.setattr(allocator.sys, "platform", platform)
    assert allocator.tune_malloc({}) is False
    assert libc.calls == []


def _raises(name):
    raise ValueError("unrecognized configuration name")


@pytest.mark.parametrize("confstr", [_raises, lambda name: None, lambda name: "musl 1.2.4"])
def test_no_op_without_glibc(libc, monkeypatch, confstr):
    monkeypatch.setattr(allocator.os, "confstr", confstr, raising=False)
    assert allocator.glibc_version() is None
    assert allocator.tune_malloc({}) is False
    assert libc.calls == []


def test_refused_setting_reported(libc):
    libc.result = 0  # mallopt refuses the value
    assert allocator.tune_malloc({}) is False


def test_older_glibc_gets_its_largest_mmap_threshold(libc):
    """Older glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit) and sets nothing then:
    tune_malloc falls back to that limit and still sets the trim threshold."""
    limit = allocator.OLD_MMAP_LIMIT
    libc.mallopt_result = lambda param, value: int(param != allocator.M_MMAP_THRESHOLD or value <= limit)
    assert allocator.tune_malloc({}) is True
    assert libc.calls[-2:] == [(allocator.M_MMAP_THRESHOLD, limit), (allocator.M_TRIM_THRESHOLD, 2**30)]


def test_computing_commands_call_it(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or False)
    assert main(["evaluate", str(tmp_path / "no-such-run")]) == 2  # fails after the command's start
    assert calls == [1]


@pytest.mark.skipif(allocator.glibc_version() is None, reason="needs glibc")
def test_freed_memory_is_reused_without_new_page_faults():
    """In a fresh process: a 40 MB block (above glibc's 32 MiB dynamic mmap ceiling) malloc'ed, written and freed
    twice faults all its pages in again the second time by default, and none of them once `tune_malloc` ran."""
    script = textwrap.dedent(
        """
        import ctypes, resource, sys
        from vaelab.allocator import tune_malloc
        if sys.argv[1] == "tuned":
            assert tune_malloc()
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        n = 40 * 10**6
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            p = libc.malloc(n)
            ctypes.memset(p, 1, n)
            libc.free(p)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        print(faults())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.VARIABLE}
    pages = 40 * 10**6 // os.sysconf("SC_PAGE_SIZE")

    def second_round(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert second_round("default") > pages // 2
    assert second_round("tuned") < pages // 100
