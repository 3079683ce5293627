"""The agent installs the very bytes it checked, whatever happens to its download's file name.

ngclient verifies a target's length and hash and leaves the file in ``STATE/downloads``; the
agent used to read it again by name for its own checks and once more to install it. Someone
who can write there could swap another file in between (issue 20, after finding 3). Now the
agent reads the download once, binds those bytes to TUF's signed hash again, and verifies and
installs exactly them. Played against a real nginx-served TUF repository (the test_tuf lab).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import StateError, VerificationError
from edge_sdk.fleet.agent import Agent

from .test_key_slip_tuf import Fleet
from .test_tuf import Lab, lab, make_lab, release, server  # noqa: F401  (fixtures)


def swap_each_download(agent: Agent, replacement: bytes, suffix: str = ".edgepkg") -> list[str]:
    """Make ``agent``'s downloads ending in ``suffix`` be swapped for ``replacement`` the moment
    ngclient has written and checked them (the attacker's best moment); returns the names
    swapped."""
    swapped: list[str] = []
    make_updater = agent._updater

    def updater() -> Any:
        real = make_updater()
        download = real.download_target

        def download_then_swap(info: Any, path: str | None = None, *a: Any, **kw: Any) -> str:
            done: str = download(info, path, *a, **kw)
            if not done.endswith(suffix):
                return done
            planted = Path(done).with_name("planted")
            planted.write_bytes(replacement)
            os.replace(planted, done)
            swapped.append(Path(done).name)
            return done

        real.download_target = download_then_swap
        return real

    agent._updater = updater  # type: ignore[method-assign]
    return swapped


def test_a_download_swapped_after_tuf_checked_it_is_never_verified_or_installed(
    lab: Lab,  # noqa: F811
) -> None:
    lab.publish(1)
    agent = lab.agent()
    assert [o.status for o in agent.poll().outcomes] == ["installed"]
    lab.publish(2)
    # The swapped-in file is a genuine, signed release (v1): only the name says it is v2.
    swapped = swap_each_download(agent, lab.target_file(1).read_bytes())
    (outcome,) = agent.poll().outcomes
    assert swapped, "the download was not swapped"
    assert outcome.status == "rejected" and isinstance(outcome.error, VerificationError)
    assert "no longer the target TUF verified" in outcome.error.message
    assert lab.current().startswith(release(1))
    # Not remembered: the repository's v2 is not at fault. Unhindered, it is installed.
    memory = lab.tmp / "dev0" / "state" / "agent.json"
    assert not memory.exists() or json.loads(memory.read_bytes())["rejected"] == {}
    agent._updater = Agent._updater.__get__(agent)  # type: ignore[method-assign]
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 2)]
    assert lab.current().startswith(release(2))


def test_the_agent_makes_its_download_directories_private(lab: Lab) -> None:  # noqa: F811
    state = lab.tmp / "dev0" / "state"
    (state / "downloads").mkdir(parents=True)
    (state / "downloads").chmod(0o777)  # left open by whoever made it
    lab.agent()
    for sub in ("downloads", "tuf"):
        assert stat.S_IMODE((state / sub).stat().st_mode) == 0o700
    (state / "downloads").rmdir()
    (state / "downloads").symlink_to(lab.tmp)  # a link someone planted is refused, not used
    with pytest.raises(StateError, match="agent directories"):
        lab.agent()


def test_a_key_slip_swapped_after_tuf_checked_it_is_refused_before_it_is_parsed(
    tmp_path: Path,
    server: Any,  # noqa: F811
) -> None:
    """The slip download is read by name too: bound again to its signed hash, a swapped-in
    slip (here another device's genuine one) is refused as not the file TUF checked."""
    fleet = Fleet(make_lab(tmp_path, server), 2)
    _, slips = fleet.release(1)
    agent = fleet.agent(0)
    swapped = swap_each_download(agent, slips[fleet.devices[1].key_id], suffix=".edgeslip")
    (outcome,) = agent.poll().outcomes
    assert swapped, "the slip download was not swapped"
    assert outcome.status == "rejected" and isinstance(outcome.error, VerificationError)
    assert "no longer the one TUF verified" in outcome.error.message
    assert fleet.lab.current("dev0") is None
    agent._updater = Agent._updater.__get__(agent)  # type: ignore[method-assign]
    assert [o.status for o in agent.poll().outcomes] == ["installed"]  # nothing remembered
