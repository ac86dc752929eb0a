"""`invoke bench`: SGLang's benchmarks as named configs and sweeps, parsed into typed
results, written as CSV/JSON/PNG under runs/<id>/, and compared run against run.

Pure parts (parsers, configs, results) take plain data; only `runner` touches nodes.
"""
