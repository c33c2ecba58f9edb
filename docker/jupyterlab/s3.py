"""spate-s3: an S3-protocol server for a Spate workspace on S3 (moto's
server, from PyPI), with the workspace's bucket made at start.

    spate-s3 [--port 9000] [--bucket spate]

moto keeps objects in memory: they last as long as this process. It is the
S3 of the compose profile and of the tests, not a store for data to keep;
point the cluster at a real bucket for that (docker/compose.s3.yml says how).
"""

import argparse
import logging
import signal
import threading

import boto3
from moto.server import ThreadedMotoServer

parser = argparse.ArgumentParser(prog="spate-s3", description=__doc__.split("\n\n")[0])
parser.add_argument("--host", default="0.0.0.0")
parser.add_argument("--port", type=int, default=9000)
parser.add_argument("--bucket", default="spate")
args = parser.parse_args()

logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
server.start()
boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{args.port}",
    region_name="us-east-1",
    aws_access_key_id="spate",
    aws_secret_access_key="spate",
).create_bucket(Bucket=args.bucket)
print(f"spate-s3: S3 on :{args.port}, bucket {args.bucket}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
server.stop()
