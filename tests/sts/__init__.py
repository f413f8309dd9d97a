"""Tests of sts."""
