"""What the mesh records and observes: port leases and the event log (SQLite by default)."""
