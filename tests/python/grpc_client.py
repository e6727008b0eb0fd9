"""A gRPC client of lainlet's ``-grpc.addr`` API written with ``grpcio``, not with lainlet's code.

    grpc_client.py TARGET [--tls-ca FILE [--tls-name NAME]] calls JSON
    grpc_client.py TARGET [--tls-ca FILE [--tls-name NAME]] watch SERVICE REQUEST_JSON
        [--max N] [--cancel-after N] [--pause-after N --resume-file PATH]

The stubs are generated at start-up from lainlet's ``grpc/proto/message.proto`` (``--proto`` to
use another file) by ``grpcio-tools`` into a temporary directory, removed at exit.

Replies are printed as plain JSON: a message is an object with **every** field of the schema
under its proto name (``Data``, ``PodInfos``, ``NodeIP``, ``v``, ``sval``…), defaults included;
maps are objects, repeated fields lists, enums their numbers, ``bytes`` UTF-8 text, 64-bit
integers numbers. An rpc error is ``{"error": {"code": "UNKNOWN", "details": "…"}}``.

``calls JSON``: JSON is a list of ``{"service": S, "rpc": R, "request": {field: value}}`` with R
``Get``, ``Watch`` (the first message, then the call is cancelled), ``Version`` or ``Status``
(service ``Lainlet``). Prints one line: the list of results, ``{"reply": …}`` or
``{"error": …}``, in order.

``watch``: one line per message as it arrives, ``{"n": k, "reply": …}``, and a last line
``{"error": …}`` if the stream ends with an error, or ``{"end": true}`` if it ends cleanly.
``--max N`` exits after N messages. ``--cancel-after N`` cancels the call after N messages,
prints ``{"cancelled": true}`` and then keeps the channel (the TCP connection) open until it is
killed, so the server sees a cancelled call, not a closed connection. ``--pause-after N`` stops
reading after N messages (prints ``{"paused": true}``) until the file ``--resume-file`` exists
(prints ``{"resumed": true}``), then reads on.
"""

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "grpc", "proto", "message.proto"))


def load_stubs(proto):
    """Generates message_pb2 and message_pb2_grpc from `proto` and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="lainlet-grpc-stubs-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{os.path.dirname(proto)}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        proto,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto}")
    sys.path.insert(0, out)
    import message_pb2
    import message_pb2_grpc

    return message_pb2, message_pb2_grpc


def plain(message):
    """The message as plain JSON data: every field under its proto name, defaults included."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            out[field.name] = {
                k: plain(v) if value_field.message_type else scalar(v) for k, v in value.items()
            }
        elif field.is_repeated:
            out[field.name] = [plain(v) if entry else scalar(v) for v in value]
        elif entry is not None:
            out[field.name] = plain(value)
        else:
            out[field.name] = scalar(value)
    return out


def scalar(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def error(e):
    return {"error": {"code": e.code().name, "details": e.details()}}


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


class Client:
    def __init__(self, args):
        self.pb, self.pb_grpc = load_stubs(args.proto)
        if args.tls_ca:
            with open(args.tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            options = []
            if args.tls_name:
                options.append(("grpc.ssl_target_name_override", args.tls_name))
            self.channel = grpc.secure_channel(args.target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(args.target)

    def stub(self, service):
        return getattr(self.pb_grpc, f"{service}Stub")(self.channel)

    def request(self, service, rpc, fields):
        name = "EmptyRequest" if service == "Lainlet" else f"{service}Request"
        return getattr(self.pb, name)(**(fields or {}))

    def call(self, spec):
        service, rpc = spec["service"], spec["rpc"]
        request = self.request(service, rpc, spec.get("request"))
        method = getattr(self.stub(service), rpc)
        try:
            if rpc == "Watch":
                stream = method(request, timeout=20)
                try:
                    return {"reply": plain(next(stream))}
                finally:
                    stream.cancel()
            return {"reply": plain(method(request, timeout=20))}
        except grpc.RpcError as e:
            return error(e)

    def watch(self, args):
        request = self.request(args.service, "Watch", json.loads(args.request))
        stream = self.stub(args.service).Watch(request)
        n = 0
        try:
            for reply in stream:
                n += 1
                emit({"n": n, "reply": plain(reply)})
                if args.max and n >= args.max:
                    stream.cancel()
                    return
                if args.cancel_after and n >= args.cancel_after:
                    stream.cancel()
                    emit({"cancelled": True})
                    while True:  # keep the connection open until killed
                        time.sleep(3600)
                if args.pause_after and n == args.pause_after:
                    emit({"paused": True})
                    while not os.path.exists(args.resume_file):
                        time.sleep(0.05)
                    emit({"resumed": True})
            emit({"end": True})
        except grpc.RpcError as e:
            emit(error(e))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="host:port of lainlet's gRPC listener")
    parser.add_argument("--proto", default=DEFAULT_PROTO)
    parser.add_argument("--tls-ca", help="CA certificate (PEM) to verify a TLS server with")
    parser.add_argument("--tls-name", help="the name to verify the server certificate for")
    commands = parser.add_subparsers(dest="command", required=True)
    calls = commands.add_parser("calls")
    calls.add_argument("calls", help="JSON list of calls")
    watch = commands.add_parser("watch")
    watch.add_argument("service")
    watch.add_argument("request", help="the request's fields as a JSON object")
    watch.add_argument("--max", type=int, default=0)
    watch.add_argument("--cancel-after", type=int, default=0)
    watch.add_argument("--pause-after", type=int, default=0)
    watch.add_argument("--resume-file")
    args = parser.parse_args()
    if args.command == "watch" and args.pause_after and not args.resume_file:
        parser.error("--pause-after needs --resume-file")

    client = Client(args)
    if args.command == "calls":
        emit([client.call(spec) for spec in json.loads(args.calls)])
    else:
        client.watch(args)


if __name__ == "__main__":
    main()
