"""The optional peers: Equinox and Flax NNX, imported only here and only if present.

A peer that is not installed, or whose contender fails to build, is reported
as absent with the reason; it never stops the run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Collection, Mapping
from types import ModuleType

from ._case import PEERS, Contender

#: Why a peer that `--peers` leaves out is absent.
LEFT_OUT = "left out (--peers)"
#: For each peer, the module a case's builder receives.
_MODULES = {"equinox": "equinox", "nnx": "flax.nnx"}
#: For each peer, the distribution whose version the report records.
_DISTRIBUTIONS = {"equinox": "equinox", "nnx": "flax"}


def load_peer(name: str) -> tuple[ModuleType | None, str]:
    """Imports a peer.

    Args:
        name: `"equinox"` or `"nnx"`.

    Returns:
        `(module, "")` when it imports, else `(None, why not)`.
    """
    try:
        return importlib.import_module(_MODULES[name]), ""
    except Exception as e:  # a broken install is as absent as a missing one
        return None, f"not importable ({type(e).__name__}: {e})"


def peer_versions() -> dict[str, str | None]:
    """Each peer's installed version (from package metadata, without importing
    it), or `None` where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in PEERS:
        try:
            versions[name] = importlib.metadata.version(_DISTRIBUTIONS[name])
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_peers(
    builders: Mapping[str, Callable[[ModuleType], Contender]],
    wanted: Collection[str] = PEERS,
) -> tuple[list[Contender], dict[str, str]]:
    """Builds the contender of each importable peer.

    Args:
        builders: For each peer that has a like-for-like version of the case, a
            function from the peer's module to its contender.
        wanted: The peers to try (`--peers`); the others are reported absent.

    Returns:
        The contenders built, and each peer that was not, mapped to why.
    """
    contenders: list[Contender] = []
    absent: dict[str, str] = {}
    for name in PEERS:
        if name not in wanted:
            absent[name] = LEFT_OUT
            continue
        if name not in builders:
            absent[name] = "no like-for-like version of this case"
            continue
        module, reason = load_peer(name)
        if module is None:
            absent[name] = reason
            continue
        try:
            contenders.append(builders[name](module))
        except Exception as e:  # a peer's API drift must not stop the run
            absent[name] = f"failed to build ({type(e).__name__}: {e})"
    return contenders, absent
