#!/usr/bin/env python3
"""Publishes tollgate's inputs from Python, as any producer outside tollgate would.

Reads JSON lines of `tollgate.v1.InputRecord` (the proto3 JSON mapping, as in
examples/events.jsonl) and publishes each record with confluent-kafka: a `CallLegEvent` to the
call-legs topic, a `CreditCommand` to the credit-commands topic, keyed by tenant id (UTF-8) and
partitioned like the Java client (`partitioner=murmur2_random`), as the README asks of
librdkafka-based producers.

The protobuf classes are generated from the repository's .proto files into a temporary
directory when the script starts (grpc_tools' protoc), so they always match the contract.

    produce.py --bootstrap-servers 127.0.0.1:9092 --proto-dir proto examples/events.jsonl

Exits 0 once every record was acknowledged (acks=all, idempotent); 1 if any was not; 2 on a
line that is not an InputRecord.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile


def generate(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Compiles proto_dir/tollgate/v1/*.proto into Python modules under out_dir."""
    protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.glob("tollgate/v1/*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {proto_dir}/tollgate/v1")
    # `python -m grpc_tools.protoc` adds the well-known types (google/protobuf/*.proto) itself.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}", *protos],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--call-legs-topic", default="tollgate.call-legs.v1")
    parser.add_argument("--credit-commands-topic", default="tollgate.credit-commands.v1")
    parser.add_argument("--proto-dir", type=pathlib.Path, required=True, help="the repository's proto/ directory")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for acknowledgements")
    parser.add_argument("input", type=pathlib.Path, help="JSON lines of tollgate.v1.InputRecord")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tollgate-proto-") as generated:
        generate(args.proto_dir.resolve(), pathlib.Path(generated))
        sys.path.insert(0, generated)
        from confluent_kafka import Producer
        from google.protobuf import json_format
        from tollgate.v1 import events_pb2

        producer = Producer(
            {
                "bootstrap.servers": args.bootstrap_servers,
                "client.id": "tollgate-interop-python",
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        failures = []

        def delivered(err, msg):
            if err is not None:
                failures.append(f"{msg.topic()} [{msg.key()!r}]: {err}")

        counts = {args.call_legs_topic: 0, args.credit_commands_topic: 0}
        with args.input.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = events_pb2.InputRecord()
                try:
                    json_format.Parse(line, record)
                except json_format.ParseError as e:
                    print(f"{args.input}:{number}: {e}", file=sys.stderr)
                    return 2
                kind = record.WhichOneof("record")
                if kind == "call_leg":
                    topic, message = args.call_legs_topic, record.call_leg
                elif kind == "credit_command":
                    topic, message = args.credit_commands_topic, record.credit_command
                else:
                    print(f"{args.input}:{number}: no record in the line", file=sys.stderr)
                    return 2
                value = message.SerializeToString()
                while True:
                    try:
                        producer.produce(topic, key=message.tenant_id.encode("utf-8"), value=value, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.1)  # the local queue is full: serve deliveries, then retry
                producer.poll(0)
                counts[topic] += 1

        remaining = producer.flush(args.timeout)
        if remaining or failures:
            print(f"produce.py: {remaining} records unacknowledged, {len(failures)} failed", file=sys.stderr)
            for failure in failures[:10]:
                print(f"  {failure}", file=sys.stderr)
            return 1
        summary = ", ".join(f"{n} to {topic}" for topic, n in counts.items())
        print(f"produce.py: {summary}", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
