"""Relaying closed-model endpoints to an upstream server that speaks fal's queue protocol."""
