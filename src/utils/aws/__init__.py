"""S3 and Secrets Manager: immutable objects, state pointers, manifests, credentials."""
