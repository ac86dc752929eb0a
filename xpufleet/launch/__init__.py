"""Launch SGLang over the cluster: pure plan, preflight collective, supervised ranks."""
