"""oneAPI area: the toolkit (setvars, release) and oneCCL, against the inventory's minimums."""

from __future__ import annotations

from ..facts.node import NodeFacts
from ..facts.versions import at_least
from . import FAIL, PASS, WARN, Verdict, node_check, verdict
from .expect import Expect


@node_check("oneapi.version", "oneAPI installed and recent enough", reads=("oneapi",))
def check_oneapi_version(facts: NodeFacts, expect: Expect) -> Verdict:
    oneapi = facts.oneapi
    wanted = f"expected oneAPI >= {expect.oneapi_min_version}"
    if oneapi is None or not oneapi.exists:
        root = oneapi.root if oneapi else "the oneapi_root"
        return verdict(FAIL, f"found no oneAPI at {root}, {wanted}")
    if not oneapi.setvars:
        return verdict(FAIL, f"found no {oneapi.root}/setvars.sh, {wanted}")
    if not oneapi.version:
        return verdict(
            WARN,
            f"found {oneapi.root} but no version (no <ver>/oneapi-vars.sh, no compiler/latest), "
            f"{wanted}",
        )
    found = f"found oneAPI {oneapi.version} ({oneapi.version_source})"
    return _at_least(found, oneapi.version, expect.oneapi_min_version, wanted)


@node_check("oneapi.ccl", "oneCCL version", reads=("oneapi",))
def check_oneapi_ccl(facts: NodeFacts, expect: Expect) -> Verdict:
    oneapi = facts.oneapi
    wanted = f"expected oneCCL >= {expect.ccl_min_version}"
    if oneapi is None or not oneapi.exists:
        return verdict(FAIL, f"found no oneAPI (see oneapi.version), {wanted}")
    if not oneapi.ccl_version:
        return verdict(FAIL, f"found no {oneapi.root}/ccl/latest, {wanted}")
    found = f"found oneCCL {oneapi.ccl_version} ({oneapi.root}/ccl/latest)"
    return _at_least(found, oneapi.ccl_version, expect.ccl_min_version, wanted)


def _at_least(found: str, version: str, minimum: str, wanted: str) -> Verdict:
    """pass or fail by `version` >= `minimum`; warn when the version cannot be read."""
    ok = at_least(version, minimum)
    if ok is None:
        return verdict(WARN, f"{found}: unreadable version, {wanted}", version=version)
    return verdict(PASS if ok else FAIL, f"{found}, {wanted}", version=version)
