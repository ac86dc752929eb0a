"""Server runtime of the stand-in: arguments, model, ranks, HTTP."""
