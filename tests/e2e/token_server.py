"""Minimal Docker registry v2 token server (Bearer realm) for the tests.

Usage: token_server.py PORT KEY.pem CERT.pem.  Issues RS256 JWTs (x5c
header) for TOKEN_USER:TOKEN_PASS (default testuser:testpass) with the
access asked in ``scope``; env TOKEN_TTL sets ``expires_in`` (default 300).
Anonymous or wrong credentials get 401.  Every issued token is counted in
the log ("issued N").
"""

import base64
import json
import os
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

KEY = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
CERT = x509.load_pem_x509_certificate(open(sys.argv[3], "rb").read())
DER = base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()
USER, PASS = os.environ.get("TOKEN_USER", "testuser"), os.environ.get("TOKEN_PASS", "testpass")
TTL = int(os.environ.get("TOKEN_TTL", "300"))
ISSUED = 0


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        global ISSUED
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        if auth != "Basic " + base64.b64encode(f"{USER}:{PASS}".encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="token"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        access = []
        for s in q.get("scope", []):
            typ, name, actions = s.split(":", 2)
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        hdr = {"alg": "RS256", "typ": "JWT", "x5c": [DER]}
        claims = {"iss": "test-issuer", "sub": USER, "aud": q.get("service", [""])[0],
                  "exp": now + TTL, "nbf": now - 10, "iat": now,
                  "jti": str(now) + os.urandom(4).hex(), "access": access}
        si = b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())
        tok = si + "." + b64u(KEY.sign(si.encode(), padding.PKCS1v15(), hashes.SHA256()))
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": TTL}).encode()
        ISSUED += 1
        sys.stderr.write(f"issued {ISSUED}\n")
        sys.stderr.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
