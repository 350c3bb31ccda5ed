"""`helm test` smoke test: run in the agent-staking image against the release's Service.

Every health service must answer SERVING; with an admin API key (from the Secret
adminKey.existingSecret) one authenticated, read-only KeyService call must succeed.
With TLS (AGENT_STAKING_TARGET_CA_FILE set) the server's certificate is verified
against that CA bundle, or the system's roots when the file is absent; with mutual TLS
the client certificate AGENT_STAKING_CLIENT_CERT_FILE and its key are presented.
Exits 0 when all is well, 1 otherwise. tests/deploy runs this very file against a
real server, in plaintext, TLS and mutual TLS.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("", "agentstaking.v1.StakingService", "agentstaking.v1.KeyService")
CONNECT_SECONDS = 30


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def channel_for(target: str) -> grpc.Channel:
    """A plaintext channel, or a TLS one when a CA file is named."""
    ca_file = os.environ.get("AGENT_STAKING_TARGET_CA_FILE")
    if ca_file is None:
        print(f"connecting to {target} (plaintext)", flush=True)
        return grpc.insecure_channel(target)
    roots = _read(ca_file) if os.path.isfile(ca_file) else None
    cert_file = os.environ.get("AGENT_STAKING_CLIENT_CERT_FILE")
    key_file = os.environ.get("AGENT_STAKING_CLIENT_KEY_FILE")
    client = (_read(key_file), _read(cert_file)) if cert_file and key_file else (None, None)
    print(
        f"connecting to {target} (TLS, server verified with "
        f"{ca_file if roots else 'the system roots'}"
        f"{', client certificate ' + cert_file if cert_file else ''})",
        flush=True,
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=client[0], certificate_chain=client[1]
    )
    return grpc.secure_channel(target, credentials)


def main() -> int:
    target = os.environ["AGENT_STAKING_TARGET"]
    mutual = os.environ.get("AGENT_STAKING_MUTUAL_TLS") == "true"
    if mutual and not os.environ.get("AGENT_STAKING_CLIENT_CERT_FILE"):
        print(
            "the server requires a client certificate (tls.mutual) and none is given: "
            "set smokeTest.clientCertSecret to a kubernetes.io/tls Secret the client CA "
            "trusts",
            flush=True,
        )
        return 1
    with channel_for(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_SECONDS)
        except grpc.FutureTimeoutError:
            print(
                f"could not connect to {target} within {CONNECT_SECONDS} s (with TLS: is "
                "the certificate valid for this name and signed by the CA given?)",
                flush=True,
            )
            return 1
        health = health_pb2_grpc.HealthStub(channel)
        for service in SERVICES:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            print(f"health {service or '(overall)'}: {name}", flush=True)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return 1
        key = os.environ.get("AGENT_STAKING_ADMIN_KEY", "")
        if key:
            from agentstaking.v1 import keys_pb2, keys_pb2_grpc

            listed = keys_pb2_grpc.KeyServiceStub(channel).ListApiKeys(
                keys_pb2.ListApiKeysRequest(page_size=1),
                metadata=[("authorization", f"Bearer {key}")],
                timeout=10,
            )
            print(
                f"KeyService/ListApiKeys with the admin key: {listed.total_size} keys", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
