"""`codex-gateway` refuses bad flags, config and token files before serving anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_gateway.auth import TokenFileError, TokenStore
from codex_gateway.cli import main, parser


def test_bad_config_and_tokens_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("abcdefghijklmnopqrstuvwxyz: alice\n")
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[codex]\nsandbox = 'root'\n")
    assert main(["--config", str(bad_config), "--tokens-file", str(tokens), "--namespace", "ns"]) == 2
    assert "sandbox" in capsys.readouterr().err

    short = tmp_path / "short.yaml"
    short.write_text("abc: alice\n")
    assert main(["--tokens-file", str(short), "--namespace", "ns"]) == 2
    assert main(["--tokens-file", str(tmp_path / "missing.yaml"), "--namespace", "ns"]) == 2
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert main(["--tokens-file", str(empty), "--namespace", "ns"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--tokens-file", "t"],
        ["--tokens-file", "t", "--namespace", "ns", "--port", "70000"],
        ["--tokens-file", "t", "--namespace", "ns", "--wait-seconds", "0"],
    ],
)
def test_bad_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)


def test_token_file_formats(tmp_path: Path) -> None:
    as_json = tmp_path / "t.json"
    as_json.write_text('{"0123456789abcdef": "alice@example.com"}')
    assert TokenStore.from_file(as_json).user_for("0123456789abcdef") == "alice@example.com"
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(TokenFileError):
        TokenStore.from_file(not_mapping)
