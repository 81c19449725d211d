"""Where a request runs: routing policy, dispatcher, peers, cache, cloud, cascade."""
