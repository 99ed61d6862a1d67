"""`totesys verify`: totesys compared with the warehouse, checksums computed inside each database."""
