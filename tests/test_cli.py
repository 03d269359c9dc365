"""The command line, in-process through `main()` and, for entry points, as real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_server.cli import build_parser, main
from mcp_server.home import example_workflow


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    h = tmp_path / "home"
    monkeypatch.setenv("MACROSLOW_HOME", str(h))
    return h


def test_init_is_idempotent_and_says_key_is_unencrypted(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init")
    assert code == 0 and "UNENCRYPTED" in out
    keys = sorted((home / "keys").glob("*.key.pem"))  # the signing key and the ledger's log key
    assert len(keys) == 2 and {(home / "keys" / name).read_text().strip() for name in ("default", "log")} == {
        k.name.removesuffix(".key.pem") for k in keys
    }
    before = [k.read_bytes() for k in keys]
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert (home / "workflows" / "ghz.maml.md").read_text() == example_workflow()
    code, out, _ = run(capsys, "init")
    assert code == 0 and "already initialised" in out
    assert sorted((home / "keys").glob("*.key.pem")) == keys and [k.read_bytes() for k in keys] == before


def test_init_with_passphrase_encrypts(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MACROSLOW_KEY_PASSPHRASE", "correct horse")
    code, out, _ = run(capsys, "init")
    assert code == 0 and "UNENCRYPTED" not in out
    keys = list((home / "keys").glob("*.key.pem"))
    assert len(keys) == 2 and all(b"ENCRYPTED PRIVATE KEY" in k.read_bytes() for k in keys)
    doc = home / "workflows" / "ghz.maml.md"
    assert run(capsys, "sign", str(doc))[0] == 0
    monkeypatch.delenv("MACROSLOW_KEY_PASSPHRASE")
    code, _, err = run(capsys, "sign", str(doc))
    assert code == 2 and "encrypted; set MACROSLOW_KEY_PASSPHRASE" in err and err.count("\n") == 1


def test_top_level_home_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "--home", str(tmp_path / "a"), "init")
    assert code == 0 and (tmp_path / "a" / "keys" / "default").exists()
    code, _, _ = run(capsys, "init", "--home", str(tmp_path / "b"))
    assert code == 0 and (tmp_path / "b" / "keys" / "default").exists()


def test_sign_verify_exit_codes(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init")
    doc = tmp_path / "w.maml.md"
    doc.write_text(example_workflow())
    assert run(capsys, "validate", str(doc))[0] == 0
    assert run(capsys, "verify", str(doc))[0] == 1  # unsigned
    out_file = tmp_path / "signed.maml.md"
    assert run(capsys, "sign", str(doc), "-o", str(out_file))[0] == 0
    assert doc.read_text() == example_workflow()  # -o leaves the input alone
    code, out, _ = run(capsys, "verify", str(out_file))
    assert code == 0 and "trusted" in out
    assert run(capsys, "sign", str(doc))[0] == 0  # in place
    assert "signature:" in doc.read_text()
    doc.write_text(doc.read_text().replace("three qubits", "four qubits"))
    code, out, _ = run(capsys, "verify", str(doc))
    assert code == 1 and "INVALID" in out
    code, _, err = run(capsys, "verify", str(tmp_path / "missing.maml.md"))
    assert code == 2 and err.startswith("macroslow-mcp: cannot read")
    code, out, _ = run(capsys, "verify", "--json", str(out_file))
    assert code == 0 and json.loads(out)["valid"] is True


def test_detached_signature(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init")
    doc = tmp_path / "w.maml.md"
    doc.write_text(example_workflow())
    assert run(capsys, "sign", "--detached", str(doc))[0] == 0
    assert doc.read_text() == example_workflow()
    sig = json.loads((tmp_path / "w.maml.md.sig").read_text())
    assert sig["format"] == "maml-detached-signature/1"
    assert run(capsys, "verify", str(doc))[0] == 0  # picks up FILE.sig
    doc.write_text(example_workflow() + "\n")
    assert run(capsys, "verify", str(doc))[0] == 1


def test_untrusted_key(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init")
    code, out, _ = run(capsys, "keys", "generate", "--algorithm", "ML-DSA-87", "--no-trust")
    kid = out.strip().splitlines()[-1]
    doc = tmp_path / "w.maml.md"
    doc.write_text(example_workflow())
    assert run(capsys, "sign", "--key", kid, str(doc))[0] == 0
    code, out, _ = run(capsys, "verify", str(doc))
    assert code == 1 and "not in the trust store" in out
    assert run(capsys, "verify", "--allow-untrusted", str(doc))[0] == 0
    assert run(capsys, "keys", "trust", kid)[0] == 0
    assert run(capsys, "verify", str(doc))[0] == 0
    assert run(capsys, "keys", "untrust", kid)[0] == 0
    assert run(capsys, "verify", str(doc))[0] == 1
    code, _, err = run(capsys, "keys", "untrust", kid)
    assert code == 2 and "not in the trust store" in err


def test_keys_list_export_and_trust_from_pem(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "init")
    code, out, _ = run(capsys, "keys", "list", "--json")
    listed = json.loads(out)
    [key] = [k for k in listed if k["default"]]
    assert key["trusted"] and key["algorithm"] == "ML-DSA-65"
    [log_key] = [k for k in listed if not k["default"]]  # the ledger's checkpoint key
    assert log_key["trusted"] and log_key["algorithm"] == "ML-DSA-44"
    pem = tmp_path / "k.pub.pem"
    assert run(capsys, "keys", "export", key["key_id"], "-o", str(pem))[0] == 0
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    other = tmp_path / "other"
    code, out, _ = run(capsys, "--home", str(other), "keys", "trust", str(pem))
    assert code == 0 and key["key_id"] in out
    assert (other / "trust" / f"{key['key_id']}.pub.pem").exists()
    (tmp_path / "junk.pem").write_text("junk")
    code, _, err = run(capsys, "keys", "trust", str(tmp_path / "junk.pem"))
    assert code == 2 and "key_error" in err


def test_validate_reports_line(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "bad.maml.md"
    doc.write_text(example_workflow().replace("origin: agent://local", "origin: agent://local\norigin: x"))
    code, out, _ = run(capsys, "validate", str(doc))
    assert code == 1 and "line 6" in out and "duplicate key" in out


def test_every_command_has_help() -> None:
    parser = build_parser()
    paths = [
        [],
        ["init"],
        ["keys"],
        ["keys", "generate"],
        ["keys", "list"],
        ["keys", "export"],
        ["keys", "trust"],
        ["keys", "untrust"],
        ["sign"],
        ["verify"],
        ["validate"],
        ["serve"],
        ["demo"],
    ]
    for path in paths:
        with pytest.raises(SystemExit) as info:
            parser.parse_args([*path, "--help"])
        assert info.value.code == 0, path


@pytest.mark.subprocess
def test_entry_points(tmp_path: Path) -> None:
    env = {**os.environ, "MACROSLOW_HOME": str(tmp_path / "h")}
    for cmd in (
        [sys.executable, "-m", "mcp_server", "--version"],
        [str(Path(sys.executable).parent / "macroslow-mcp"), "--version"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("macroslow-mcp "), out
    bad = subprocess.run(
        [sys.executable, "-m", "mcp_server", "frobnicate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.subprocess
def test_demo_passes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    out = subprocess.run(
        [sys.executable, "-m", "mcp_server", "demo", "--home", str(tmp_path / "h")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS: 19/19 steps" in out.stdout
    assert "receipts verify (servers stopped)" in out.stdout
    assert "second agent: sign_maml" in out.stdout and "needs the scope 'maml:sign'" in out.stdout
    assert "FAIL" not in out.stdout.replace("PASS", "")


def test_settings_from_env_file_and_signing_key_override(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MACROSLOW_HOME")
    (tmp_path / ".env").write_text(f"MACROSLOW_HOME={tmp_path / 'from-dotenv'}\n")
    run(capsys, "init")
    assert (tmp_path / "from-dotenv" / "keys" / "default").exists()
    _, out, _ = run(capsys, "keys", "generate", "--algorithm", "ML-DSA-44")
    second = out.strip().splitlines()[-1]
    monkeypatch.setenv("MACROSLOW_SIGNING_KEY_ID", second)
    doc = tmp_path / "w.maml.md"
    doc.write_text(example_workflow())
    code, out, _ = run(capsys, "sign", str(doc))
    assert code == 0 and second in out and "ML-DSA-44" in out


@pytest.mark.parametrize("command", ["verify", "validate", "sign"])
def test_devices_and_oversized_files_are_refused_without_reading_them(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """`verify /dev/zero` once grew to gigabytes: only regular files are read, and at most the size
    cap plus one byte of them."""
    run(capsys, "init")
    code, _, err = run(capsys, command, "/dev/zero")
    assert code == 2 and err.count("\n") == 1 and "not a regular file" in err
    monkeypatch.setenv("MACROSLOW_MAX_DOCUMENT_BYTES", "4096")
    big = tmp_path / "big.maml.md"
    big.write_text(example_workflow() + "x" * 5000)
    code, _, err = run(capsys, command, str(big))
    assert code == 2 and err.count("\n") == 1 and "request_too_large" in err and "4096" in err


def test_key_files_are_read_within_a_small_cap(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "init")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"-" * 70_000)
    for argv in (["keys", "import", "/dev/zero"], ["keys", "import", str(huge)]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.count("\n") == 1, err


def test_an_unexpected_failure_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcp_server.maml.parser as parser

    run(capsys, "init")

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom at /srv/secret")

    monkeypatch.setattr(parser, "parse", broken)
    code, _, err = run(capsys, "validate", str(home / "workflows" / "ghz.maml.md"))
    assert code == 2 and err.count("\n") == 1 and "internal_error: unexpected RuntimeError" in err
    assert "Traceback" not in err and "/srv/secret" not in err
