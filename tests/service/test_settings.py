"""Settings that are wrong are refused when the service starts, with the setting named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.cli import main
from service.settings import Settings


@pytest.mark.parametrize(
    ("editor_config", "named"),
    [
        ({"anchor_names": "nearby"}, "anchor_names 'nearby'"),
        ({"key_position": "end"}, "key_position 'end'"),
        ({"value_opt": {"tilt": 2}}, "unknown value_opt settings ['tilt']"),
        ({"hyper": {"width": 2}}, "unknown hyper settings ['width']"),
        ({"value_opt": {"upper_tilt": -1}}, "upper_tilt -1"),
        ({"no_such_setting": 1}, "unknown editor settings ['no_such_setting']"),
    ],
)
def test_bad_editor_config_is_refused_up_front(editor_config: dict, named: str) -> None:
    with pytest.raises(ValidationError, match="editor_config") as info:
        Settings(editor_config=editor_config)
    assert named in str(info.value)


def test_good_editor_config_is_kept() -> None:
    cfg = {"anchors": 4, "anchor_names": "same_last_word", "value_opt": {"upper_tilt": 2}}
    assert Settings(editor_config=cfg).editor_config == cfg


def test_cli_reports_a_bad_setting_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import service.commands.serve as serve

    def must_not_serve(*_a: object, **_k: object) -> int:
        raise AssertionError("served with an invalid setting")

    monkeypatch.setattr(serve, "_exit_on_sigterm", lambda: None)  # not in the test process
    monkeypatch.setattr(serve, "_serve_http", must_not_serve)
    monkeypatch.setenv("FACTPATCH_EDITOR_CONFIG", '{"values": "guess"}')
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("factpatch: invalid configuration:")
    assert "values 'guess'" in err and "Traceback" not in err


def test_protected_prompts_file_is_read_up_front(tmp_path) -> None:
    good = tmp_path / "protect.jsonl"
    good.write_text(
        '{"prompt": "The capital of France is"}\n{"prompt": "Rome is in", "answer": "Italy"}\n'
    )
    assert Settings(protect=good).protect == good
    assert Settings(protect="").protect is None and Settings().protect is None
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(protect=tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"answer": "no prompt"}\n')
    with pytest.raises(ValidationError, match=r"bad\.jsonl:2"):
        Settings(protect=bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValidationError, match="holds no prompt"):
        Settings(protect=empty)
