"""`devices.host`: one reader of what the machine has, in bytes, agreeing with the OS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devices import host

SAMPLE = """\
MemTotal:       16303564 kB
MemFree:         1048576 kB
MemAvailable:    8151782 kB
HugePages_Total:       4
Hugepagesize:       2048 kB
Broken:
"""


def test_meminfo_sizes_are_bytes_and_counts_stay_counts() -> None:
    fields = host.parse_meminfo(SAMPLE)
    assert fields["MemTotal"] == 16303564 * 1024
    assert fields["MemAvailable"] == 8151782 * 1024
    assert fields["Hugepagesize"] == 2 * 2**20
    assert fields["HugePages_Total"] == 4  # a count, not kB
    assert "Broken" not in fields


def test_memory_from_a_meminfo_file(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text(SAMPLE)
    memory = host.memory(path)
    assert memory == host.Memory(total=16303564 * 1024, available=8151782 * 1024)
    assert memory.used_percent == pytest.approx(50.0, abs=0.01)


def test_without_meminfo_memory_comes_from_sysconf(tmp_path: Path) -> None:
    memory = host.memory(tmp_path / "none")
    assert host.meminfo(tmp_path / "none") == {}
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        assert memory.total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_used_percent_is_zero_when_unknown() -> None:
    assert host.Memory(total=None, available=None).used_percent == 0.0
    assert host.Memory(total=0, available=0).used_percent == 0.0
    assert host.Memory(total=100, available=None).used_percent == 0.0


@pytest.mark.skipif(not host.MEMINFO.exists(), reason="Linux: /proc/meminfo")
def test_memory_agrees_with_proc_meminfo() -> None:
    def kb(field: str) -> int:
        for line in host.MEMINFO.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                number, unit = value.split()
                assert unit == "kB"
                return int(number)
        raise AssertionError(f"no {field} in {host.MEMINFO}")

    before = kb("MemAvailable")
    memory = host.memory()
    after = kb("MemAvailable")
    assert memory.total == kb("MemTotal") * 1024
    assert memory.available is not None
    slack = 64 * 2**20  # what another process may take or free between the reads
    low, high = sorted((before * 1024, after * 1024))
    assert low - slack <= memory.available <= high + slack
    assert 0 < memory.used_percent < 100


def test_cpus_and_load_are_the_os_values() -> None:
    assert host.cpu_count() == os.cpu_count()
    if hasattr(os, "getloadavg"):
        load = host.load_average()
        assert load is not None
        assert len(load) == 3
        assert all(value >= 0 for value in load)
        assert host.cpu_percent(2) == pytest.approx(50 * load[0], abs=5)


@pytest.mark.parametrize(
    ("platform", "name"),
    [("linux", "linux"), ("darwin", "macos"), ("win32", "windows"), ("freebsd14", "freebsd14")],
)
def test_platform_names(platform: str, name: str) -> None:
    assert host.platform_name(platform) == name


def test_no_gpu_knows_no_vram() -> None:
    assert host.no_gpu() is None
