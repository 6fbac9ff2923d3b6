import re

import pytest

from restyle import runs


def test_a_run_name_parses_back():
    assert runs.parse_run(runs.run_name("studyB-gsm8k-teacher", 3)) == ("studyB-gsm8k-teacher", 3)
    assert runs.parse_run(runs.BASE) == (runs.BASE, None)
    with pytest.raises(ValueError, match="neither"):
        runs.parse_run("a/b/seed1")


def test_the_wildcard_matches_every_run_and_nothing_else():
    for run in (runs.BASE, runs.run_name("control-mmlu-positive", 1), runs.run_name("s", 12)):
        assert re.fullmatch(runs.RUN_RE, run)
    for other in ("a/b/seed1", "s/seed", "base/x"):
        assert not re.fullmatch(runs.RUN_RE, other)
    assert runs.checkpoint_dir("m", runs.run_name("s", 1)) == "results/train/m/s/seed1"
