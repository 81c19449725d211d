"""Where a request runs: dispatcher (entry, cache), attempts (here, peers, cloud), forwarding,
escalation, peers (channels, probes), policy (pure pickers), table, cache, cloud, cascade."""
