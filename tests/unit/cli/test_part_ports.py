"""The ports `exthub up` gives its parts lie outside the OS's range for outgoing connections' local ports, so a
part restarting on its port never finds it taken by some process's connection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exthub.cli import supervisor


def test_the_part_range_and_the_ephemeral_range_do_not_meet() -> None:
    low, high = supervisor._ephemeral_ports()
    parts = supervisor.part_port_range()
    assert len(parts) >= 1000
    assert parts.stop <= low or parts.start > high


@pytest.mark.parametrize(
    ("ephemeral", "expected"), [((32768, 60999), range(20768, 32768)), ((1024, 40000), range(40001, 52001))]
)
def test_the_part_range_takes_the_larger_side(
    monkeypatch: pytest.MonkeyPatch, ephemeral: tuple[int, int], expected: range
) -> None:
    monkeypatch.setattr(supervisor, "_ephemeral_ports", lambda: ephemeral)
    assert supervisor.part_port_range() == expected


def test_free_ports_are_distinct_bindable_in_the_range_and_skip_what_is_taken() -> None:
    parts = supervisor.part_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", supervisor._free_port()))
        taken.listen()
        busy = taken.getsockname()[1]
        chosen = supervisor._free_ports(6, besides=(busy + 1,))
        assert len(set(chosen)) == 6
        assert busy not in chosen and busy + 1 not in chosen
        for port in chosen:
            assert port in parts
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))


def test_no_free_port_is_a_clear_start_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "port_free", lambda port: False)
    with pytest.raises(supervisor.HubStartError, match="no free port between"):
        supervisor._free_ports(1)


def test_the_ephemeral_range_falls_back_when_proc_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Path.read_text

    def unreadable(self: Path, *args: object, **kwargs: object) -> str:
        if str(self).startswith("/proc/sys/net"):
            raise OSError("no /proc here")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert supervisor._ephemeral_ports() == supervisor._DEFAULT_EPHEMERAL
