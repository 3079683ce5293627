"""The agent's memory of rejections cannot be poisoned by metadata (issue 20, finding 4).

A verdict about what a target's metadata says is remembered by that target (path and fields); a
verdict about bytes only when the bytes themselves failed. Played against a real nginx-served TUF
repository with the test_tuf lab.
"""

from __future__ import annotations

import json

from edge_sdk.errors import IntegrityError
from edge_sdk.fleet import tuf_repo

from .test_tuf import Lab, forge, lab, release, server  # noqa: F401  (fixtures)


def test_genuine_bytes_under_lying_metadata_do_not_poison_the_bytes(lab: Lab) -> None:  # noqa: F811
    lab.publish(1)
    agent = lab.agent()
    assert [o.status for o in agent.poll().outcomes] == ["installed"]
    genuine = lab.bundle(6)
    # Someone with the repository's online keys lists the genuine v6 bytes as "v7".
    targets_key = next((lab.repo / "keys").glob("targets-*.key"))
    forge(lab, [targets_key], version=7, data=genuine.read_bytes())
    (lying,) = agent.poll().outcomes
    assert (lying.status, lying.version) == ("rejected", 7)
    assert isinstance(lying.error, IntegrityError) and "announces digits v7" in lying.error.message
    assert lab.current().startswith(release(1))
    # The lie is remembered by its target: not fetched again.
    again = agent.poll().outcomes
    assert [(o.status, o.version) for o in again] == [("skipped", 7)]
    # The publisher lists the very same bytes honestly: they are installed.
    tuf_repo.publish([genuine], lab.repo, None)
    fixed = agent.poll().outcomes
    assert [(o.status, o.version) for o in fixed] == [("installed", 6)], fixed
    assert lab.current().startswith(release(6))
    memory = json.loads((lab.tmp / "dev0" / "state" / "agent.json").read_bytes())["rejected"]
    assert [v["about"] for v in memory.values()] == ["metadata"]


def test_entries_from_before_the_split_are_judged_again(lab: Lab) -> None:  # noqa: F811
    import hashlib

    lab.publish(1)
    agent = lab.agent()
    state = lab.tmp / "dev0" / "state"
    state.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(lab.target_file(1).read_bytes()).hexdigest()
    # What an older agent wrote after a metadata lie about these bytes: keyed by their hash.
    (state / "agent.json").write_text(
        json.dumps({"rejected": {sha: {"name": "digits", "version": 1, "reason": "old"}}})
    )
    assert [o.status for o in agent.poll().outcomes] == ["installed"]


def test_a_planted_current_does_not_freeze_the_agent(lab: Lab) -> None:  # noqa: F811
    """Issue 20, finding 2: an unsigned file claiming v2**63-1 made the agent report
    up-to-date forever while `current` did not load."""
    from .test_deploy_verified import TOP, plant

    lab.publish(1)
    agent = lab.agent()
    assert [o.status for o in agent.poll().outcomes] == ["installed"]
    install = lab.tmp / "dev0" / "install"
    plant(install, lab.bundle(1), name="digits")
    lab.publish(2)
    outcomes = agent.poll().outcomes
    assert [(o.status, o.version) for o in outcomes] == [("installed", 2)], outcomes
    assert lab.current().startswith(release(2))
    assert str(TOP) not in (lab.current() or "")
