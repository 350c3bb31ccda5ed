"""`helm test` smoke test: run in the agent-staking image against the release's Service.

Every health service must answer SERVING; with an admin API key (from the Secret
adminKey.existingSecret) one authenticated, read-only KeyService call must succeed.
Exits 0 when all is well, 1 otherwise. tests/deploy runs this very file against a
real server.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("", "agentstaking.v1.StakingService", "agentstaking.v1.KeyService")


def main() -> int:
    target = os.environ["AGENT_STAKING_TARGET"]
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
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
