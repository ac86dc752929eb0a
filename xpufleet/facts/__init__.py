"""Facts: the doctor probe (one remote command per host) and the parsers of what it returns.

`probe.py` builds and runs the probe; `remote_probe.py`/`remote_probe.sh` run on the
node; `model.parse_facts` turns the probe's raw JSON into typed `NodeFacts`; the tool
parsers (`xpusmi`, `sycl`, `packages`, `system`) are pure and unit-tested on real
tools' output in tests/fixtures.
The installed-wheels manifest on each node is provision's format
(xpufleet.provision.manifest: `node_state_path`, `parse_node_state`).
"""
