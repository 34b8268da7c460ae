#!/usr/bin/env bash
# Checks the AWS SAM template offline (no AWS account, no network beyond PyPI for the first
# install) and exits non-zero on any finding:
#   1. cfn-lint on template.yaml, informational checks included;
#   2. the SAM transform (aws-sam-translator, offline) into plain CloudFormation, and cfn-lint
#      on that too (it sees what SAM generates: permissions, event source mappings, the API);
#   3. the tests in tests/template (what a linter cannot see: auth on every route, failure
#      paths, exact IAM, private buckets...).
# Usage: scripts/check-template.sh          (needs python3 >= 3.11; about 15 s after the first
#                                             install, which takes about 40 s)
# Its tools live in .venv-template/, created here from tests/template/requirements.txt and
# re-created when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-template
requirements=tests/template/requirements.txt
stamp=$venv/requirements.installed

if [[ ! -x $venv/bin/python ]] || ! cmp -s "$requirements" "$stamp"; then
    echo "== installing the pinned cfn-lint, aws-sam-translator and pytest into $venv"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    # The venv ignores itself, as Python 3.13's venv does, even before .gitignore names it.
    echo '*' > "$venv/.gitignore"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

# Keep the work tree clean (cargo lambda watch rebuilds on any write in it) and give the
# translator the region it asks boto3 for; no request is ever made.
export PYTHONDONTWRITEBYTECODE=1
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== cfn-lint template.yaml"
"$venv/bin/cfn-lint" --include-checks I -- template.yaml
echo "ok: no finding"

echo "== SAM transform, offline"
"$venv/bin/python" tests/template/sam_offline.py template.yaml "$out/template.json"
echo "ok: $(grep -c '"Type": "AWS::' "$out/template.json") CloudFormation resources"

echo "== cfn-lint on the transformed template"
"$venv/bin/cfn-lint" --include-checks I -- "$out/template.json"
echo "ok: no finding"

echo "== pytest tests/template"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/template
