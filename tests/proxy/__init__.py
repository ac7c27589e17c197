"""Tests of the relay proxy and the cost report."""
