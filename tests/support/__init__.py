"""Helpers the tests share (no tests here): import them from ``tests.support.<module>``; fixtures live in
conftest.py. A test module never imports another test module."""
