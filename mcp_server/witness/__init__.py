"""Transparency log witnessing: ML-DSA-44 cosignatures (c2sp.org/tlog-cosignature), trust policies
(c2sp.org/tlog-policy), and the add-checkpoint protocol (c2sp.org/tlog-witness) as a client and a
server.

    cosignature   cosigned_message, key_id, sign_line, verify_line, vkey, parse_vkey
    policy        parse(text) -> Policy; Policy.check(note, origin)
    client        add_checkpoint(url, old_size, consistency, note, timeout=...)
    service       WitnessService, build_app, load_config, open_service
    models        WitnessCheckpoint (table witness_checkpoints)
    errors        WitnessRefused, WitnessConflict, WitnessUnavailable, PolicyError
"""
