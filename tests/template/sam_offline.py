"""Loads template.yaml and runs the SAM transform offline, with no AWS account or network.

Used by scripts/check-template.sh (to lint the plain CloudFormation that SAM produces) and by
test_template.py. As a command:

    python tests/template/sam_offline.py template.yaml out.json
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

from cfnlint.decode import decode
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The transform asks boto3 for a region (to fill AWS::Region and the partition); any will do.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class StaticManagedPolicies:
    """A managed-policy loader that needs no AWS access.

    The template names no AWS managed policy (every role is written out), so the map is empty: a
    policy name creeping into a `Policies:` list makes the transform fail here instead of calling
    IAM.
    """

    def load(self) -> dict[str, str]:
        return {}


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as cfn-lint reads it (short-form tags such as !Sub become Fn::Sub).

    The nodes keep their line numbers (`node.start_mark.line`, 0-based) for the tests.
    """
    template, matches = decode(str(path))
    if matches:
        raise ValueError(f"{path} does not parse: " + "; ".join(str(m) for m in matches))
    return template


def _plain(node: Any) -> Any:
    """cfn-lint's nodes as plain dicts, lists and strings (the translator deep-copies its input)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """Plain CloudFormation from the SAM template.

    Local CodeUri values (what `sam build` replaces with uploaded artifacts) become placeholder S3
    URIs first, as `sam validate` does.
    """
    sam = copy.deepcopy(_plain(template))
    globals_fn = sam.get("Globals", {}).get("Function", {})
    if isinstance(globals_fn.get("CodeUri"), str) and not globals_fn["CodeUri"].startswith("s3://"):
        globals_fn["CodeUri"] = "s3://streamcube-placeholder/globals.zip"
    for name, resource in sam.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        code = props.get("CodeUri")
        if isinstance(code, str) and not code.startswith("s3://"):
            props["CodeUri"] = f"s3://streamcube-placeholder/{name}.zip"
    try:
        return transform(sam, {}, StaticManagedPolicies())
    except InvalidDocumentException as e:
        causes = "\n".join(f"  - {c.message}" for c in e.causes)
        raise ValueError(f"the SAM transform refused the template:\n{causes}") from e


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} TEMPLATE OUT_JSON", file=sys.stderr)
        return 2
    try:
        out = translate(load(Path(argv[1])))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 1
    Path(argv[2]).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
