"""Helpers that go with published models (input preprocessing, label decoding)."""

from minitl.applications import vgg16

__all__ = ["vgg16"]
