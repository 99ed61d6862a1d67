"""`totesys rebuild`: the warehouse re-derived from the landing zone alone, without reading totesys."""
