"""Cold-start cost of each Lambda module: how long importing it takes in a fresh interpreter (what the
Lambda init phase runs), and for the HTTP function how long the first request takes on top.

Every figure is the median of ``--runs`` fresh processes; in the same run, importing ``boto3`` and
``fastapi`` alone is measured as the reference the handler modules keep out of their import.

    .venv/bin/python bench/lambda_init_bench.py            # prints a Markdown table
    .venv/bin/python -X importtime -c "import accrue.entrypoints.lambdas.http"   # the breakdown
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap

MODULES = (
    "http",
    "authorizer",
    "stream",
    "payments_worker",
    "notifications_worker",
    "batch_files",
    "schedules",
    "workflow_steps",
)
REFERENCES = ("boto3", "fastapi", "aws_lambda_powertools.utilities.batch")

IMPORT = "import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"

# A first request on the HTTP function, against moto (set up before the clock starts).
FIRST_REQUEST = textwrap.dedent(
    """
    import json, os, time
    import jwt
    from moto import mock_aws
    from tests.moto_support import fake_aws_environment, client, create_table
    secret = "bench-secret-0123456789abcdef0123456789"

    class Context:
        function_name, function_version, memory_limit_in_mb = "accrue-bench", "$LATEST", 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:accrue-bench"
        aws_request_id, log_group_name, log_stream_name = "bench", "/aws/lambda/bench", "bench"
        def get_remaining_time_in_millis(self): return 300000

    with fake_aws_environment(), mock_aws():
        dynamodb = client("dynamodb"); create_table(dynamodb)
        sqs = client("sqs"); payments = sqs.create_queue(QueueName="p")["QueueUrl"]
        s3 = client("s3"); s3.create_bucket(Bucket="accrue-bench-reports")
        os.environ.update(ACCRUE_BACKEND="aws", ACCRUE_ENV="test", ACCRUE_TABLE_NAME="accrue-test",
                          ACCRUE_REPORTS_BUCKET="accrue-bench-reports", ACCRUE_PAYMENTS_QUEUE_URL=payments,
                          ACCRUE_JWT_SECRET=secret, ACCRUE_RATE_LIMIT_PER_SECOND="0")
        token = jwt.encode({"sub": "admin", "role": "admin", "exp": int(time.time()) + 600}, secret, algorithm="HS256")
        event = json.load(open("tests/events/apigateway_rest_proxy.json"))
        event["httpMethod"] = "GET"; event["path"] = "/users/nobody"; event["body"] = None
        event["headers"]["Authorization"] = "Bearer " + token
        event["multiValueHeaders"]["Authorization"] = ["Bearer " + token]
        t0 = time.perf_counter()
        from accrue.entrypoints.lambdas import http
        t1 = time.perf_counter()
        first = http.handler(json.loads(json.dumps(event)), Context())
        t2 = time.perf_counter()
        second = http.handler(json.loads(json.dumps(event)), Context())
        t3 = time.perf_counter()
        assert first["statusCode"] == second["statusCode"] == 404, first
        print((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
    """
)


def run(code: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return [float(x) for x in out.stdout.split()[-3:] if x.replace(".", "", 1).isdigit()]


def median_import(module: str, runs: int) -> float:
    return statistics.median(run(IMPORT.format(module=module))[-1] for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("| module | import (ms, median) |")
    print("|---|---:|")
    for name in MODULES:
        module = f"accrue.entrypoints.lambdas.{name}"
        print(f"| `{module}` | {median_import(module, args.runs):.0f} |")
    for name in REFERENCES:
        print(f"| reference: `{name}` alone | {median_import(name, args.runs):.0f} |")
    samples = [run(FIRST_REQUEST) for _ in range(max(3, args.runs // 2))]
    imported, first, warm = (statistics.median(s[i] for s in samples) for i in range(3))
    print()
    print("| HTTP function, fresh process (medians) | ms |")
    print("|---|---:|")
    print(f"| import of the handler module (Lambda init) | {imported:.0f} |")
    print(f"| first request: builds the app, settings and clients, then answers (*) | {first:.0f} |")
    print(f"| a warm request | {warm:.1f} |")
    print()
    print("(*) botocore is already loaded here (moto needs it); on Lambda add the `boto3` import above.")


if __name__ == "__main__":
    main()
