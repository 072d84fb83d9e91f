"""Atomic writes (switchbert.io) follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from switchbert.io import atomic_write_text


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
