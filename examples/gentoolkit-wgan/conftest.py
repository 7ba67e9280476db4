"""Lets pytest import gentoolkit_wgan from this folder, so the tests also run without installing it."""
