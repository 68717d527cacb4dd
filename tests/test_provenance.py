"""Tests for benchmarks/provenance.py's results writer."""

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import their helpers as top-level modules
from provenance import write_json


def test_write_json_writes_sorted_indented_json_and_says_where(tmp_path, capsys):
    path = write_json({"b": 1, "a": {"d": 2, "c": [1.5]}}, "out.json", folder=tmp_path)
    assert path == tmp_path / "out.json" and json.loads(path.read_text()) == {"a": {"c": [1.5], "d": 2}, "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"') and path.read_text().endswith("}\n")
    assert f"wrote {path}" in capsys.readouterr().out
