"""Shared by every suite: torch's CPU thread count, chosen here for the whole session rather than left to the
machine.

Frames computed in different rows of one batch, or in batches of other sizes or layouts, agree only to
round-off, and that round-off depends on how many threads split the CPU kernels (docs/testing.md). The count
is CFA_TORCH_THREADS when it is set (.ci/run's thread pass; unlike OMP_NUM_THREADS, which torch kept within
the machine's cores where measured, it may ask for more threads than cores); else OMP_NUM_THREADS when it is
set (torch already follows it); else at least 2, so that a one-core machine also splits kernels over
threads. Tests marked thread_sensitive (tests/pytest.ini)
run at this count even inside a suite that picks another one for speed (tests/diffusers runs on one
thread)."""
import os

import pytest
import torch

REQUESTED, OMP = os.environ.get("CFA_TORCH_THREADS"), os.environ.get("OMP_NUM_THREADS")
if REQUESTED:
    THREADS, CHOSEN_BY = int(REQUESTED), f"CFA_TORCH_THREADS={REQUESTED}"
elif OMP:
    THREADS, CHOSEN_BY = torch.get_num_threads(), f"OMP_NUM_THREADS={OMP}"
else:
    THREADS, CHOSEN_BY = max(2, torch.get_num_threads()), "at least 2, OMP_NUM_THREADS unset"


def pytest_configure(config):
    torch.set_num_threads(THREADS)


def pytest_report_header(config):
    return f"torch CPU threads: {THREADS} ({CHOSEN_BY})"


@pytest.fixture(autouse=True)
def _thread_sensitive_tests_run_at_the_session_count(request):
    if request.node.get_closest_marker("thread_sensitive") is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)
