"""Tests of trajectory."""
