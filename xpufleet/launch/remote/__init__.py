"""Scripts shipped to the nodes with every launch (standalone: standard library + torch).

The control node imports them only for shared pure helpers (log tagging)."""
