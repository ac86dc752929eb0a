"""xpufleet's test package: proves a wheel was built, pushed, installed and imports."""

__version__ = "0.1.0"


def greet(name: str) -> str:
    return f"hello {name} from xpufleet_hello {__version__}"
