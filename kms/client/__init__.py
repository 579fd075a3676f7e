"""Clients of the KMS for applications: the XKS client and the XKS keyring.

    client = XksClient("http://127.0.0.1:8000/xks", access_key_id, secret)
    keyring = XksKeyring(client)
    encryptor = EnvelopeEncryptor(keyring, "tenant-key")
"""

from kms.client.keyring import XksKeyring
from kms.client.xks_client import XksCiphertext, XksClient

__all__ = ["XksCiphertext", "XksClient", "XksKeyring"]
