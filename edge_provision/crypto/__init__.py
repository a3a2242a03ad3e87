"""The crypto zone: the only place that imports ``cryptography``.

``keys`` (make, load and serialize keys; CSRs), ``pki`` (certificate inspection and chain
checks, and the one import for callers: it re-exports keys and the CA), ``ca`` (the lab
server's local CA), ``bootstrap_cipher`` (Mainflux secure-bootstrap AES-CFB); ``_x509``
holds the helpers they share. This file imports nothing, so that importing a sibling
package never pays for ``cryptography``.
"""
