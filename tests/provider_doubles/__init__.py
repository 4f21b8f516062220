"""Loopback doubles of the video vendors' APIs, written from their documentation."""

from tests.provider_doubles.base import Behaviour, FakeJob, RecordedRequest, VendorDouble

__all__ = ["Behaviour", "FakeJob", "RecordedRequest", "VendorDouble"]
