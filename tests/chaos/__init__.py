"""The chaos suite: faults and hostile input against one real mesh, each followed by the invariants."""
