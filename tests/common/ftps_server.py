"""An explicit-FTPS server for the delivery tests.

pyftpdlib's TLS handler (control and data connections must be protected),
user `user` / `pass`, writable root DIR/root. Its certificate, for IP
127.0.0.1, is signed by a CA made at start: DIR/ca.pem, which the test gives
the destination as `ca_certificate`.

Usage: python3 ftps_server.py PORT DIR
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer


def certificate(subject, issuer, public_key, signing_key, is_ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def main():
    port, base = int(sys.argv[1]), sys.argv[2]
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "inbox"), exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA", "test CA", ca_key.public_key(), ca_key, True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("127.0.0.1", "test CA", server_key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    with open(os.path.join(base, "ca.pem"), "wb") as out:
        out.write(ca.public_bytes(pem))
    with open(os.path.join(base, "server.pem"), "wb") as out:
        out.write(server.public_bytes(pem))
        out.write(ca.public_bytes(pem))
    with open(os.path.join(base, "server.key"), "wb") as out:
        out.write(
            server_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    authorizer = DummyAuthorizer()
    authorizer.add_user("user", "pass", root, perm="elradfmwMT")
    handler = TLS_FTPHandler
    handler.authorizer = authorizer
    handler.certfile = os.path.join(base, "server.pem")
    handler.keyfile = os.path.join(base, "server.key")
    handler.tls_control_required = True
    handler.tls_data_required = True
    FTPServer(("127.0.0.1", port), handler).serve_forever()


if __name__ == "__main__":
    main()
