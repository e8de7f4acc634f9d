"""Raw-at-rest encryption of frames: envelope encryption with a per-session data key.

Each session gets a random 256-bit data key. Frames are sealed with AES-256-GCM (a fresh
96-bit nonce per frame, the frame's file name as associated data so frames cannot be swapped
unnoticed). The data key is wrapped for the batch cluster's public key and stored in
``session.key``; the vehicle never stores it in clear. Deleting ``session.key`` makes every
frame of the session unreadable (crypto-shredding).

Key wrapping: X25519 (ephemeral-static ECDH + HKDF-SHA256 + AES-256-GCM) or RSA-OAEP-SHA256,
chosen by the type of the recipient public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from capture.errors import DecryptionError, SessionError

FRAME_MAGIC = b"SVE1"
KEY_FILE = "session.key"
_HKDF_INFO = b"streetveil session key wrap v1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"))


def load_public_key(path: Path) -> x25519.X25519PublicKey | rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise SessionError(f"{path}: cannot read recipient public key: {e}") from e
    if not isinstance(key, x25519.X25519PublicKey | rsa.RSAPublicKey):
        raise SessionError(f"{path}: recipient key must be X25519 or RSA, got {type(key).__name__}")
    return key


def load_private_key(path: Path) -> x25519.X25519PrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise DecryptionError(f"{path}: cannot read private key: {e}") from e
    if not isinstance(key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
        raise DecryptionError(f"{path}: private key must be X25519 or RSA")
    return key


def public_key_fingerprint(key: x25519.X25519PublicKey | rsa.RSAPublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new X25519 key pair as PEM (private key mode 0600)."""
    priv = x25519.X25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    Path(public_path).write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_HKDF_INFO
    ).derive(shared)


def wrap_key(data_key: bytes, recipient: x25519.X25519PublicKey | rsa.RSAPublicKey) -> dict[str, Any]:
    """Wrap ``data_key`` for ``recipient``; returns the JSON object stored in session.key."""
    fp = public_key_fingerprint(recipient)
    if isinstance(recipient, x25519.X25519PublicKey):
        eph = x25519.X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        rec_pub = recipient.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kek = _kek(eph.exchange(recipient), eph_pub, rec_pub)
        nonce = os.urandom(12)
        wrapped = AESGCM(kek).encrypt(nonce, data_key, b"session-key")
        return {
            "scheme": "x25519-hkdf-sha256-aes256gcm",
            "recipient_key_sha256": fp,
            "ephemeral_public": _b64(eph_pub),
            "nonce": _b64(nonce),
            "wrapped_key": _b64(wrapped),
        }
    wrapped = recipient.encrypt(
        data_key,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    return {"scheme": "rsa-oaep-sha256", "recipient_key_sha256": fp, "wrapped_key": _b64(wrapped)}


def unwrap_key(doc: dict[str, Any], private: x25519.X25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    """Recover the data key from a session.key object, or raise DecryptionError."""
    try:
        scheme = doc["scheme"]
        if scheme == "x25519-hkdf-sha256-aes256gcm":
            if not isinstance(private, x25519.X25519PrivateKey):
                raise DecryptionError("session key is wrapped for X25519, but the private key is RSA")
            eph_pub = _unb64(doc["ephemeral_public"])
            rec_pub = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(eph_pub))
            kek = _kek(shared, eph_pub, rec_pub)
            return AESGCM(kek).decrypt(_unb64(doc["nonce"]), _unb64(doc["wrapped_key"]), b"session-key")
        if scheme == "rsa-oaep-sha256":
            if not isinstance(private, rsa.RSAPrivateKey):
                raise DecryptionError("session key is wrapped for RSA, but the private key is X25519")
            return private.decrypt(
                _unb64(doc["wrapped_key"]),
                padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
            )
        raise DecryptionError(f"unknown key-wrap scheme {scheme!r}")
    except (InvalidTag, ValueError, KeyError) as e:
        raise DecryptionError(f"cannot unwrap the session key (wrong private key?): {e!r}") from e


@dataclass(frozen=True, slots=True)
class FrameCipher:
    """Seals and opens frame files with a session data key."""

    key: bytes

    def seal(self, plaintext: bytes, name: str) -> bytes:
        nonce = os.urandom(12)
        return FRAME_MAGIC + nonce + AESGCM(self.key).encrypt(nonce, plaintext, name.encode())

    def open(self, blob: bytes, name: str) -> bytes:
        if not blob.startswith(FRAME_MAGIC) or len(blob) < len(FRAME_MAGIC) + 12 + 16:
            raise DecryptionError(f"{name}: not a streetveil encrypted frame")
        nonce = blob[4:16]
        try:
            return AESGCM(self.key).decrypt(nonce, blob[16:], name.encode())
        except InvalidTag as e:
            raise DecryptionError(f"{name}: authentication failed (tampered or wrong key)") from e


def read_key_file(session_dir: Path) -> dict[str, Any]:
    path = Path(session_dir) / KEY_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except FileNotFoundError as e:
        raise DecryptionError(
            f"{path}: session key is gone (the session was crypto-shredded or copied without it)"
        ) from e
    except (OSError, ValueError) as e:
        raise DecryptionError(f"{path}: unreadable session key: {e}") from e
