"""c2sp.org/tlog-policy files: parsing, the errors (with line numbers), and quorums over real
ML-DSA-44 cosignatures."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from mcp_server.errors import SignatureInvalid
from mcp_server.witness import cosignature, policy
from mcp_server.witness.errors import PolicyError
from tests.witness.conftest import ORIGIN, Log, seeded

WITNESSES = {f"{group}{i}": seeded(f"witness {group}{i}") for group in "XY" for i in (1, 2, 3)}


def key_name(label: str) -> str:
    return f"witness.example/{label.lower()}"


def vkey(label: str) -> str:
    return cosignature.vkey(key_name(label), WITNESSES[label].public_key())


def cosign(note: str, *labels: str, timestamp: int = 1_700_000_000) -> str:
    return note + "".join(
        cosignature.sign_line(note, key_name(label), WITNESSES[label], timestamp) for label in labels
    )


def example_policy(log: Log) -> str:
    """The spec's example ("Example policy"), with keys and a URL or two."""
    return f"""# the log
log {log.vkey()} https://log.example/

witness X1 {vkey("X1")} https://x1.example/
witness X2 {vkey("X2")}
witness X3 {vkey("X3")}
group X-witnesses 2 X1 X2 X3

\twitness Y1\t{vkey("Y1")}
witness Y2 {vkey("Y2")}
witness Y3 {vkey("Y3")}\x20\t
group Y-witnesses any Y1 Y2 Y3
    # indented comment
group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_parse_the_example(log: Log) -> None:
    parsed = policy.parse(example_policy(log))
    assert [entry.origin for entry in parsed.logs] == [ORIGIN]
    assert parsed.logs[0].url == "https://log.example/"
    assert parsed.log_vkey(ORIGIN) == log.vkey()
    assert parsed.log_vkey("other") is None
    assert [w.name for w in parsed.witnesses] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    x1 = parsed.witness("X1")
    assert x1 is not None and x1.url == "https://x1.example/" and x1.key_name == "witness.example/x1"
    assert x1.public_key.public_bytes_raw() == WITNESSES["X1"].public_key().public_bytes_raw()
    assert [(g.name, g.threshold) for g in parsed.groups] == [
        ("X-witnesses", 2),
        ("Y-witnesses", 1),
        ("X-and-Y", 2),
    ]
    assert parsed.quorum == "X-and-Y"
    assert parsed.satisfied({"X1", "X3", "Y2"})
    assert not parsed.satisfied({"X1", "Y1", "Y2"})
    assert not parsed.satisfied({"X1", "X2", "X3"})


def test_check_quorum_over_real_cosignatures(log: Log) -> None:
    parsed = policy.parse(example_policy(log))
    note = log.note(20)
    parsed.check(cosign(note, "X1", "X2", "Y3"), ORIGIN)
    parsed.check(cosign(note, "Y1", "X3", "Y2", "X1"), ORIGIN)
    for labels in [("X1", "Y1"), ("X1", "X2"), (), ("Y1", "Y2", "Y3", "X3")]:
        with pytest.raises(SignatureInvalid, match="quorum"):
            parsed.check(cosign(note, *labels), ORIGIN)


def test_two_of_three(log: Log) -> None:
    text = f"log {log.vkey()}\n" + "".join(f"witness {w} {vkey(w)}\n" for w in ("X1", "X2", "X3"))
    parsed = policy.parse(text + "group q 2 X1 X2 X3\nquorum q")  # no final newline: accepted
    note = log.note(5)
    parsed.check(cosign(note, "X1", "X3"), ORIGIN)
    with pytest.raises(SignatureInvalid, match=r"cosigned by: X2\)"):
        parsed.check(cosign(note, "X2"), ORIGIN)
    # Cosignatures by keys the policy does not know count for nothing and are ignored.
    with pytest.raises(SignatureInvalid, match="quorum"):
        parsed.check(cosign(note, "X2", "Y1", "Y2"), ORIGIN)


def test_check_needs_the_log_signature_and_the_origin(log: Log) -> None:
    text = f"log {log.vkey()}\nwitness X1 {vkey('X1')}\nquorum X1\n"
    parsed = policy.parse(text)
    impostor = Log(seeded("impostor"))
    with pytest.raises(SignatureInvalid, match="not signed by the log"):
        parsed.check(cosign(impostor.note(4), "X1"), ORIGIN)
    with pytest.raises(SignatureInvalid, match="no log with origin"):
        parsed.check(cosign(log.note(4), "X1"), "other.example/log")
    parsed.check(cosign(log.note(4), "X1"), ORIGIN)
    # A failing cosignature of a known witness rejects the note (signed-note).
    good = cosign(log.note(4), "X1")
    bad_line = cosign(log.note(5), "X1")[len(log.note(5)) :]
    with pytest.raises(SignatureInvalid, match="does not match"):
        parsed.check(good + bad_line, ORIGIN)


def test_policy_without_logs_and_quorum_none(log: Log) -> None:
    parsed = policy.parse("quorum none\n")
    assert parsed.logs == () and parsed.witnesses == ()
    parsed.check(log.note(3), ORIGIN)
    only_witnesses = policy.parse(f"witness X1 {vkey('X1')}\nquorum X1\n")
    only_witnesses.check(cosign(log.note(3), "X1"), ORIGIN)
    with pytest.raises(SignatureInvalid, match="origin"):
        only_witnesses.check(cosign(log.note(3), "X1"), "other.example/log")


def test_names_are_opaque_octets(log: Log) -> None:
    text = f"witness K {vkey('X1')}\nwitness \u212a {vkey('X2')}\ngroup g all K \u212a\nquorum g\n"
    parsed = policy.parse(text.encode("utf-8"))
    assert [w.name for w in parsed.witnesses] == ["K", "\u212a"]
    raw = f"witness \xe9 {vkey('X1')}\nquorum \xe9\n".encode("latin-1")  # not UTF-8: still a name
    assert policy.parse(raw).quorum == policy.parse(raw).witnesses[0].name


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("quorum nobody\n", 1, "not a witness or group defined above"),
        ("group g any W1\nquorum g\n", 1, "not a witness or group"),
        ("witness W1 {X1}\nwitness W1 {X2}\nquorum W1\n", 2, "already defined"),
        ("witness W1 {X1}\nwitness W2 {X1}\nquorum W1\n", 2, "same public key as the witness on line 1"),
        ("log {LOG}\nlog {LOG}\nquorum none\n", 2, "same public key as the log on line 1"),
        ("witness none {X1}\nquorum none\n", 1, "predefined"),
        ("witness W1 {X1}\ngroup g 0 W1\nquorum g\n", 2, "threshold"),
        ("witness W1 {X1}\ngroup g 2 W1\nquorum g\n", 2, "above the 1 members"),
        ("witness W1 {X1}\nwitness W2 {X2}\ngroup g 01 W1 W2\nquorum g\n", 3, "threshold"),
        ("witness W1 {X1}\ngroup g some W1\nquorum g\n", 2, "threshold"),
        ("witness W1 {X1}\ngroup g any W1 W1\nquorum g\n", 2, "listed twice"),
        ("witness W1 {X1}\ngroup g any none\nquorum g\n", 2, "can't be a group member"),
        ("witness W1 {X1}\ngroup g any\nquorum g\n", 2, "expected: group"),
        ("witness W1 {X1}\ngroup g any W1\ngroup g any W1\nquorum g\n", 3, "already defined"),
        ("quorum none\nquorum none\n", 2, "second quorum"),
        ("witness W1\nquorum none\n", 1, "expected: witness"),
        ("witness W1 {X1} http://a http://b\nquorum none\n", 1, "expected: witness"),
        ("log\nquorum none\n", 1, "expected: log"),
        ("log {X1} url extra\nquorum none\n", 1, "expected: log"),
        ("logs {X1}\nquorum none\n", 1, "unknown keyword"),
        ("witness W1 example.com+00000000+AAAA\nquorum none\n", 1, "verifier key"),
        ("witness W1 {X1}\r\nquorum none\n", 1, "0x0d"),
        ("# fine\n\nquorum none\x00\n", 3, "0x00"),
        ("quorum none\x0b\n", 1, "0x0b"),
    ],
)
def test_errors_name_the_line(log: Log, text: str, line: int, match: str) -> None:
    text = text.format(X1=vkey("X1"), X2=vkey("X2"), LOG=log.vkey())
    with pytest.raises(PolicyError, match=match) as info:
        policy.parse(text)
    assert info.value.line == line
    assert f"line {line}" in info.value.message


def test_errors_without_a_line() -> None:
    with pytest.raises(PolicyError, match="no quorum"):
        policy.parse("# nothing\n")
    with pytest.raises(PolicyError, match="over"):
        policy.parse(b"#" * (policy.MAX_POLICY_BYTES + 1))


def test_limits(log: Log) -> None:
    keys = [MLDSA44PrivateKey.generate() for _ in range(policy.MAX_ENTRIES + 1)]
    lines = [f"witness W{i} {cosignature.vkey(f'w{i}.example', k.public_key())}" for i, k in enumerate(keys)]
    with pytest.raises(PolicyError, match="more than") as info:
        policy.parse("\n".join([*lines, "quorum none", ""]))
    assert info.value.line == policy.MAX_ENTRIES + 1
    # 32 of each, the spec's recommended minimum, are fine.
    parsed = policy.parse(
        "\n".join([*lines[:32], "group g 32 " + " ".join(f"W{i}" for i in range(32)), "quorum g"])
    )
    assert parsed.groups[0].threshold == 32
