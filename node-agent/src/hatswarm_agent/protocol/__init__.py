"""What crosses the wire, shared by agent and operator: stubs, datatypes, auth."""
