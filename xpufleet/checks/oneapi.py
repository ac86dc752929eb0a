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
    ok = at_least(oneapi.version, expect.oneapi_min_version)
    found = f"found oneAPI {oneapi.version} ({oneapi.version_source})"
    data = {"version": oneapi.version}
    if ok is None:
        return verdict(WARN, f"{found}: unreadable version, {wanted}", **data)
    return verdict(PASS if ok else FAIL, f"{found}, {wanted}", **data)


@node_check("oneapi.ccl", "oneCCL version", reads=("oneapi",))
def check_oneapi_ccl(facts: NodeFacts, expect: Expect) -> Verdict:
    oneapi = facts.oneapi
    wanted = f"expected oneCCL >= {expect.ccl_min_version}"
    if oneapi is None or not oneapi.exists:
        return verdict(FAIL, f"found no oneAPI (see oneapi.version), {wanted}")
    if not oneapi.ccl_version:
        return verdict(FAIL, f"found no {oneapi.root}/ccl/latest, {wanted}")
    ok = at_least(oneapi.ccl_version, expect.ccl_min_version)
    found = f"found oneCCL {oneapi.ccl_version} ({oneapi.root}/ccl/latest)"
    data = {"version": oneapi.ccl_version}
    if ok is None:
        return verdict(WARN, f"{found}: unreadable version, {wanted}", **data)
    return verdict(PASS if ok else FAIL, f"{found}, {wanted}", **data)
