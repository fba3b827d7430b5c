"""glibc malloc tuning: applied once, and switched off by NEUROPDE_MALLOC_TUNING=0."""
import sys

import pytest

import neuropde.cpu_memory as cm


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_is_applied_once_and_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(cm, "_done", False)
    monkeypatch.setenv("NEUROPDE_MALLOC_TUNING", "0")
    assert cm.keep_freed_memory() is False
    monkeypatch.setenv("NEUROPDE_MALLOC_TUNING", "1")
    assert cm.keep_freed_memory() is True
    assert cm.keep_freed_memory() is True  # idempotent
