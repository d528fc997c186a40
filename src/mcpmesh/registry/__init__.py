"""What the mesh records and observes: port leases and the port pool (ports.py), the event log and
the servers' catalogs, behind one interface (base.py), kept in SQLite by default (sqlite.py).

May import: errors."""
