"""Facts: one class per fact (facts.registry.Fact: key, the snippet that gathers it,
parse), one module per area (gpu, system, kernel, python_env, network, processes,
weights, probe_info).

`probe.py` assembles the doctor probe from the registry (one remote command per host;
its answer is one section per fact, `batch.py`'s mechanism, shared with provision) and
runs it; `remote/` holds what runs on the node (`probe.py` under python3, `probe.sh`
when python3 is missing, `imports.py` inside launch's env); `node.parse_facts` turns
the raw values into a typed `NodeFacts`; the tool parsers (`xpusmi`, `sycl`,
`packages`, `system`) are pure and unit-tested on real tools' output in tests/fixtures.
"""
