"""`totesys rebuild`: the warehouse re-derived from the landing zone alone, without reading totesys
(``run``: into an empty database; ``in_place``: selected tables copied into the live warehouse)."""
