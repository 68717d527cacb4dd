"""tests/sanitize.cfg masks only what varies between identical runs (times, addresses, temporary paths), never a result.

The file is read with nbval's own parser (a `regex:` line followed by its `replace:` line) and applied as nbval applies
it: every pattern in order, with `re.sub`, on the whole output text.
"""

import configparser
import re

import pytest
from nbval.plugin import get_sanitize_patterns

from conftest import ROOT

CFG = ROOT / "tests" / "sanitize.cfg"


def sanitise(text: str) -> str:
    for regex, replace in get_sanitize_patterns(CFG.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def test_nbval_reads_every_section_of_the_file():
    """A section nbval's line-pair parser misses would be silently ignored: configparser and nbval must agree."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CFG, encoding="utf-8")
    sections = [(parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()]
    assert get_sanitize_patterns(CFG.read_text(encoding="utf-8")) == sections
    assert [s for s in parser.sections()] == ["memory addresses", "temporary directories", "progress bars", "durations"]


BAR = "epochs: 100%|██████████| 10/10 [00:01<00:00,  7.12it/s, train_loss=0.412, val_acc=0.850, best=0.861]"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (BAR, "epochs: PROGRESS, train_loss=0.412, val_acc=0.850, best=0.861]"),
        ("epochs:   0%|          | 0/5 [00:00<?, ?it/s]", "epochs:   PROGRESS]"),
        ("steps: 100%|██████████| 150/150 [01:02<00:00,  2.41s/it, acc=0.93]", "steps: PROGRESS, acc=0.93]"),
        ("took 1.2 s", "took DURATION"),
        ("identity           14.4 ms per batch", "identity           DURATION per batch"),
        ("recompute 0.43 s, cached 0.07s, speed-up 6.3x", "recompute DURATION, cached DURATION, speed-up 6.3x"),
        ("18 runs in 9 s.", "18 runs in DURATION."),
        ("saved to /tmp/tmpab_12/model.pt at 0x7f3a2b1c9d00", "saved to TMPPATH at 0xADDRESS"),
    ],
)
def test_what_varies_is_masked(line, expected):
    assert sanitise(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "acc 0.85",
        "3 seeds",
        "12 steps",
        "k=5 seeds=3 acc=0.844 ± 0.014",
        "best epoch 3, val_acc 0.861",
        "loss 1.5s/it is a rate, not a duration",  # a rate outside a bar is left alone too
        "accuracy 0.85\nseconds: none",  # never across a line break
        "scratch 0.484 ± 0.041 | fixed features 0.844 ± 0.014",
        "trainable parameters: 2,570 of 1,227,594 (0.21%)",
    ],
)
def test_results_survive(line):
    assert sanitise(line) == line


def test_every_number_of_a_progress_bar_postfix_survives():
    numbers = re.findall(r"\d+\.\d+", BAR.split("it/s")[1])
    assert numbers == ["0.412", "0.850", "0.861"]
    assert re.findall(r"\d+\.\d+", sanitise(BAR)) == numbers
