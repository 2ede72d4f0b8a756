import logging

import pytest

from elimity_scim.connector.progress import Progress
from elimity_scim.connector.snapshot import SnapshotCounts
from elimity_scim.source import ScimSource

MODEL = ScimSource().data_model()


def test_periodic_log_lines_when_not_on_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = SnapshotCounts()
    progress = Progress(
        counts, MODEL, lambda: {"requests": 7, "retries": 1}, interval=0, live=False
    )
    caplog.set_level(logging.INFO)
    seen = []
    for item in progress.track(range(2500)):
        counts.entities["user"] += 1
        seen.append(item)
    assert seen == list(range(2500))
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Progress")
    ]
    assert len(lines) == 2
    assert lines[1].startswith(
        "Progress: 2000 users, 0 groups, 0 relationships; 7 requests, 1 retries; "
    )


def test_live_line_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    counts = SnapshotCounts()
    counts.entities["group"] = 3
    progress = Progress(counts, MODEL, interval=0, live=True)
    assert list(progress.track(range(1200))) == list(range(1200))
    err = capsys.readouterr().err
    assert "1200 items" in err
    assert "0 users, 3 groups, 0 relationships" in err
