"""A fresh home opened by several processes at once (servers started together) gets one key each."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys, time, pathlib
from mcp_server.settings import Settings
from mcp_server.home import initialize
from mcp_server.auth.tokens import TokenAuthority
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
settings = Settings(home=sys.argv[1], _env_file=None)
report = initialize(settings)
authority = TokenAuthority.from_settings(settings)
key = authority.issuers[settings.local_issuer].static_keys[0].kid
print(report.key_id, key)
"""


def test_concurrent_first_use_of_a_home_creates_one_signing_key_and_one_issuer_key(tmp_path: Path) -> None:
    home, go = tmp_path / "home", tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(home), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(2.0)  # all of them imported and waiting (without the home lock, 4 in 5 runs fail)
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    assert len(set(outputs)) == 1, outputs
    assert len(list((home / "keys").glob("*.key.pem"))) == 2  # the signing key and the log key
    assert len(list((home / "issuer").glob("*.key.pem"))) == 1
