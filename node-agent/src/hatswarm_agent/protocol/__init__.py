"""What crosses the wire, shared by agent and operator: stubs, datatypes, wire names, parameter
readers, routing defaults, auth."""
