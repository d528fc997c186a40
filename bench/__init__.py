"""mcpmesh's benchmark: the gateway beside direct stdio and the peer gateways (issue 6)."""
