"""`mmrft rewards list | check | new`, in-process."""

import pytest

from mmrft.cli import main


def test_list_prints_every_builtin_with_its_doc(capsys):
    assert main(["rewards", "list"]) == 0
    out = capsys.readouterr().out
    for name in ["format", "accuracy", "counting", "iou", "detection", "temporal_iou", "tracking"]:
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "normalised label" in out


def test_check_builtin_passes(capsys):
    assert main(["rewards", "check", "format", "--param", "structure=answer_only", "--boxes", "200"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")


def test_check_failing_plugin_exits_nonzero(tmp_path, capsys):
    plugin = tmp_path / "bad.py"
    plugin.write_text("def bad(completions, **kw):\n    return [2.0 for _ in completions]\n")
    assert main(["rewards", "check", f"{plugin}:bad", "--boxes", "10"]) == 1
    assert "[FAIL] range" in capsys.readouterr().out


def test_check_unknown_spec_exits_2(capsys):
    assert main(["rewards", "check", "no_such_reward"]) == 2
    assert "unknown reward 'no_such_reward'" in capsys.readouterr().err


def test_check_json_output(capsys):
    import json

    assert main(["rewards", "check", "counting", "--json", "--boxes", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["min_score"] == 0.0 and report["max_score"] == 1.0


def test_new_writes_a_plugin_that_passes_its_own_test(tmp_path, capsys):
    assert main(["rewards", "new", "keyword_match", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "keyword_match.py").exists() and (tmp_path / "test_keyword_match.py").exists()
    assert main(["rewards", "new", "keyword_match", "--dir", str(tmp_path)]) == 2  # no silent overwrite
    assert pytest.main(["-q", "-p", "no:cacheprovider", str(tmp_path / "test_keyword_match.py")]) == 0
    assert main(["rewards", "check", f"{tmp_path / 'keyword_match.py'}:keyword_match", "--boxes", "10"]) == 0


def test_new_rejects_bad_names(tmp_path, capsys):
    assert main(["rewards", "new", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "lowercase Python identifier" in capsys.readouterr().err
