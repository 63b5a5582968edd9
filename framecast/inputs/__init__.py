"""Validation of user-supplied inputs: data URIs, remote URLs (SSRF-safe fetch) and images.

Everything here raises :class:`framecast.inputs.errors.InputError` for input we refuse; the API layer turns
those into fal-style 422 bodies.
"""
