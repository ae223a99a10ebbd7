"""The accrue CDK app.

Offline (no AWS credentials, no cdk CLI):   .venv/bin/python infra/app.py [--outdir cdk.out]
With the pinned CLI (make deploy):          infra/node_modules/.bin/cdk deploy --app "..." -c env_suffix=dev

Context (``-c key=value``): env_suffix (default dev), lambda_asset (default build/lambda when
`make lambda-package` built it, else the source tree), destroyable, log_retention_days, alarm_email,
tags (JSON object). Synthesis fails on any unacknowledged cdk-nag finding or CDK warning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accrue_infra.synth import synthesize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", default=os.environ.get("CDK_OUTDIR", "cdk.out"))
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    context = {}
    for pair in args.context:
        name, _, value = pair.partition("=")
        context[name] = value
    if "tags" in context:
        context["tags"] = json.loads(context["tags"])

    result = synthesize(Path(args.outdir), context)
    for line in result.findings:
        print(f"cdk-nag: {line}", file=sys.stderr)
    for line in result.annotations:
        print(f"cdk: {line}", file=sys.stderr)
    if not result.ok:
        print(
            f"{len(result.findings)} unacknowledged finding(s), {len(result.annotations)} warning(s)", file=sys.stderr
        )
        return 1
    print(f"{result.stack_name}: {result.template_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
